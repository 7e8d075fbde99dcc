"""llava_hf: LLaVA as Hugging Face-native classes.

What llava_hf saves loads without llava_hf: a model transformers' built-in llava can express (every `mlp2x_gelu`
projector) is saved in the built-in's format (`model_type: "llava"`, `LlavaProcessor`), which the Auto classes load
as transformers' own classes; llava_hf's classes read it back explicitly (`LlavaForConditionalGeneration
.from_pretrained`, `LlavaProcessor.from_pretrained` from this package).

Names: each class has one public name, `Llava*` (`LlavaConfig`, `LlavaForConditionalGeneration`, `LlavaProcessor`,
`LlavaNext*`, ...: `__all__`). The classes' own `__name__`s are `LlavaHf*`, so they never collide with transformers'
built-ins (saved JSON files refer to classes by name and transformers resolves its own names first); those names stay
importable from here for code written against them. Inside the package: run settings are dataclasses named
`*Arguments` (parsed by `HfArgumentParser`, in a package's `arguments.py` when several commands share them); the
module behind `llava-hf X` is `X_command.py` (dashes as underscores) in the package that does the work, with a
`main(argv)`; no two modules share a name unless they mean the same thing (`arguments.py`).

Importing the package is cheap: nothing here imports torch or transformers, so `llava-hf --help`, data generation and
the scorers never pay for the model code. The public names load on first access (the lazy-module pattern of
transformers' own `__init__`), and the first access to one of the model or processor classes registers the
`llava_hf` model type (checkpoints with projectors the built-in cannot express) with transformers' Auto classes
(`register_auto_classes`, which can also be called directly): after `from llava_hf import LlavaForConditionalGeneration`
such folders load with `AutoConfig`, `AutoModelForImageTextToText`, `AutoProcessor` and `pipeline`.

- `modeling`, `processing`     the model, config and processor classes (import nothing else from llava_hf)
- `data`, `training`           training data (formats, preflight check, masking collator); the stage table, the
                               stages around TRL and `llava-hf train`
- `datagen`                    instruction data from captions + boxes by a text-only teacher
- `evaluation`                 ScienceQA, POPE, LLaVA-Bench with the paper's protocols
- `conversion`                 original checkpoints -> llava_hf, export to transformers' layout, model cards, the Hub
- `serving`                    generate, chat, the OpenAI-compatible server
- `demo`                       `llava-hf demo`: the recipe end to end on a synthetic world
- `utils`                      the one lower layer of plumbing
- `cli.py`                     `llava-hf <command>`: a table from command name to the module that runs it
- `testing.py`                 the tiny LLaVA that tests, benchmarks and examples share
- `testing_assets`             its tiny tokenizer (package data)
"""

import importlib

__version__ = "0.1.0"

# public name -> (submodule, attribute); `from llava_hf import X` imports the submodule on first use.
_LAZY_ATTRIBUTES = {
    "LlavaConfig": ("modeling", "LlavaHfConfig"),
    "LlavaForConditionalGeneration": ("modeling", "LlavaHfForConditionalGeneration"),
    "LlavaModel": ("modeling", "LlavaHfModel"),
    "LlavaMultiModalProjector": ("modeling", "LlavaHfMultiModalProjector"),
    "LlavaPreTrainedModel": ("modeling", "LlavaHfPreTrainedModel"),
    "LlavaProcessor": ("processing", "LlavaHfProcessor"),
    "LlavaImageProcessor": ("processing", "LlavaHfImageProcessor"),
    "LlavaNextConfig": ("modeling", "LlavaHfNextConfig"),
    "LlavaNextForConditionalGeneration": ("modeling", "LlavaHfNextForConditionalGeneration"),
    "LlavaNextModel": ("modeling", "LlavaHfNextModel"),
    "LlavaNextProcessor": ("processing", "LlavaHfNextProcessor"),
    "build_next_image_processor": ("processing", "build_next_image_processor"),
    "CHAT_TEMPLATE_NAMES": ("processing", "CHAT_TEMPLATE_NAMES"),
    "build_image_processor": ("processing", "build_image_processor"),
    "get_chat_template": ("processing", "get_chat_template"),
    "to_rgb": ("processing", "to_rgb"),
}
# The classes' own names (`LlavaHf*`, what saved JSON files refer to) stay importable for code written against them;
# they are the same objects as the public names above, not part of `__all__`.
_CLASS_NAMES = {
    attribute: (module, attribute) for module, attribute in _LAZY_ATTRIBUTES.values() if attribute.startswith("LlavaHf")
}

__all__ = sorted(_LAZY_ATTRIBUTES) + ["register_auto_classes"]


def __getattr__(name: str):
    if name not in _LAZY_ATTRIBUTES and name not in _CLASS_NAMES:
        raise AttributeError(f"module 'llava_hf' has no attribute {name!r}")
    module_name, attribute = _LAZY_ATTRIBUTES.get(name) or _CLASS_NAMES[name]
    value = getattr(importlib.import_module(f".{module_name}", __name__), attribute)
    if isinstance(value, type):  # a model, config or processor class: the Auto classes should know it too
        register_auto_classes()
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES) | set(_CLASS_NAMES))


_registered = False


def register_auto_classes() -> None:
    """Register the `llava_hf` model types with transformers' Auto classes (idempotent).

    Importing `llava_hf.modeling` registers the config and model classes and their checkpoint key mappings; this adds
    the processor classes, which folders saved in the older `llava_hf` format name. Runs by itself on the first access
    to one of the package's classes (`from llava_hf import LlavaProcessor`).
    """
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import AutoImageProcessor, AutoProcessor, LlavaNextImageProcessorPil

    from .modeling import LlavaHfConfig, LlavaHfNextConfig
    from .processing import LlavaHfImageProcessor, LlavaHfNextProcessor, LlavaHfProcessor

    # One image processor class for both backends: with torchvision installed, AutoImageProcessor would otherwise
    # reload a saved processor as the torchvision one, whose bicubic resize does not give the original's pixel values.
    families = (
        (LlavaHfConfig, LlavaHfProcessor, LlavaHfImageProcessor),
        (LlavaHfNextConfig, LlavaHfNextProcessor, LlavaNextImageProcessorPil),
    )
    for config_class, processor_class, image_processor_class in families:
        AutoProcessor.register(config_class, processor_class, exist_ok=True)
        AutoImageProcessor.register(
            config_class,
            image_processor_classes={"pil": image_processor_class, "torchvision": image_processor_class},
            exist_ok=True,
        )
