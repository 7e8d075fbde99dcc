"""llava_hf: LLaVA as Hugging Face-native classes.

What llava_hf saves loads without llava_hf: a model transformers' built-in llava can express (every `mlp2x_gelu`
projector) is saved in the built-in's format (`model_type: "llava"`, `LlavaProcessor`), which the Auto classes load
as transformers' own classes; llava_hf's classes read it back explicitly (`LlavaHfForConditionalGeneration
.from_pretrained`, `LlavaHfProcessor.from_pretrained`). Importing the package registers the `llava_hf` model type
(checkpoints with other projectors) with transformers' Auto classes, so such folders load with `AutoConfig`,
`AutoModel`, `AutoModelForImageTextToText`, `AutoProcessor` and `pipeline("image-text-to-text")`. The public names `LlavaConfig`, `LlavaForConditionalGeneration` and `LlavaProcessor`
are aliases of classes whose own `__name__`s (`LlavaHf*`) never collide with transformers' built-ins, because saved
JSON files refer to classes by name and transformers resolves its own names first.

Importing is cheap: nothing here imports torch or transformers. The public names are loaded on first access (the
lazy-module pattern of transformers' own `__init__`), and the Auto registration runs when transformers' Auto classes
are first imported (at once if they already are), so `llava-hf --help`, data generation and the scorers never pay for
the model code, while `import llava_hf; AutoModelForImageTextToText.from_pretrained(folder)` works as before.

- `modeling`, `processing`     the model, config and processor classes (import nothing else from llava_hf)
- `data`, `training`           training data (formats, preflight check, masking collator) and the stages around TRL
- `datagen`                    instruction data from captions + boxes by a text-only teacher
- `evaluation`                 ScienceQA, POPE, LLaVA-Bench with the paper's protocols
- `conversion`                 original checkpoints -> llava_hf, export to transformers' layout, model cards, the Hub
- `serving`                    generate, chat, the OpenAI-compatible server
- `demo`                       `llava-hf demo`: the recipe end to end on a synthetic world
- `utils`                      the one lower layer of plumbing
- `cli.py`                     `llava-hf <command>`: a table from command name to the module that runs it
- `train_cli.py`               `llava-hf train`: --help and LLaVA's flags checked before TRL loads
- `training_arguments.py`      LlavaRunArguments (outside `training`, whose import loads torch and TRL)
- `testing.py`                 the tiny LLaVA that tests, benchmarks and examples share
- `testing_assets`             its tiny tokenizer (package data)
"""

import importlib
import importlib.abc
import importlib.machinery
import sys

__version__ = "0.1.0"

# public name -> (submodule, attribute); `from llava_hf import X` imports the submodule on first use.
_LAZY_ATTRIBUTES = {
    "LlavaHfConfig": ("modeling", "LlavaHfConfig"),
    "LlavaHfForConditionalGeneration": ("modeling", "LlavaHfForConditionalGeneration"),
    "LlavaHfModel": ("modeling", "LlavaHfModel"),
    "LlavaHfMultiModalProjector": ("modeling", "LlavaHfMultiModalProjector"),
    "LlavaHfPreTrainedModel": ("modeling", "LlavaHfPreTrainedModel"),
    "LlavaHfProcessor": ("processing", "LlavaHfProcessor"),
    "LlavaHfImageProcessor": ("processing", "LlavaHfImageProcessor"),
    "LlavaHfNextConfig": ("modeling", "LlavaHfNextConfig"),
    "LlavaHfNextForConditionalGeneration": ("modeling", "LlavaHfNextForConditionalGeneration"),
    "LlavaHfNextModel": ("modeling", "LlavaHfNextModel"),
    "LlavaHfNextProcessor": ("processing", "LlavaHfNextProcessor"),
    "build_next_image_processor": ("processing", "build_next_image_processor"),
    "LlavaConfig": ("modeling", "LlavaHfConfig"),
    "LlavaForConditionalGeneration": ("modeling", "LlavaHfForConditionalGeneration"),
    "LlavaModel": ("modeling", "LlavaHfModel"),
    "LlavaProcessor": ("processing", "LlavaHfProcessor"),
    "CHAT_TEMPLATE_NAMES": ("processing", "CHAT_TEMPLATE_NAMES"),
    "build_image_processor": ("processing", "build_image_processor"),
    "get_chat_template": ("processing", "get_chat_template"),
    "to_rgb": ("processing", "to_rgb"),
}

__all__ = sorted(_LAZY_ATTRIBUTES) + ["register_auto_classes"]


def __getattr__(name: str):
    if name not in _LAZY_ATTRIBUTES:
        raise AttributeError(f"module 'llava_hf' has no attribute {name!r}")
    module_name, attribute = _LAZY_ATTRIBUTES[name]
    value = getattr(importlib.import_module(f".{module_name}", __name__), attribute)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))


_registered = False


def register_auto_classes() -> None:
    """Register the `llava_hf` model type with transformers' Auto classes and its checkpoint key mapping (idempotent).

    Runs by itself when transformers' Auto classes are imported; call it directly only to register early.
    """
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageTextToText,
        AutoModelForMultimodalLM,
        AutoProcessor,
        LlavaNextImageProcessorPil,
    )
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    from .modeling import (
        BASE_MODEL_KEY_MAPPING,
        CHECKPOINT_KEY_MAPPING,
        NEXT_CHECKPOINT_KEY_MAPPING,
        LlavaHfConfig,
        LlavaHfForConditionalGeneration,
        LlavaHfModel,
        LlavaHfNextConfig,
        LlavaHfNextForConditionalGeneration,
        LlavaHfNextModel,
    )
    from .processing import LlavaHfImageProcessor, LlavaHfNextProcessor, LlavaHfProcessor

    # (config, backbone, head model, processor, image processor) of LLaVA-1.5 and LLaVA-1.6 (AnyRes). One image
    # processor class for both backends: with torchvision installed, AutoImageProcessor would otherwise reload a saved
    # processor as the torchvision one, whose bicubic resize does not give the original's pixel values.
    families = (
        (LlavaHfConfig, LlavaHfModel, LlavaHfForConditionalGeneration, LlavaHfProcessor, LlavaHfImageProcessor),
        (
            LlavaHfNextConfig,
            LlavaHfNextModel,
            LlavaHfNextForConditionalGeneration,
            LlavaHfNextProcessor,
            LlavaNextImageProcessorPil,
        ),
    )
    for config_class, backbone, head, processor_class, image_processor_class in families:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, backbone, exist_ok=True)
        AutoModelForImageTextToText.register(config_class, head, exist_ok=True)
        AutoModelForMultimodalLM.register(config_class, head, exist_ok=True)
        AutoProcessor.register(config_class, processor_class, exist_ok=True)
        AutoImageProcessor.register(
            config_class,
            image_processor_classes={"pil": image_processor_class, "torchvision": image_processor_class},
            exist_ok=True,
        )
    # Same on-disk layout as transformers' built-in llava / llava_next (`language_model.model.*`, `vision_tower.*`,
    # `image_newline`, ...): these mappings turn it into our in-memory names on load and back on save, so checkpoints
    # load both ways.
    head_mappings = {
        LlavaHfConfig.model_type: CHECKPOINT_KEY_MAPPING,
        LlavaHfNextConfig.model_type: {**NEXT_CHECKPOINT_KEY_MAPPING, **CHECKPOINT_KEY_MAPPING},
    }
    # Keyed by class name, so they also apply to the `model` inside the head model (transformers looks up class names
    # before model types, exactly as for its `LlavaModel`).
    backbone_mappings = {
        LlavaHfModel.__name__: BASE_MODEL_KEY_MAPPING,
        LlavaHfNextModel.__name__: BASE_MODEL_KEY_MAPPING,
    }
    for key, mapping in {**head_mappings, **backbone_mappings}.items():
        register_checkpoint_conversion_mapping(
            key,
            [WeightRenaming(source_patterns=disk, target_patterns=memory) for disk, memory in mapping.items()],
            overwrite=True,
        )


_AUTO_PACKAGE = "transformers.models.auto"
_WATCHED = ("transformers", "llava_hf")  # the packages whose imports can be in progress when the Auto package loads


def _register_when_ready(just_loaded: str) -> None:
    """Register now unless a module of `_WATCHED` is still half-imported (registering imports our model and processor
    modules, which import transformers' base classes: doing that inside their own import would be a cycle). Then the
    end of the next watched import retries."""
    for name, module in list(sys.modules.items()):
        if name in (just_loaded, "llava_hf") or name.partition(".")[0] not in _WATCHED:
            continue
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            return
    register_auto_classes()


class _RegisterWhenAutoIsImported(importlib.abc.MetaPathFinder):
    """Finds `transformers.models.auto` like the normal path finder and registers llava_hf right after that package
    has executed: every way to the Auto classes (`from transformers import AutoModel`, `pipeline`, TRL, ...) goes
    through it, so the registration is in place before any Auto class is used. When that moment falls inside another
    import (`from llava_hf import LlavaProcessor` imports transformers' base classes, which import the Auto package),
    the registration runs when the next module of transformers or llava_hf has finished loading."""

    def find_spec(self, fullname, path, target=None):
        if _registered:
            sys.meta_path.remove(self)
            return None
        if fullname.partition(".")[0] not in _WATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            if not _registered and _AUTO_PACKAGE in sys.modules:
                _register_when_ready(fullname)

        spec.loader.exec_module = exec_module
        return spec


if _AUTO_PACKAGE in sys.modules:
    _register_when_ready("llava_hf")
if not _registered and not any(isinstance(finder, _RegisterWhenAutoIsImported) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenAutoIsImported())
