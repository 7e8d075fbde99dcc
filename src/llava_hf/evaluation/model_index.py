"""Evaluation results filed in a model card (README.md): one `model-index` entry per metric, re-evaluation replaces."""

from __future__ import annotations

import os
from pathlib import Path

from ..utils.io import atomic_write


def add_results_to_model_card(
    readme_path: str | os.PathLike, results: list[dict] | dict, model_name: str, task_type: str = "image-text-to-text"
) -> str:
    """Add each result's `metrics` to the `model-index` metadata of a model card (README.md), creating it if needed.

    One `EvalResult` per metric, filed under the result's dataset type/name/split; an existing entry for the same
    dataset, split and metric is replaced (re-evaluating updates the card instead of duplicating it). The card text
    below the metadata is kept. Returns the new README text, which is also written (atomically) to `readme_path`.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    readme_path = Path(readme_path)
    results = [results] if isinstance(results, dict) else list(results)
    if readme_path.exists():
        card = ModelCard(readme_path.read_text(encoding="utf-8"), ignore_metadata_errors=False)
    else:
        card = ModelCard(f"---\n---\n\n# {model_name}\n")
    data: ModelCardData = card.data
    existing = list(data.eval_results or [])
    new = []
    for result in results:
        dataset = result["dataset"]
        if not dataset.get("type"):
            raise ValueError(f"results of task {result['task']!r} name no dataset type; set Task.dataset_type.")
        for metric, value in result["metrics"].items():
            new.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=dataset["type"],
                    dataset_name=dataset.get("name") or dataset["type"],
                    dataset_split=dataset.get("split") or None,
                    metric_type=metric,
                    metric_name=f"{result['task']} {metric}",
                    metric_value=value,
                )
            )
    replaced = {(item.dataset_type, item.dataset_split, item.metric_type) for item in new}
    kept = [item for item in existing if (item.dataset_type, item.dataset_split, item.metric_type) not in replaced]
    data.eval_results = kept + new
    data.model_name = data.model_name or model_name
    text = str(card)
    atomic_write(readme_path, text)
    return text
