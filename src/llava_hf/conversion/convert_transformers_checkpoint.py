# llava-hf export --to transformers SRC DST
"""llava_hf <-> transformers' built-in `llava` layout (what llava-hf/* repos, vLLM, SGLang and TGI load).

Both store the same tensors under the same on-disk names (`language_model.model.*`, `vision_tower.*`,
`multi_modal_projector.linear_{1,2}.*`), so weights files are copied byte for byte. llava_hf's own saves already
write the built-in's config.json and processor files whenever the built-in can express the model, so exporting
rewrites only folders saved in the `llava_hf` format; the built-in model only knows a 2-layer projector (Linear,
act, Linear), so a checkpoint with a linear, identity or deeper projector is refused instead of being exported wrongly.
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
        image_processor=image_processor, tokenizer=tokenizer, chat_template=template, **config.image_token_settings
    ).save_pretrained(staging)
    copy_tokenizer_legacy(source, staging)
    if (source / "generation_config.json").is_file():
        GenerationConfig.from_pretrained(source).save_pretrained(staging)
    return {"source_format": "transformers", "projector_type": "mlp2x_gelu", "weights": "copied byte for byte"}


@torch.no_grad()
def verify_against_transformers(source: Path, converted: Path, tolerance: float) -> dict:
    """transformers' LlavaForConditionalGeneration on `source` vs LlavaHfForConditionalGeneration on `converted`."""
    from transformers import LlavaForConditionalGeneration

    from llava_hf.modeling import LlavaHfForConditionalGeneration
    from llava_hf.processing import LlavaHfProcessor

    from .common import VERIFY_QUESTION, verification_image

    processor = LlavaHfProcessor.from_pretrained(converted)
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


def write_builtin_files(source: Path, staging: Path):
    """config.json and the processor files of `source` (either format) in the built-in's format, into `staging`."""
    from transformers import GenerationConfig

    from llava_hf.modeling import LlavaHfConfig
    from llava_hf.processing import LlavaHfProcessor

    config = LlavaHfConfig.from_pretrained(source)
    if not config.builtin_expressible:
        raise ConversionError(
            f"projector_type={config.projector_type!r} cannot be represented by transformers' "
            "LlavaForConditionalGeneration, which always builds Linear -> act -> Linear (mlp2x_gelu); serve this "
            "checkpoint with llava_hf instead, or share it with its code (llava_hf.conversion.hub.add_remote_code)."
        )
    config.save_pretrained(staging)
    processor = LlavaHfProcessor.from_pretrained(source)
    builtin = LlavaHfProcessor(processor.image_processor, processor.tokenizer, **config.image_token_settings)
    builtin.chat_template = processor.chat_template  # verbatim, as saved
    builtin.save_pretrained(staging)
    copy_tokenizer_legacy(source, staging)
    if (source / "generation_config.json").is_file():
        GenerationConfig.from_pretrained(source).save_pretrained(staging)


def export_to_transformers(source: str | Path, destination: str | Path) -> Path:
    """Write the checkpoint `source` in transformers' built-in llava format at `destination`: every file names only
    transformers' own classes (`LlavaForConditionalGeneration`, `LlavaProcessor`, `LlavaImageProcessor`).

    Raises ConversionError (nothing written) when the model cannot be represented by the built-in class.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise ConversionError(f"{destination} already exists; remove it or choose another destination.")
    config_file = source / "config.json"
    if not config_file.is_file() or read_json(config_file).get("model_type") not in ("llava_hf", "llava"):
        raise ConversionError(f"{source} is not a llava_hf checkpoint (config.json model_type 'llava_hf' or 'llava').")

    with staged_directory(destination) as staging:  # nothing at `destination` unless everything succeeds
        write_builtin_files(source, staging)
        copy_weights(source, staging)
        if (source / "README.md").is_file():
            shutil.copyfile(source / "README.md", staging / "README.md")
    return destination
