"""README.md (the Hub model card) for a llava_hf checkpoint, rendered through the one template `model_card_template.md`.

`render_model_card(...)` turns the facts a caller knows (base models, data, training stages, evaluation results,
conversion provenance, verification) into the template's fields and renders it with huggingface_hub's
`ModelCard.from_template`; `write_model_card(folder, ...)` also reads the folder's config.json for the model details.
Nothing is invented: a fact nobody passed prints the template's "not recorded" default. Every evaluation row says who
measured it, so numbers published by the original authors are never presented as measured on this checkpoint.

The conversion facts (provenance, verification) are also stored in the card's YAML metadata (`llava_hf_conversion`),
so re-rendering the card later (e.g. `push_to_hub` with new fields) keeps them; see `recorded_conversion`.
"""

import json
from pathlib import Path

from ..utils.io import atomic_write

TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")
CONVERSION_METADATA_KEY = "llava_hf_conversion"
SUMMARY = (
    "A LLaVA (Visual Instruction Tuning, Liu et al. 2023) vision-language model: a CLIP vision tower, a projector and "
    "a Llama language model, packaged for Hugging Face transformers with llava_hf."
)
LEGACY_FALSE_NOTE = (
    "The source tokenizer had `legacy=false`: in multi-turn prompts the text right after `</s>` is tokenized with "
    "SentencePiece's dummy prefix here, one token the original did not produce there. Single-turn prompts and the "
    "tokens around the image are identical to the original's."
)
ASPECT_RATIO_TEXT = {
    "pad": "`pad`: pasted on a square of the mean colour, then CLIP resize + crop (LLaVA-1.5)",
    "square": "`square`: CLIP resize of the shortest edge + center crop (LLaVA v1)",
}


def _code(value) -> str:
    return f"`{value if isinstance(value, str) else json.dumps(value)}`"


def model_details(config: dict) -> dict:
    """Template fields (architecture, vision_tower, language_model, projector_type, image_aspect_ratio) from a
    llava_hf config.json dict."""
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    strategy = config.get("vision_feature_select_strategy")
    # transformers' built-in llava config has no projector_type: its projector is always mlp2x_gelu
    projector_type = config.get("projector_type") or ("mlp2x_gelu" if config.get("model_type") == "llava" else None)
    architecture = (config.get("architectures") or ["LlavaForConditionalGeneration"])[0]
    details = {
        "architecture": (
            f"`{architecture}`: {vision.get('model_type', 'vision')} tower -> "
            f"{projector_type} projector -> {text.get('model_type', 'causal')} LM"
        ),
        "vision_tower": (
            f"{vision.get('num_hidden_layers')} layers, hidden {vision.get('hidden_size')}, {vision.get('image_size')} "
            f"px, patch {vision.get('patch_size')}; features of layer {config.get('vision_feature_layer')}"
            f"{' without the CLS token' if strategy == 'default' else ' with the CLS token'} -> "
            f"{config.get('image_seq_length')} image tokens"
        ),
        "language_model": (
            f"{text.get('num_hidden_layers')} layers, hidden {text.get('hidden_size')}, vocabulary "
            f"{text.get('vocab_size')}, image token id {config.get('image_token_index')}"
        ),
        "projector_type": _code(projector_type) if projector_type else None,
        "image_aspect_ratio": ASPECT_RATIO_TEXT.get(config.get("image_aspect_ratio"), config.get("image_aspect_ratio")),
    }
    return {key: value for key, value in details.items() if value}


def _training_markdown(base_models: list[str], datasets: list[str], stages: list[dict] | None) -> str | None:
    parts = []
    if base_models:
        parts.append("Base models:\n\n" + "\n".join(f"- `{name}`" for name in base_models))
    if datasets:
        parts.append("Training data:\n\n" + "\n".join(f"- `{name}`" for name in datasets))
    if stages:
        keys = list(dict.fromkeys(key for stage in stages for key in stage))
        rows = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        rows += ["| " + " | ".join(str(stage.get(key, "")) for key in keys) + " |" for stage in stages]
        parts.append("Training stages:\n\n" + "\n".join(rows))
    return "\n\n".join(parts) or None


def _evaluation_markdown(evaluation: list[dict] | None, evaluation_source: str | None) -> str | None:
    """A table with a "measured by" column: each row's `measured_by`, else `evaluation_source`. Rows without either
    are refused: an unattributed number on a card reads as if it had been measured on this checkpoint."""
    if not evaluation:
        return None
    rows = ["| benchmark | score | measured by |", "|---|---|---|"]
    for row in evaluation:
        measured_by = row.get("measured_by") or evaluation_source
        if not measured_by:
            raise ValueError(
                f"evaluation row {row} says nothing about who measured it; pass evaluation_source=... or a "
                "'measured_by' key per row."
            )
        rows.append(f"| {row['benchmark']} | {row['score']} | {measured_by} |")
    header = f"Numbers {evaluation_source}.\n\n" if evaluation_source else ""
    return header + "\n".join(rows)


def _provenance_markdown(provenance: dict | None, verification: dict | None) -> str | None:
    parts = []
    if provenance:
        facts = [
            f"- {key}: {_code(value)}"
            for key, value in provenance.items()
            if key != "new_token_init" and value is not None
        ]
        parts.append("Converted with llava_hf's `llava-hf convert`:\n\n" + "\n".join(facts))
        if "new_token_init" in provenance:
            parts.append(provenance["new_token_init"])
        if provenance.get("source_tokenizer_legacy") is False:
            parts.append(LEGACY_FALSE_NOTE)
    if provenance and not verification:
        parts.append("Not verified numerically against the original computation (converted without `--verify`).")
    if verification:
        parts.append(
            "Verification against the original computation on one image + prompt (float32): max |Δlogit| = "
            f"{verification['max_abs_logit_diff']:.3g} over {verification['positions']} positions; greedy tokens "
            f"agree: {verification['greedy_agree']}; token ids identical: {verification['token_ids_identical']}."
        )
    return "\n\n".join(parts) or None


def render_model_card(
    repo_id: str = "path/to/this/checkpoint",
    title: str | None = None,
    summary: str | None = None,
    base_models: list[str] | None = None,
    datasets: list[str] | None = None,
    stages: list[dict] | None = None,
    evaluation: list[dict] | None = None,
    evaluation_source: str | None = None,
    provenance: dict | None = None,
    verification: dict | None = None,
    license_name: str | None = None,
    remote_code: bool = False,
    config: dict | None = None,
    vision_tower: str | None = None,
    language_model: str | None = None,
    chat_template_name: str | None = None,
) -> str:
    """The card text (YAML front matter + Markdown) rendered from `model_card_template.md`.

    `stages`: [{"stage", "data", "trainable", ...}] (one table column per key); `evaluation`: [{"benchmark",
    "score", "measured_by"?}]; `evaluation_source`: who produced the numbers (e.g. "published by the original authors
    (LLaVA-1.5 paper), not re-measured here"); `provenance`/`verification`: what `convert_checkpoint` returns;
    `config`: the checkpoint's config.json (model details); `vision_tower`/`language_model`: names (e.g. repo ids)
    shown before the details read from `config`. Raises ValueError for an evaluation row nobody is credited with.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base_models = list(base_models or [])
    datasets = list(datasets or [])
    metadata = {}
    if provenance or verification:
        metadata[CONVERSION_METADATA_KEY] = {"provenance": provenance or {}, "verification": verification or {}}
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["llava", "llava_hf", "image-text-to-text"],
        license=license_name,
        base_model=base_models or None,
        datasets=datasets or None,
        **metadata,
    )
    details = model_details(config) if config else {}
    for key, name in (("vision_tower", vision_tower), ("language_model", language_model)):
        if name:
            details[key] = f"`{name}`" + (f" ({details[key]})" if key in details else "")
    chat_template_name = chat_template_name or (provenance or {}).get("chat_template")
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=title or repo_id.split("/")[-1],
        model_summary=summary or SUMMARY,
        chat_template_name=_code(chat_template_name) if chat_template_name else None,
        repo_id=repo_id,
        remote_code=remote_code,
        training=_training_markdown(base_models, datasets, stages),
        evaluation=_evaluation_markdown(evaluation, evaluation_source),
        provenance=_provenance_markdown(provenance, verification),
        **details,
    )
    return str(card).rstrip("\n") + "\n"


def recorded_conversion(folder: str | Path) -> dict:
    """{"provenance", "verification"} stored in `folder/README.md`'s metadata by an earlier render, or {}."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    recorded = ModelCard.load(path).data.to_dict().get(CONVERSION_METADATA_KEY) or {}
    return {key: value for key, value in recorded.items() if value}


def write_model_card(folder: str | Path, **fields) -> Path:
    """Write `render_model_card(**fields)` to `folder/README.md` (atomically) and return its path.

    The model details come from `folder/config.json` unless `config` is given, and so does `remote_code` (a `llava_hf`
    model type is shared with its code, see `hub.prepare_for_hub`); provenance and verification recorded
    by an earlier card in the folder are kept unless `fields` replace them.
    """
    folder = Path(folder)
    if "config" not in fields and (folder / "config.json").is_file():
        fields["config"] = json.loads((folder / "config.json").read_text())
    if "remote_code" not in fields and fields.get("config"):
        # a `llava_hf` model type is one transformers' built-in cannot express: it is shared with its code
        fields["remote_code"] = fields["config"].get("model_type") == "llava_hf"
    fields = {**recorded_conversion(folder), **fields}
    return atomic_write(folder / "README.md", render_model_card(**fields))


__all__ = ["recorded_conversion", "render_model_card", "write_model_card"]
