"""README.md (the Hub model card) for a llava_hf checkpoint: base models, data, stages, evaluation, loading, provenance.

Facts come from the caller (conversion provenance, training metadata, evaluation results); nothing is invented. An
evaluation table marks who measured the numbers, so published numbers of the original authors are never presented
as ours.
"""

import json
from pathlib import Path

LOAD_SNIPPET = """```python
import llava_hf  # registers the llava_hf model type with transformers' Auto classes
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo}")
processor = AutoProcessor.from_pretrained("{repo}")
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is in this image?"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=image, text=prompt, return_tensors="pt")
print(processor.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))
```"""


def _front_matter(base_models: list[str], datasets: list[str], license_name: str | None) -> str:
    lines = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags:", "- llava", "- llava_hf"]
    if license_name:
        lines.append(f"license: {license_name}")
    if base_models:
        lines += ["base_model:"] + [f"- {name}" for name in base_models]
    if datasets:
        lines += ["datasets:"] + [f"- {name}" for name in datasets]
    return "\n".join(lines + ["---", ""])


def render_model_card(
    repo_id: str = "path/to/this/checkpoint",
    title: str | None = None,
    base_models: list[str] | None = None,
    datasets: list[str] | None = None,
    stages: list[dict] | None = None,
    evaluation: list[dict] | None = None,
    evaluation_source: str | None = None,
    provenance: dict | None = None,
    verification: dict | None = None,
    license_name: str | None = None,
    remote_code: bool = False,
) -> str:
    """The card text. `stages`: [{"name", "data", "trainable", ...}]; `evaluation`: [{"benchmark", "score"}];
    `evaluation_source`: who produced the numbers (e.g. "published by the original authors (LLaVA-1.5 paper)")."""
    base_models = list(base_models or [])
    datasets = list(datasets or [])
    parts = [_front_matter(base_models, datasets, license_name), f"# {title or repo_id.split('/')[-1]}", ""]
    parts.append("A LLaVA model (a CLIP vision tower, a projector and a Llama language model) in the llava_hf format.")
    if base_models:
        parts += ["", "## Base models", ""] + [f"- `{name}`" for name in base_models]
    if datasets:
        parts += ["", "## Training data", ""] + [f"- `{name}`" for name in datasets]
    if stages:
        keys = list(dict.fromkeys(key for stage in stages for key in stage))
        parts += ["", "## Training stages", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        parts += ["| " + " | ".join(str(stage.get(key, "")) for key in keys) + " |" for stage in stages]
    if evaluation:
        parts += ["", "## Evaluation", ""]
        if evaluation_source:
            parts += [f"Numbers {evaluation_source}.", ""]
        parts += ["| benchmark | score |", "|---|---|"]
        parts += [f"| {row['benchmark']} | {row['score']} |" for row in evaluation]
    parts += ["", "## How to load", "", LOAD_SNIPPET.format(repo=repo_id)]
    if remote_code:
        parts += [
            "",
            "Without llava_hf installed, load with `trust_remote_code=True` (the modeling code ships in this repo).",
        ]
    if provenance:
        parts += ["", "## Conversion provenance", ""]
        for key, value in provenance.items():
            if key != "new_token_init":
                parts.append(f"- {key}: `{json.dumps(value) if not isinstance(value, str) else value}`")
        if "new_token_init" in provenance:
            parts += ["", provenance["new_token_init"]]
        if provenance.get("source_tokenizer_legacy") is False:
            parts += [
                "",
                "The source tokenizer had `legacy=false`: in multi-turn prompts the text right after `</s>` is "
                "tokenized with SentencePiece's dummy prefix here, one token the original did not produce there. "
                "Single-turn prompts and the tokens around the image are identical to the original's.",
            ]
    if verification:
        parts += [
            "",
            "## Verification",
            "",
            f"Against the original computation on one image + prompt (float32): max |Δlogit| = "
            f"{verification['max_abs_logit_diff']:.3g} over {verification['positions']} positions; greedy tokens "
            f"agree: {verification['greedy_agree']}; token ids identical: {verification['token_ids_identical']}.",
        ]
    return "\n".join(parts) + "\n"


def write_model_card(folder: str | Path, **fields) -> Path:
    """Write `render_model_card(**fields)` to `folder/README.md` and return its path."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(**fields))
    return path


__all__ = ["render_model_card", "write_model_card"]
