# python examples/release_checkpoints.py --org YOUR_ORG                                  (convert, verify, upload all)
# python examples/release_checkpoints.py --org YOUR_ORG --push_to_folder releases --models llava-v1.5-7b  (no upload)
"""Convert the published LLaVA checkpoints to llava_hf, verify them, fill their model cards and push them.

For each release in RELEASES: `llava-hf convert --verify` from the Hub repo id (the weights and the CLIP tower named
by `mm_vision_tower` come through snapshot_download), a model card with the conversion provenance, the verification
result, the license and the evaluation numbers the original authors published (the original `docs/Evaluation.md` and `llava/eval/`; labelled as theirs, not
re-measured here), then an upload to `ORG/NAME` — or, with `--push_to_folder DIR`, the very same files written to
`DIR/NAME` (nothing is uploaded). A failed release leaves nothing behind and the others still run; the exit status
is 1 if any failed.

The v1 entry is `liuhaotian/llava-llama-2-13b-chat-lightning-preview`: a full (non-delta, non-LoRA) LLaVA v1
checkpoint with the linear projector, 224 px "square" images and the `llava_llama_2` prompt. The other v1 releases
are deltas over LLaMA-1 (LLaVA-*-delta-v1-1) or built on LLaMA-1-based Vicuna-v1.3; to release one of those, add an
entry to RELEASES (its card facts live there). `--sources NAME=REPO_OR_FOLDER` reads an entry's checkpoint from a
mirror or a local copy of the same checkpoint.

Needs: network access and a Hub token with write access to ORG (`hf auth login` or HF_TOKEN), `pip install
llava_hf[conversion]` (SentencePiece tokenizers), disk for the downloads plus the converted copy (about 2x the
checkpoint), and RAM for `--verify`, which runs the original computation and the converted model in float32 (about
10 bytes per parameter: ~75 GB for 7B, ~140 GB for 13B; `--no_verify` skips it and the card then says so).
"""

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from llava_hf.conversion import ConversionError, ConvertArguments, convert_checkpoint
from llava_hf.conversion.hub import prepare_for_hub, push_to_hub

LLAVA_15_PAPER = "Liu, Li, Li, Lee: Improved Baselines with Visual Instruction Tuning (LLaVA-1.5), arXiv 2310.03744"
AUTHORS_NUMBERS = (
    f"published by the original authors ({LLAVA_15_PAPER}), copied here as reported and not re-measured on this "
    "conversion"
)
MEASURED_BY = "original authors (LLaVA-1.5 paper)"
LLAVA_15_BENCHMARKS = [
    "VQAv2",
    "GQA",
    "VizWiz",
    "SQA-IMG",
    "TextVQA",
    "POPE",
    "MME",
    "MMBench",
    "SEED",
    "LLaVA-W",
    "MM-Vet",
]
# the original `docs/Evaluation.md` and `llava/eval/`, in the order of LLAVA_15_BENCHMARKS
LLAVA_15_SCORES = {
    "7b": [78.5, 62.0, 50.0, 66.8, 58.2, 85.9, 1510.7, 64.3, 58.6, 65.4, 31.1],
    "13b": [80.0, 63.3, 53.6, 71.6, 61.3, 85.9, 1531.3, 67.7, 61.6, 72.5, 36.1],
}
# the original `scripts/v1_5/pretrain.sh`, `finetune.sh`, `finetune_lora.sh`, `scripts/finetune_qlora.sh`: the LLaVA-1.5 recipe
LLAVA_15_STAGES = [
    {"stage": "1 (pretrain)", "data": "LCS-558K", "trainable": "projector", "global batch": 256, "LR": "1e-3",
     "epochs": 1, "template": "plain"},
    {"stage": "2 (instruction tuning)", "data": "llava_v1_5_mix665k", "trainable": "projector + LLM",
     "global batch": 128, "LR": "2e-5", "epochs": 1, "template": "vicuna_v1"},
]  # fmt: skip
LLAVA_DATASETS = ["liuhaotian/LLaVA-Pretrain", "liuhaotian/LLaVA-Instruct-150K"]


@dataclass
class Release:
    """One published checkpoint and the card facts that are not in its files."""

    source: str
    chat_template: str
    summary: str
    language_model: str
    vision_tower: str
    stages: list[dict]
    license: str = "llama2"
    evaluation: list[dict] = field(default_factory=list)


def llava_15(size: str) -> Release:
    return Release(
        source=f"liuhaotian/llava-v1.5-{size}",
        chat_template="vicuna_v1",
        summary=(
            f"LLaVA-1.5-{size.upper()} (Liu et al. 2023), converted from the original release "
            f"`liuhaotian/llava-v1.5-{size}` to the llava_hf format: CLIP ViT-L/14 at 336 px, a two-layer MLP "
            f"projector and Vicuna-{size.upper()} v1.5."
        ),
        language_model=f"lmsys/vicuna-{size}-v1.5",
        vision_tower="openai/clip-vit-large-patch14-336",
        stages=LLAVA_15_STAGES,
        evaluation=[
            {"benchmark": name, "score": score, "measured_by": MEASURED_BY}
            for name, score in zip(LLAVA_15_BENCHMARKS, LLAVA_15_SCORES[size], strict=True)
        ],
    )


RELEASES = {
    "llava-v1.5-7b": llava_15("7b"),
    "llava-v1.5-13b": llava_15("13b"),
    "llava-v1-llama-2-13b-chat": Release(
        source="liuhaotian/llava-llama-2-13b-chat-lightning-preview",
        chat_template="llava_llama_2",
        summary=(
            "LLaVA v1 on LLaMA-2-13B-Chat (the July 2023 release), converted from "
            "`liuhaotian/llava-llama-2-13b-chat-lightning-preview` to the llava_hf format: CLIP ViT-L/14 at 224 px, "
            "a linear projector and LLaMA-2-13B-Chat."
        ),
        language_model="meta-llama/Llama-2-13b-chat-hf",
        vision_tower="openai/clip-vit-large-patch14",
        stages=[
            {"stage": "1 (pretrain)", "data": "LCS-558K", "trainable": "projector", "epochs": 1},
            {
                "stage": "2 (instruction tuning)",
                "data": "LLaVA-Instruct-80K",
                "trainable": "projector + LLM",
                "epochs": 1,
            },
        ],  # fmt: skip
        # the original `docs/Evaluation.md` and `llava/eval/` has no numbers for this checkpoint, so its card records none.
    ),
}


@dataclass
class ReleaseArguments:
    """Options of examples/release_checkpoints.py."""

    org: str = field(metadata={"help": "Hub organisation (or user): the releases become ORG/NAME."})
    push_to_folder: str | None = field(
        default=None,
        metadata={"help": "Write each release to DIR/NAME (the files an upload would send) instead of uploading."},
    )
    models: list[str] = field(
        default_factory=lambda: list(RELEASES), metadata={"help": f"Which releases (default all): {list(RELEASES)}."}
    )
    sources: list[str] = field(
        default_factory=list,
        metadata={"help": "NAME=REPO_OR_FOLDER: read NAME's checkpoint from a mirror repo or a local copy."},
    )
    verify: bool = field(
        default=True, metadata={"help": "Check logits against the original computation (see RAM above)."}
    )
    tolerance: float = field(default=1e-3, metadata={"help": "Largest accepted max |Δlogit| of the verification."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repos as private."})
    work_dir: str | None = field(
        default=None, metadata={"help": "Where converted copies wait for upload (default: a temporary folder)."}
    )


def card_fields(name: str, release: Release, source: str, result) -> dict:
    return {
        "title": name,
        "summary": release.summary,
        # the Hub's model tree links the release to the repo it was converted from (a Hub download records its commit)
        "base_models": [source] if "source_revision" in result.provenance else [],
        "datasets": LLAVA_DATASETS,
        "stages": release.stages,
        "evaluation": release.evaluation,
        "evaluation_source": AUTHORS_NUMBERS if release.evaluation else None,
        "license_name": release.license,
        "vision_tower": release.vision_tower,
        "language_model": release.language_model,
        "provenance": result.provenance,
        "verification": result.verification,
    }


def release_one(name: str, release: Release, source: str, arguments: ReleaseArguments, work_dir: Path) -> str:
    """Convert, verify, fill the card and push one release; returns where it went."""
    repo_id = f"{arguments.org}/{name}"
    if arguments.push_to_folder:
        destination = Path(arguments.push_to_folder) / name
        if destination.exists():
            raise ConversionError(f"{destination} already exists; remove it or leave {name} out of --models.")
        work_dir = destination.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.release-", dir=work_dir))
    try:
        converted = staging / name
        convert_arguments = ConvertArguments(
            chat_template=release.chat_template, verify=arguments.verify, tolerance=arguments.tolerance
        )
        result = convert_checkpoint(source, converted, convert_arguments)
        if result.verification is not None:
            check = result.verification
            print(
                f"{name}: verified, max |Δlogit| = {check['max_abs_logit_diff']:.3g}, greedy tokens agree: "
                f"{check['greedy_agree']}, token ids identical: {check['token_ids_identical']}"
            )
        fields = card_fields(name, release, source, result)
        if arguments.push_to_folder:
            prepare_for_hub(converted, repo_id, **fields)
            os.replace(converted, destination)
            return str(destination)
        return push_to_hub(
            converted,
            repo_id,
            private=arguments.private,
            commit_message=f"{name}: converted from {source} with llava_hf",
            **fields,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parse_sources(pairs: list[str]) -> dict[str, str]:
    sources = {}
    for pair in pairs:
        name, separator, source = pair.partition("=")
        if not separator or name not in RELEASES or not source:
            raise SystemExit(f"--sources {pair!r}: expected NAME=REPO_OR_FOLDER with NAME one of {list(RELEASES)}.")
        sources[name] = source
    return sources


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(ReleaseArguments, description=__doc__.split("\n\n")[0])
    (arguments,) = parser.parse_args_into_dataclasses(args=argv)
    unknown = [name for name in arguments.models if name not in RELEASES]
    if unknown:
        print(f"unknown release(s) {unknown}; choose from {list(RELEASES)}.", file=sys.stderr)
        return 2
    sources = parse_sources(arguments.sources)
    if arguments.push_to_folder:
        Path(arguments.push_to_folder).mkdir(parents=True, exist_ok=True)
    work_dir = Path(arguments.work_dir or tempfile.gettempdir())
    work_dir.mkdir(parents=True, exist_ok=True)

    failures = []
    for name in arguments.models:
        release = RELEASES[name]
        source = sources.get(name, release.source)
        print(f"{name}: converting {source}")
        try:
            where = release_one(name, release, source, arguments, work_dir)
        except ConversionError as error:
            print(f"{name}: FAILED: {error}", file=sys.stderr)
            failures.append(name)
            continue
        print(f"{name}: released to {where}")
    if failures:
        print(f"failed: {failures}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
