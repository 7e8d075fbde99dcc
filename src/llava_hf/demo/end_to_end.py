"""The whole LLaVA recipe at toy scale, one function: `run_demo(DemoArguments(...))`, behind `llava-hf demo`.

    world -> instruction data (datagen) -> tokenizer, vision tower, LLM (pretrain.py) -> stage 1 -> stage 2
          -> evaluation (multiple choice + LLaVA-Bench-style) -> Hub-ready folder + chat transcript -> report

Every LLaVA step goes through the library's own code: `llava_hf.datagen.run_generation` writes the instruction and
caption data, `llava_hf.data.load_llava_json` reads it, `llava_hf.training.train` runs both stages through TRL's
SFTTrainer, `llava_hf.evaluation.evaluate` answers and scores, `llava_hf.conversion.model_card` writes the card and
`pipeline("image-text-to-text")` loads the saved folder for the chat transcript.

Output folder (`output_dir`): `world/` (images + records), `data/` (generated JSON), `stage1/`, `stage2/` (trainer
outputs), `model/` (the Hub-ready checkpoint with README.md), `eval/` (predictions and results per task),
`report/` (report.md, plots, example images), `summary.json`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..utils.endpoints import JudgeEndpointArguments, TeacherEndpointArguments
from ..utils.io import atomic_write, staged_directory
from ..utils.loading import resolve_device
from .world import World, build_world

DEFAULT_OUTPUT_DIR = "llava_demo"
OPEN_ANSWER_TOKENS = 96  # generation budget of the free-form answers (evaluation and chat)


@dataclass
class DemoArguments(TeacherEndpointArguments, JudgeEndpointArguments):
    """Settings of `llava-hf demo`. The defaults are README command 1; docs/demo.md says what they and the
    alternatives below were measured to give."""

    output_dir: str = field(default=DEFAULT_OUTPUT_DIR, metadata={"help": "Folder for everything the demo writes."})
    seed: int = field(
        default=0, metadata={"help": "Seed of the world, the data and all training (same seed, same run)."}
    )
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:1, ... or auto (cuda when available)."})
    num_train_images: int = field(default=2000, metadata={"help": "Images of the train split."})
    num_test_images: int = field(default=150, metadata={"help": "Held-out images (evaluation only)."})
    image_size: int = field(
        default=48,
        metadata={
            "help": "Image side in pixels (the vision tower's resolution). 48 with 16 px patches: one patch per cell of "
            "the world's 3x3 grid (needed by --cell-loss-weight)."
        },
    )
    patch_size: int = field(
        default=16,
        metadata={
            "help": "Vision tower patch side in pixels. image_size = 3 x patch_size x k lays k x k patches over each "
            "cell of the world's 3x3 grid, so no patch straddles two shapes."
        },
    )
    max_objects: int = field(
        default=3, metadata={"help": "Most shapes per image (1 to 9; each image has 1 to this many)."}
    )
    skip_stage1: bool = field(
        default=False, metadata={"help": "Ablation: no stage-1 pretraining (the paper's 'no pretraining' row)."}
    )
    vision_feature_layer: int = field(
        default=-2, metadata={"help": "Vision hidden state fed to the projector: -2 (LLaVA, penultimate) or -1 (last)."}
    )
    clip_steps: int = field(default=500, metadata={"help": "Contrastive pretraining steps of the vision tower."})
    clip_batch_size: int = field(default=64, metadata={"help": "Image-caption pairs per contrastive step."})
    cell_loss_weight: float = field(
        default=3.0,
        metadata={
            "help": "Weight of an auxiliary per-cell loss added to the tower's contrastive one: linear heads on the "
            "penultimate-layer patch features of each 3x3 grid cell predict its shape and colour, and which cell each "
            "patch lies in. Without it, contrastive pretraining on the toy captions trains shape and place out of the "
            "features (docs/demo.md). Needs image_size / patch_size to be a multiple of 3; 0 turns it off."
        },
    )
    clip_contrastive: bool = field(
        default=True,
        metadata={"help": "Contrastive (CLIP) loss in the tower's pretraining; false: the per-cell loss only."},
    )
    pack_batches: bool = field(
        default=True,
        metadata={
            "help": "Padding-free batches in stages 1 and 2 (samples concatenated, one SDPA per sample): a batch "
            "mixing ~80-token multiple-choice rows with ~270-token conversations is not padded to its longest row."
        },
    )
    clip_hard_negatives: bool = field(
        default=False,
        metadata={
            "help": "NegCLIP hard negatives in the tower's pretraining: each caption also appears with one shape, "
            "colour or region word swapped (off by default: at the demo's step counts they do not help, docs/demo.md)."
        },
    )
    scene_pretraining: bool = field(
        default=True,
        metadata={
            "help": "Pretrain the LLM on text where each image is written in a scene notation, one word per grid cell "
            "saying what is in it, placed where LLaVA puts the image tokens: the LLM learns to answer from the scene, "
            "and LLaVA's stages learn to turn the image into it. false: the LLM's pretraining text has no image."
        },
    )
    language_model_steps: int = field(default=300, metadata={"help": "Text pretraining steps of the LLM."})
    language_model_batch_size: int = field(default=32, metadata={"help": "Texts per LLM pretraining step."})
    stage1_epochs: float = field(default=3.0, metadata={"help": "Stage-1 epochs over the caption data."})
    stage1_learning_rate: float = field(default=2e-3, metadata={"help": "Stage-1 (projector) learning rate."})
    stage2_epochs: float = field(default=1.0, metadata={"help": "Stage-2 epochs over the instruction data."})
    instruction_copies: int = field(
        default=2,
        metadata={
            "help": "Copies of the generated instructions in the stage-2 mix (each conversation rotated on its own "
            "with --vary-first-question), next to one copy of the multiple-choice questions: their free-form answers "
            "get more of the steps than the ~9,300 one-letter answers."
        },
    )
    vary_first_question: bool = field(
        default=True,
        metadata={
            "help": "In the stage-2 mix, start each generated conversation at a seeded random turn (its turns "
            "rotated), so every kind of question the teacher asks is also asked first, right after the image, as "
            "the held-out questions are; false: every conversation opens with the teacher's inventory question "
            "(the conversation answers then mix in other answers' forms, docs/demo.md)."
        },
    )
    stage2_learning_rate: float = field(default=1e-3, metadata={"help": "Stage-2 (projector + LLM) learning rate."})
    train_batch_size: int = field(
        default=16,
        metadata={
            "help": "Samples per optimizer step in stages 1 and 2 (16: twice the steps of 32 for the same samples, "
            "and faster per sample on a CPU)."
        },
    )
    micro_batch_size: int = field(
        default=16,
        metadata={
            "help": "Samples per forward pass (gradient accumulation makes up --train-batch-size). Below "
            "--train-batch-size, each step's samples are sorted by length into micro-batches, so short "
            "multiple-choice rows are not padded to the longest conversation."
        },
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of generation during evaluation."})
    max_open_questions_images: int = field(
        default=30, metadata={"help": "Held-out images for the LLaVA-Bench-style questions (3 questions each)."}
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads for torch in stages 1 and 2 and the evaluation; 0: one per core this process may use. "
            "With two or more, the two towers pretrain side by side, in two processes that share them. On a machine "
            "where other programs compete for the cores, 1: waiting threads then cost far more than they give."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    ablation_seeds: int = field(
        default=0,
        metadata={
            "help": "Instead of the demo, run the stage-1 ablation on this many seeds (--seed, --seed + 1, ...): per "
            "seed one world and one pair of towers, a model trained with and one without stage 1, both evaluated on "
            "the held-out multiple-choice questions; prints the paired difference with its standard error."
        },
    )

    def __post_init__(self):
        if self.vision_feature_layer not in (-1, -2):
            raise ValueError(
                f"--vision-feature-layer must be -2 (LLaVA) or -1 (the ablation), got {self.vision_feature_layer}."
            )
        if (self.teacher_base_url is None) != (self.teacher_model is None):
            raise ValueError(
                "--teacher-base-url and --teacher-model go together (the endpoint and the model it serves)."
            )
        if (self.judge_base_url is None) != (self.judge_model is None):
            raise ValueError("--judge-base-url and --judge-model go together (the endpoint and the model it serves).")
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(
                f"--image-size must be a multiple of --patch-size, got {self.image_size} and {self.patch_size}."
            )
        if self.cell_loss_weight > 0 and (self.image_size // self.patch_size) % 3:
            raise ValueError(
                f"--cell-loss-weight needs image_size / patch_size to be a multiple of 3 (patches aligned to the 3x3 "
                f"cells), got {self.image_size} / {self.patch_size}; or pass --cell-loss-weight 0."
            )
        if self.cell_loss_weight < 0 or (self.cell_loss_weight == 0 and not self.clip_contrastive):
            raise ValueError("--cell-loss-weight must be >= 0, and > 0 with --clip-contrastive false (no tower loss).")
        if self.ablation_seeds == 1 or self.ablation_seeds < 0:
            raise ValueError(f"--ablation-seeds needs at least 2 seeds (or 0: no ablation), got {self.ablation_seeds}.")
        if self.micro_batch_size < 1 or self.train_batch_size % self.micro_batch_size:
            raise ValueError(
                f"--train-batch-size ({self.train_batch_size}) must be a multiple of --micro-batch-size "
                f"({self.micro_batch_size})."
            )
        if self.instruction_copies < 1:
            raise ValueError(f"--instruction-copies must be at least 1, got {self.instruction_copies}.")
        if self.threads < 0:
            raise ValueError(f"--threads must be 0 (one per core) or more, got {self.threads}.")
        if self.num_train_images < self.train_batch_size or self.num_test_images < 1:
            raise ValueError(
                f"need at least --train-batch-size ({self.train_batch_size}) train images and 1 test image; got "
                f"{self.num_train_images} and {self.num_test_images}."
            )


class Steps:
    """Prints one line per pipeline step with its wall time, and keeps the timings for the summary."""

    def __init__(self, total: int):
        self.total, self.index, self.timings, self.cpu_timings = total, 0, {}, {}

    def run(self, name: str, function, *args, **kwargs):
        self.index += 1
        print(f"[{self.index}/{self.total}] {name} ...", flush=True)
        started, cpu_started = time.monotonic(), _cpu_seconds()
        result = function(*args, **kwargs)
        self.timings[name] = round(time.monotonic() - started, 1)
        self.cpu_timings[name] = round(_cpu_seconds() - cpu_started, 1)
        print(f"[{self.index}/{self.total}] {name}: done in {self.timings[name]:.1f}s", flush=True)
        return result


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished worker processes (the vision tower's pretraining)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


# ---------------------------------------------------------------------------------------------------------------------
# Steps


def make_world(config: DemoArguments, folder: Path) -> World:
    """The shapes world of `config` (its sizes, seed, image size and objects per image) written into `folder`."""
    return build_world(
        folder,
        config.num_train_images,
        config.num_test_images,
        seed=config.seed,
        image_size=config.image_size,
        max_objects=config.max_objects,
    )


def generate_data(config: DemoArguments, world: World, data_dir: Path, seed: int) -> dict[str, Path]:
    """Instruction data (conversation / detail / complex) and stage-1 caption data from the train annotations via the
    data-generation pipeline, plus ScienceQA-format multiple-choice training questions about the train images."""
    from ..datagen.pipeline import GenerateDataArguments, run_generation
    from .questions import multiple_choice, multiple_choice_records

    teacher = (
        {
            "teacher": "openai",
            "teacher_base_url": config.teacher_base_url,
            "teacher_model": config.teacher_model,
            "teacher_api_key_env": config.teacher_api_key_env,
        }
        if config.teacher_base_url
        else {"teacher": "rule-based"}
    )
    summary = run_generation(
        GenerateDataArguments(
            output_dir=str(data_dir / "generated"), input=str(world.records_path("train")), seed=seed, **teacher
        ),
        progress=config.progress,
    )
    if summary["pending"] or summary["gave_up"]:
        print(
            f"  data generation: {summary['gave_up']} gave up, {summary['pending']} pending; rejects {summary['rejects']}"
        )
    records = multiple_choice_records(multiple_choice(world, "train", every_object=True), world)
    multiple_choice_path = data_dir / "multiple_choice_train.json"
    write_json(multiple_choice_path, records)
    return {
        "caption": data_dir / "generated" / "llava_caption.json",
        "instruct": data_dir / "generated" / "llava_instruct.json",
        "multiple_choice": multiple_choice_path,
        "summary": summary,
    }


def build_towers(config: DemoArguments, world: World, data: dict, device: str):
    """Tokenizer, CLIP vision tower and Llama LLM pretrained on the train split; returns them and their loss curves."""
    from transformers import CLIPModel

    from ..processing import build_image_processor
    from ..processing.template_rendering import VICUNA_V1_SYSTEM
    from .pretrain import (
        TowerSizes,
        cell_labels,
        language_model_texts,
        pretrain_clip,
        pretrain_language_model,
        scene_text,
        train_tokenizer,
    )

    sizes = TowerSizes(image_size=config.image_size, patch_size=config.patch_size)
    train_images = world.splits["train"]
    captions = [caption for world_image in train_images for caption in world_image.captions]
    instruct = json.loads(data["instruct"].read_text())
    multiple_choice = json.loads(data["multiple_choice"].read_text())
    turns = [
        turn["value"].replace("<image>", "").strip()
        for record in instruct + multiple_choice
        for turn in record["conversations"]
    ]
    # The template's fixed text appears in every sample: repeating it lets BPE give its words single tokens.
    template_text = [f"{VICUNA_V1_SYSTEM} USER: ASSISTANT:"] * 200
    tokenizer = train_tokenizer(captions + turns + template_text, sizes.vocab_size)

    scenes = None
    if config.scene_pretraining:
        grid = config.image_size // config.patch_size
        scenes = {world_image.image: scene_text(world_image, grid) for world_image in train_images}
    image_captions = [(world_image.image, caption) for world_image in train_images for caption in world_image.captions]
    # The two towers are independent: on a CPU with a thread to spare, the vision tower trains in a second process
    # while the LLM trains here, each with half the threads (on two cores, one each: for models this small that beats
    # one tower after the other with two threads each).
    threads = demo_threads(config)
    parallel = device == "cpu" and threads >= 2
    tower_threads = max(1, threads // 2) if parallel else threads
    image_processor = build_image_processor(config.image_size, "pad")
    pixel_values = image_processor([world.open(image) for image in train_images], return_tensors="pt")["pixel_values"]
    clip_arguments = dict(
        pixel_values=pixel_values,
        captions=[list(image.captions) for image in train_images],
        tokenizer=tokenizer,
        sizes=sizes,
        steps=config.clip_steps,
        batch_size=config.clip_batch_size,
        seed=config.seed,
        device=device,
        progress=config.progress and not parallel,
        hard_negatives=config.clip_hard_negatives,
        cell_labels=cell_labels(train_images),
        cell_loss_weight=config.cell_loss_weight,
        contrastive=config.clip_contrastive,
    )
    # The LLM's text: the captions and the short multiple-choice chats. The long generated conversations stay out:
    # with them in the mix, 300 steps teach the LLM none of the question types from the scene notation (chance on
    # all four), without them it answers 60% from it (docs/demo.md).
    language_arguments = dict(
        texts=language_model_texts(multiple_choice, image_captions, tokenizer, scenes),
        tokenizer=tokenizer,
        sizes=sizes,
        steps=config.language_model_steps,
        batch_size=config.language_model_batch_size,
        seed=config.seed,
        device=device,
        progress=config.progress,
    )
    if parallel:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            clip_job = pool.submit(pretrain_clip_weights, tower_threads, **clip_arguments)
            (language_model, language_losses), language_seconds = _timed(
                tower_threads, pretrain_language_model, **language_arguments
            )
            clip_config, clip_weights, clip_losses, clip_seconds = clip_job.result()
        clip = CLIPModel(clip_config)
        clip.load_state_dict(clip_weights)
    else:
        (language_model, language_losses), language_seconds = _timed(
            tower_threads, pretrain_language_model, **language_arguments
        )
        (clip, clip_losses), clip_seconds = _timed(tower_threads, pretrain_clip, **clip_arguments)
    step_seconds = {
        "language model": language_seconds / max(1, len(language_losses)),
        "vision tower (CLIP)": clip_seconds / max(1, len(clip_losses)),
    }
    losses = {"language model": language_losses, "vision tower (CLIP)": clip_losses}
    return tokenizer, clip, language_model, losses, step_seconds


def demo_threads(config: DemoArguments) -> int:
    """Torch threads of the stages and the evaluation: `config.threads`, or with 0 one per core this process may
    use. Two threads make a stage-2 step of the defaults 1.36x faster than one on a 2-core machine
    (benchmarks/RESULTS_demo.md)."""
    if config.threads > 0:
        return config.threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pretrain_clip_weights(threads: int, **arguments):
    """`pretrain_clip` in a worker process: the tower comes back as config + weights (a model object holds hooks
    that do not pickle)."""
    from .pretrain import pretrain_clip

    (clip, losses), seconds = _timed(threads, pretrain_clip, **arguments)
    return clip.config, clip.state_dict(), losses, seconds


def _timed(threads: int, function, **arguments):
    """`function(**arguments)` with `threads` torch threads, and its wall seconds (also in a worker process); the
    process's thread count is restored afterwards (the stages after the towers use all of them)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.monotonic()
    try:
        return function(**arguments), time.monotonic() - started
    finally:
        torch.set_num_threads(before)


def train_stage(
    stage: str, config: DemoArguments, model, processor, rows, output_dir: Path, device: str
) -> tuple[list[tuple[int, float]], float]:
    """One LLaVA stage through `llava_hf.training.train` (TRL SFTTrainer); returns the logged (step, loss) pairs and
    the seconds per optimizer step.

    With `micro_batch_size` below `train_batch_size`, each optimizer step's samples are sorted by length into
    micro-batches (LLaVA-1.5's `group_by_modality_length` with gradient accumulation): in one random batch of the stage-2 mix, short multiple-choice rows would be padded
    to the longest multi-turn conversation, and most of the compute would go to padding."""
    from trl import SFTConfig

    from ..training import LlavaRunArguments, train

    stage_one = stage == "pretrain"
    args = SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.train_batch_size // config.micro_batch_size,
        num_train_epochs=config.stage1_epochs if stage_one else config.stage2_epochs,
        learning_rate=config.stage1_learning_rate if stage_one else config.stage2_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,  # a float below 1 is a fraction of the steps (LLaVA: warmup ratio 0.03)
        weight_decay=0.0,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device == "cpu",
        bf16=False,
        activation_checkpointing=False,  # TRL turns it on by default
        max_length=None,
        dataloader_num_workers=0,
        disable_tqdm=not config.progress,
    )
    run = LlavaRunArguments(
        stage=stage,
        group_by_modality_length=config.micro_batch_size < config.train_batch_size,
        pack_batches=config.pack_batches,
    )
    trainer = train(run, args, model=model, processor=processor, train_dataset=rows)
    history = trainer.state.log_history
    runtime = next(entry["train_runtime"] for entry in reversed(history) if "train_runtime" in entry)
    curve = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    return curve, runtime / max(1, trainer.state.global_step)


def evaluate_model(
    config: DemoArguments, world: World, model, processor, eval_dir: Path, open_questions_too: bool = True
) -> dict:
    """Multiple choice on every held-out image and (`open_questions_too`) the LLaVA-Bench-style questions on the
    first `max_open_questions_images`; returns the results dict of each task by name."""
    from ..evaluation import Task, evaluate, llava_bench, scienceqa
    from .object_check import answer_checks
    from .questions import accuracy_by_type, multiple_choice, open_questions, rule_judge_score

    def multiple_choice_score(outcomes):
        results = scienceqa.score(outcomes)
        by_type = accuracy_by_type(outcomes)
        results["by_question_type"] = by_type
        results["metrics"] = {f"accuracy/{name}": row["accuracy"] for name, row in by_type.items()}
        results["table"] = {
            "columns": ["question type", "correct", "total", "accuracy (%)", "chance (%)"],
            "rows": [
                [name, row["correct"], row["total"], row["accuracy"], row["chance"]] for name, row in by_type.items()
            ],
        }
        return results

    choice_task = Task(
        name="shapes_multiple_choice",
        examples=multiple_choice(world, "test"),
        score=multiple_choice_score,
        parse=lambda text, example: scienceqa.parse_choice(text, example.metadata["choices"]),
        max_new_tokens=4,
        dataset_type="llava_hf-shapes-world",
        dataset_name="Shapes world multiple choice (ScienceQA format, held-out images)",
        dataset_split="test",
    )
    open_examples = open_questions(world, "test")[: 3 * config.max_open_questions_images]
    if config.judge_base_url:
        settings = llava_bench.JudgeArguments(**vars(config.judge_endpoint()))
        open_task = llava_bench.build_task(
            examples=open_examples, judge_settings=settings, cache_path=eval_dir / "judgments.jsonl", variant="shapes"
        )
    else:
        open_task = Task(
            name="llava_bench_shapes",
            examples=open_examples,
            score=rule_judge_score,
            dataset_type="llava_hf-shapes-world",
            dataset_name="Shapes world LLaVA-Bench-style questions (rule-based judge, held-out images)",
            dataset_split="test",
        )
    # Room for the longest reference (a three-object description is up to ~85 tokens) in the evaluation and the chat.
    open_task.max_new_tokens = OPEN_ANSWER_TOKENS
    judge_score = open_task.score
    # The object checker and the repetition count ride along with whichever judge scores the task.
    open_task.score = lambda outcomes: {**judge_score(outcomes), "answer_checks": answer_checks(outcomes)}
    model.eval()
    results = {}
    for task in (choice_task, open_task) if open_questions_too else (choice_task,):
        results[task.name] = evaluate(
            task,
            model,
            processor,
            output_dir=eval_dir / task.name,
            batch_size=config.eval_batch_size,
            model_id="llava_hf demo",
            progress=config.progress,
        )
    return results


def chat_transcript(model_dir: Path, world: World, device: str, seed: int) -> list[dict]:
    """A short multi-turn chat about one held-out image, through `pipeline("image-text-to-text")` on the saved
    folder (which is the proof that the folder loads like any Hub checkpoint: it is transformers' built-in llava
    format, so the pipeline builds transformers' own classes, as it does where llava_hf is not installed)."""
    from transformers import pipeline

    chat = pipeline("image-text-to-text", model=str(model_dir), device=device)
    world_image = world.splits["test"][random.Random(seed).randrange(len(world.splits["test"]))]
    image = world.open(world_image)
    questions = [
        "What kinds of objects can be seen in the image?",
        "How many shapes are there in the image?",
        "Describe this image in detail.",
    ]
    messages, transcript = [], []
    for index, question in enumerate(questions):
        content = ([{"type": "image", "image": image}] if index == 0 else []) + [{"type": "text", "text": question}]
        messages.append({"role": "user", "content": content})
        output = chat(
            text=messages,
            max_new_tokens=OPEN_ANSWER_TOKENS,
            return_full_text=False,
            generate_kwargs={"do_sample": False},
        )
        answer = output[0]["generated_text"].strip()
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        transcript.append({"question": question, "answer": answer})
    return [{"image": world_image.image, "image_id": world_image.id, "annotations": world_image.record()}] + transcript


def save_model(model, processor, model_dir: Path, config: DemoArguments, results: dict, timings: dict) -> None:
    """The Hub-ready folder: weights + config + processor + a model card with the demo's evaluation table."""
    from ..conversion.model_card import render_model_card
    from ..evaluation import add_results_to_model_card

    with staged_directory(model_dir, replace=True) as temporary:
        model.save_pretrained(temporary)
        processor.save_pretrained(temporary)
        choice = results["shapes_multiple_choice"]["by_question_type"]
        evaluation = [
            {
                "benchmark": f"shapes world multiple choice, {name} (chance {row['chance']:.0f}%)",
                "score": f"{row['accuracy']:.1f}%",
            }
            for name, row in choice.items()
        ]
        bench_name = next(name for name in results if name.startswith("llava_bench"))
        for category, value in results[bench_name]["metrics"].items():
            evaluation.append(
                {
                    "benchmark": f"LLaVA-Bench-style relative score, {category} ({_judge_label(config)})",
                    "score": f"{value:.1f}",
                }
            )
        stages = [
            {
                "name": "stage 1 (feature alignment)",
                "data": "shapes-world captions",
                "trainable": "projector",
                "ran": "no (--skip-stage1 ablation)" if config.skip_stage1 else "yes",
            },
            {
                "name": "stage 2 (instruction tuning)",
                "data": "generated instructions + multiple choice (train images)",
                "trainable": "projector + LLM",
                "ran": "yes",
            },
        ]
        card = render_model_card(
            repo_id=str(model_dir),
            title="llava_hf demo: LLaVA on the shapes world",
            datasets=["llava_hf shapes world (synthetic, generated by `llava-hf demo`)"],
            stages=stages,
            evaluation=evaluation,
            evaluation_source=f"measured by `llava-hf demo` (seed {config.seed}) on held-out synthetic images",
        )
        (temporary / "README.md").write_text(card)
        add_results_to_model_card(temporary / "README.md", list(results.values()), "llava_hf demo")


def stage2_rows(config: DemoArguments, world: World, data: dict, data_dir: Path):
    """The stage-2 mix (`instruction_copies` copies of the generated instructions + the multiple-choice training
    questions, shuffled), written as one LLaVA JSON and loaded as training rows."""
    from ..data import load_llava_json

    generated = json.loads(data["instruct"].read_text())
    instructions = [
        record if copy == 0 else {**record, "id": f"{record['id']}_copy{copy}"}
        for copy in range(config.instruction_copies)
        for record in generated
    ]
    if config.vary_first_question:
        rotation = random.Random(f"{config.seed}-first-question")
        instructions = [rotate_turns(record, rotation) for record in instructions]
    instructions += json.loads(data["multiple_choice"].read_text())
    random.Random(config.seed).shuffle(instructions)
    stage2_path = data_dir / "stage2_mix.json"
    write_json(stage2_path, instructions)
    return load_llava_json(stage2_path, world.folder)


def rotate_turns(record: dict, rng: random.Random) -> dict:
    """`record` with its (question, answer) pairs rotated to start at a random one, the image placeholder moved to
    the new first question. The teacher's turns do not refer to each other, so any order is a true conversation."""
    turns = record["conversations"]
    pairs = [turns[index : index + 2] for index in range(0, len(turns), 2)]
    start = rng.randrange(len(pairs))
    if start == 0:
        return record
    pairs = pairs[start:] + pairs[:start]
    rotated = [dict(turn) for pair in pairs for turn in pair]
    for turn in rotated:
        if turn["from"] == "human":
            turn["value"] = turn["value"].replace("<image>\n", "").replace("<image>", "").strip()
    rotated[0]["value"] = "<image>\n" + rotated[0]["value"]
    return {**record, "conversations": rotated}


def _judge_label(config: DemoArguments) -> str:
    return f"LLM judge {config.judge_model}" if config.judge_base_url else "rule-based judge"


def write_json(path: Path, value) -> None:
    atomic_write(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# The run


def run_demo(config: DemoArguments) -> dict:
    """Run the whole recipe into `config.output_dir` and return the summary (also written to summary.json)."""
    import torch
    from transformers import set_seed

    from ..data import load_llava_json
    from .pretrain import assemble
    from .report import write_report

    device = resolve_device(config.device)
    torch.set_num_threads(demo_threads(config))
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    started = time.monotonic()
    steps = Steps(total=9)

    world = steps.run("shapes world", make_world, config, output_dir / "world")
    data = steps.run("instruction data (datagen)", generate_data, config, world, output_dir / "data", config.seed)
    tokenizer, clip, language_model, pretrain_losses, step_seconds = steps.run(
        "tokenizer + pretrained towers", build_towers, config, world, data, device
    )
    model, processor = assemble(clip, language_model, tokenizer, config.vision_feature_layer, seed=config.seed)

    curves = {f"pretrain: {name}": list(enumerate(losses, start=1)) for name, losses in pretrain_losses.items()}
    step_seconds = {f"pretrain: {name}": seconds for name, seconds in step_seconds.items()}
    if config.skip_stage1:
        steps.run("stage 1 skipped (--skip-stage1)", lambda: None)
    else:
        captions = load_llava_json(data["caption"], world.folder)
        curves["stage 1 (projector)"], step_seconds["stage 1 (projector)"] = steps.run(
            "stage 1: feature alignment",
            train_stage,
            "pretrain",
            config,
            model,
            processor,
            captions,
            output_dir / "stage1",
            device,
        )
    rows = stage2_rows(config, world, data, output_dir / "data")
    curves["stage 2 (projector + LLM)"], step_seconds["stage 2 (projector + LLM)"] = steps.run(
        "stage 2: instruction tuning",
        train_stage,
        "finetune",
        config,
        model,
        processor,
        rows,
        output_dir / "stage2",
        device,
    )
    model.to(device)
    results = steps.run(
        "evaluation on held-out images", evaluate_model, config, world, model, processor, output_dir / "eval"
    )
    model_dir = output_dir / "model"
    steps.run("save Hub-ready folder", save_model, model.cpu(), processor, model_dir, config, results, steps.timings)
    transcript = steps.run("chat transcript (pipeline)", chat_transcript, model_dir, world, device, config.seed)
    bench_name = next(name for name in results if name.startswith("llava_bench"))

    summary = {
        "config": asdict(config),
        "device": device,
        "timings_seconds": steps.timings,
        "cpu_seconds": steps.cpu_timings,
        "seconds_per_training_step": {name: round(seconds, 3) for name, seconds in step_seconds.items()},
        "total_seconds": round(time.monotonic() - started, 1),
        "data": {
            key: value
            for key, value in data["summary"].items()
            if key in ("images", "records", "caption_records", "rejects")
        },
        "multiple_choice": results["shapes_multiple_choice"]["by_question_type"],
        "llava_bench": {"judge": _judge_label(config), **results[bench_name]["metrics"]},
        "answer_checks": results[bench_name]["answer_checks"],
        "chat": transcript,
        "model_dir": str(model_dir),
    }
    steps.run("report", write_report, output_dir / "report", summary, curves, world, output_dir / "eval")
    write_json(output_dir / "summary.json", summary)
    return summary


__all__ = [
    "DemoArguments",
    "demo_threads",
    "make_world",
    "pretrain_clip_weights",
    "resolve_device",
    "run_demo",
    "stage2_rows",
]
