"""The paper's stage-1 ablation on the shapes world, over several seeds: `llava-hf demo --ablation-seeds N`.

LLaVA (Liu et al. 2023, Section 5.2, "Ablations") reports that skipping stage 1 (feature-alignment pretraining) and
training stage 2 from a random projector costs 5.11 points on ScienceQA. One seed of the toy demo cannot show a
difference of that size: each held-out accuracy has a standard error of about 2 points. Here each seed builds its
world, data and towers once and trains two models from them, one with stage 1 and one without, and evaluates both on
the same held-out multiple-choice questions. The per-seed difference is paired (same world, same towers, same
questions), so its spread over seeds is the spread of the effect itself; the result is the mean difference and its
standard error (sample standard deviation / sqrt(seeds)).

Written to `output_dir`: `seed_<s>/` (each seed's world, data and eval outputs) and `ablation.json`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .end_to_end import (
    DemoArguments,
    build_towers,
    demo_threads,
    evaluate_model,
    generate_data,
    make_world,
    resolve_device,
    stage2_rows,
    train_stage,
    write_json,
)

ARMS = {"with stage 1": False, "without stage 1 (--skip-stage1)": True}


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n); 0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def run_seed(config: DemoArguments, device: str) -> dict[str, dict]:
    """Both arms on one seed's world and towers; returns the multiple-choice accuracy per type for each arm."""
    from ..data import load_llava_json
    from .pretrain import assemble

    output_dir = Path(config.output_dir)
    world = make_world(config, output_dir / "world")
    data = generate_data(config, world, output_dir / "data", config.seed)
    tokenizer, clip, language_model, _, _ = build_towers(config, world, data, device)
    captions = load_llava_json(data["caption"], world.folder)
    rows = stage2_rows(config, world, data, output_dir / "data")
    results = {}
    for arm, skip_stage1 in ARMS.items():
        # The towers are copied into each model; the two arms start from the same weights and the same projector.
        model, processor = assemble(clip, language_model, tokenizer, config.vision_feature_layer, seed=config.seed)
        folder = output_dir / ("no_stage1" if skip_stage1 else "stage1")
        if not skip_stage1:
            train_stage("pretrain", config, model, processor, captions, folder / "stage1", device)
        train_stage("finetune", config, model, processor, rows, folder / "stage2", device)
        model.to(device)
        evaluated = evaluate_model(config, world, model, processor, folder / "eval", open_questions_too=False)
        results[arm] = evaluated["shapes_multiple_choice"]["by_question_type"]
    return results


def run_ablation(config: DemoArguments, seeds: int) -> dict:
    """The stage-1 ablation over `seeds` seeds (config.seed, config.seed + 1, ...); writes and returns the summary:
    per arm and question type the mean accuracy and its standard error, and the paired difference (with - without
    stage 1) with its standard error."""
    if seeds < 2:
        raise ValueError(f"--ablation-seeds needs at least 2 seeds for a standard error, got {seeds}.")
    device = resolve_device(config.device)
    torch.set_num_threads(demo_threads(config))
    output_dir = Path(config.output_dir)
    per_seed = {}
    for seed in range(config.seed, config.seed + seeds):
        print(f"[ablation] seed {seed} ({seed - config.seed + 1}/{seeds}) ...", flush=True)
        seed_config = replace(config, seed=seed, output_dir=str(output_dir / f"seed_{seed}"))
        per_seed[seed] = run_seed(seed_config, device)
    with_arm, without_arm = ARMS
    question_types = list(per_seed[config.seed][with_arm])
    table = {}
    for question_type in question_types:
        row = {}
        for arm in ARMS:
            mean, error = mean_and_standard_error([per_seed[s][arm][question_type]["accuracy"] for s in per_seed])
            row[arm] = {"mean": mean, "standard_error": error}
        differences = [
            per_seed[s][with_arm][question_type]["accuracy"] - per_seed[s][without_arm][question_type]["accuracy"]
            for s in per_seed
        ]
        mean, error = mean_and_standard_error(differences)
        row["difference"] = {"mean": mean, "standard_error": error, "per_seed": differences}
        row["chance"] = per_seed[config.seed][with_arm][question_type]["chance"]
        table[question_type] = row
    summary = {"config": asdict(config), "seeds": list(per_seed), "per_seed": per_seed, "table": table}
    write_json(output_dir / "ablation.json", summary)
    return summary


def format_ablation(summary: dict) -> str:
    """The ablation table as text: accuracy per arm (mean ± standard error over seeds) and the paired difference."""
    with_arm, without_arm = ARMS
    seeds = summary["seeds"]
    lines = [
        "",
        "=" * 72,
        f"Stage-1 ablation, {len(seeds)} seeds ({', '.join(map(str, seeds))}); multiple-choice accuracy (%) on "
        "held-out images, mean ± standard error:",
        f"  {'type':<10} {'with stage 1':>16} {'without stage 1':>16} {'difference':>16}",
    ]
    for question_type, row in summary["table"].items():
        cells = [row[with_arm], row[without_arm], row["difference"]]
        lines.append(
            f"  {question_type:<10} "
            + " ".join(f"{cell['mean']:>9.1f} ± {cell['standard_error']:<4.1f}" for cell in cells)
        )
    lines += [f"results: {Path(summary['config']['output_dir']) / 'ablation.json'}", "=" * 72]
    return "\n".join(lines)


__all__ = ["ARMS", "format_ablation", "mean_and_standard_error", "run_ablation", "run_seed"]
