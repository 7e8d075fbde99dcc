# llava-hf export --to transformers SRC DST
"""llava_hf <-> transformers' built-in `llava` layout (what llava-hf/* repos, vLLM, SGLang and TGI load).

Both layouts store the same tensors under the same on-disk names (`language_model.model.*`, `vision_tower.*`,
`multi_modal_projector.linear_{1,2}.*`), so weights files are copied byte for byte; only config.json and the
processor files differ. The built-in model only knows a 2-layer projector (Linear, act, Linear), so a llava_hf
checkpoint with a linear, identity or deeper projector is refused instead of being exported wrongly.
"""

import json
import shutil
from pathlib import Path

import torch

from ..utils.io import staged_directory
from .common import ConversionError, read_json

WEIGHT_PATTERNS = ("*.safetensors", "model.safetensors.index.json")


def copy_weights(source: Path, destination: Path):
    files = [path for pattern in WEIGHT_PATTERNS for path in sorted(source.glob(pattern))]
    if not any(path.suffix == ".safetensors" for path in files):
        raise ConversionError(f"{source} has no .safetensors weights; re-save it with save_pretrained first.")
    for path in files:
        shutil.copyfile(path, destination / path.name)


def copy_tokenizer_legacy(source: Path, destination: Path):
    """save_pretrained drops `legacy`; keep the source's value so SentencePiece tokenizers tokenize the same."""
    source_config, target = source / "tokenizer_config.json", destination / "tokenizer_config.json"
    if source_config.is_file() and target.is_file():
        settings = {k: v for k, v in read_json(source_config).items() if k in ("legacy", "add_prefix_space")}
        if settings:
            target.write_text(json.dumps({**read_json(target), **settings}, indent=2))


def load_image_processor(folder: Path):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder, backend="pil")


def import_transformers_checkpoint(source: Path, staging: Path, chat_template: str = "vicuna_v1") -> dict:
    """Write a llava_hf checkpoint for a transformers `LlavaForConditionalGeneration` folder into `staging`."""
    from transformers import AutoTokenizer, GenerationConfig, LlavaConfig

    from llava_hf.modeling import LlavaHfConfig
    from llava_hf.processing import LlavaHfProcessor

    builtin = LlavaConfig.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    image_processor = load_image_processor(source)
    template_file = source / "chat_template.jinja"
    template = template_file.read_text() if template_file.is_file() else chat_template
    config = LlavaHfConfig(
        vision_config=builtin.vision_config,
        text_config=builtin.text_config,
        image_token_index=builtin.image_token_index,
        projector_type="mlp2x_gelu",
        projector_hidden_act=builtin.projector_hidden_act,
        vision_feature_select_strategy=builtin.vision_feature_select_strategy,
        vision_feature_layer=builtin.vision_feature_layer,
        multimodal_projector_bias=builtin.multimodal_projector_bias,
        image_aspect_ratio="pad" if getattr(image_processor, "do_pad", False) else "square",
        tie_word_embeddings=builtin.tie_word_embeddings,
        dtype=builtin.dtype,
        architectures=["LlavaHfForConditionalGeneration"],
    )
    if (
        "image_token" not in tokenizer.special_tokens_map
        and tokenizer.convert_ids_to_tokens(config.image_token_index) not in tokenizer.all_special_tokens
    ):
        raise ConversionError(f"the tokenizer in {source} has no special image token (id {config.image_token_index}).")
    copy_weights(source, staging)
    config.save_pretrained(staging)
    LlavaHfProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=template,
        image_seq_length=config.image_seq_length,
    ).save_pretrained(staging)
    copy_tokenizer_legacy(source, staging)
    if (source / "generation_config.json").is_file():
        GenerationConfig.from_pretrained(source).save_pretrained(staging)
    return {"source_format": "transformers", "projector_type": "mlp2x_gelu", "weights": "copied byte for byte"}


@torch.no_grad()
def verify_against_transformers(source: Path, converted: Path, tolerance: float) -> dict:
    """transformers' LlavaForConditionalGeneration on `source` vs LlavaHfForConditionalGeneration on `converted`."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from llava_hf.modeling import LlavaHfForConditionalGeneration

    from .common import VERIFY_QUESTION, verification_image

    processor = AutoProcessor.from_pretrained(converted)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": VERIFY_QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=verification_image(), text=prompt, return_tensors="pt")
    reference = LlavaForConditionalGeneration.from_pretrained(source, dtype=torch.float32).eval()(**inputs).logits
    ours = LlavaHfForConditionalGeneration.from_pretrained(converted, dtype=torch.float32).eval()(**inputs).logits
    result = {
        "max_abs_logit_diff": (ours - reference).abs().max().item(),
        "greedy_agree": bool(torch.equal(ours.argmax(-1), reference.argmax(-1))),
        "token_ids_identical": True,  # both models read the same inputs here
        "positions": ours.shape[1],
        "tolerance": tolerance,
    }
    if result["max_abs_logit_diff"] > tolerance or not result["greedy_agree"]:
        raise ConversionError(
            f"verification failed: max |Δlogit| = {result['max_abs_logit_diff']:.3g} (tolerance {tolerance}), "
            f"greedy tokens agree: {result['greedy_agree']}."
        )
    return result


def builtin_export_problem(config) -> str | None:
    """Why the llava_hf `config` cannot be written as transformers' built-in llava, or None when it can."""
    if config.projector_type != "mlp2x_gelu":
        return (
            f"projector_type={config.projector_type!r} cannot be represented by transformers' "
            "LlavaForConditionalGeneration, which always builds Linear -> act -> Linear (mlp2x_gelu); serve this "
            "checkpoint with llava_hf instead."
        )
    if config.image_aspect_ratio == "pad" and config.vision_config.model_type not in ("clip_vision_model", "clip"):
        return "only CLIP vision towers are exported (the built-in processor's padding assumes CLIP)."
    return None


def write_builtin_files(source: Path, destination: Path, config) -> None:
    """Everything but the weights of the built-in llava checkpoint for the llava_hf checkpoint `source` (whose
    config is `config`): config.json, the stock LlavaProcessor's files, generation config and model card."""
    from transformers import AutoTokenizer, GenerationConfig, LlavaConfig, LlavaImageProcessorPil
    from transformers import LlavaProcessor as BuiltinLlavaProcessor

    LlavaConfig(
        vision_config=config.vision_config,
        text_config=config.text_config,
        image_token_index=config.image_token_index,
        image_seq_length=config.image_seq_length,
        projector_hidden_act=config.projector_hidden_act,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_feature_layer=config.vision_feature_layer,
        multimodal_projector_bias=config.multimodal_projector_bias,
        tie_word_embeddings=config.tie_word_embeddings,
        dtype=config.dtype,
        architectures=["LlavaForConditionalGeneration"],
    ).save_pretrained(destination)
    tokenizer = AutoTokenizer.from_pretrained(source)
    template = (source / "chat_template.jinja").read_text() if (source / "chat_template.jinja").is_file() else None
    BuiltinLlavaProcessor(
        # The stock class with the same settings: ours subclasses it (same numbers, faster) but is unknown to a
        # process without llava_hf, whose AutoProcessor would refuse the folder.
        image_processor=LlavaImageProcessorPil.from_dict(load_image_processor(source).to_dict()),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS token; the built-in subtracts it again for "default"
        chat_template=template,
    ).save_pretrained(destination)
    copy_tokenizer_legacy(source, destination)
    if (source / "generation_config.json").is_file():
        GenerationConfig.from_pretrained(source).save_pretrained(destination)
    if (source / "README.md").is_file():
        shutil.copyfile(source / "README.md", destination / "README.md")


def export_to_transformers(source: str | Path, destination: str | Path) -> Path:
    """Write the llava_hf checkpoint `source` in transformers' built-in llava layout at `destination`.

    Raises ConversionError (nothing written) when the model cannot be represented by the built-in class.
    """
    from llava_hf.modeling import LlavaHfConfig

    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise ConversionError(f"{destination} already exists; remove it or choose another destination.")
    if not (source / "config.json").is_file() or read_json(source / "config.json").get("model_type") != "llava_hf":
        raise ConversionError(f"{source} is not a llava_hf checkpoint (config.json model_type must be 'llava_hf').")
    config = LlavaHfConfig.from_pretrained(source)
    problem = builtin_export_problem(config)
    if problem:
        raise ConversionError(problem)
    with staged_directory(destination) as staging:  # nothing at `destination` unless everything succeeds
        copy_weights(source, staging)
        write_builtin_files(source, staging, config)
    return destination
