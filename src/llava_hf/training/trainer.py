"""Train one LLaVA stage through TRL's `SFTTrainer`: run settings, the trainer with per-component learning rates, and
the `train()` entry point behind `llava-hf train`.

    from llava_hf.training import LlavaRunArguments, train
    from trl import SFTConfig
    trainer = train(LlavaRunArguments(stage="finetune"), SFTConfig(output_dir="out"), model, processor, rows)

What this adds to TRL 1.16's SFTTrainer: the model instance, our processor and our masking collator are
passed in; the raw rows go straight to the collator (`skip_prepare_dataset`, `remove_unused_columns=False`) because
TRL refuses assistant-only loss, packing and padding-free for vision data; the data is checked before training.
"""

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch
from trl import SFTConfig, SFTTrainer

from ..data import LlavaCollator, load_rows
from ..data.check import preflight
from ..processing import resolve_chat_template
from ..utils.loading import load_checkpoint
from ..utils.loading import load_processor as load_checkpoint_processor
from .arguments import STAGES, LlavaRunArguments
from .recipes import (
    PROJECTOR_FILE,
    build_from_parts,
    build_processor_from_parts,
    load_projector,
    lora_config,
    parameter_groups,
    qlora_quantization_config,
    save_projector,
    set_trainable,
    trainable_counts,
    unfreeze_vision_layers,
)
from .sampler import ModalityLengthGroupedSampler, estimate_lengths

logger = logging.getLogger(__name__)

RUN_ARGUMENTS_FILE = "llava_run_arguments.json"  # the run's LlavaRunArguments, next to every stage's output


class LlavaSFTTrainer(SFTTrainer):
    """SFTTrainer whose optimizer has one parameter group per LLaVA component, each with its own learning rate, and
    which can batch by modality and length.

    `learning_rates` maps `vision_tower` / `multi_modal_projector` / `language_model` to an LR (None: `learning_rate`).
    Overriding `create_optimizer` (rather than passing `optimizers=`) keeps `optim`, DeepSpeed and FSDP working.
    `group_by_modality_length=True` trains with `ModalityLengthGroupedSampler` (rows of the library's schema only):
    transformers' own `group_by_length` has no lengths to use, because the raw rows reach the collator untokenized.
    `modality_lengths` (each row's length and whether it has images) are the preflight check's exact lengths;
    without them (or when they do not cover the dataset) they are estimated (`estimate_lengths`).
    """

    def __init__(
        self,
        *args,
        learning_rates: dict[str, float | None] | None = None,
        group_by_modality_length: bool = False,
        modality_lengths: tuple[list[int], list[bool]] | None = None,
        **kwargs,
    ):
        self.learning_rates = learning_rates or {}
        self.group_by_modality_length = group_by_modality_length
        self.modality_lengths = modality_lengths
        super().__init__(*args, **kwargs)
        if group_by_modality_length and self.args.train_sampling_strategy != "random":
            raise ValueError(
                f"group_by_modality_length replaces train_sampling_strategy={self.args.train_sampling_strategy!r}; "
                "use one of them (leave train_sampling_strategy at 'random')."
            )

    def _get_train_sampler(self, train_dataset=None):
        if not self.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        train_dataset = self.train_dataset if train_dataset is None else train_dataset
        processor = self.processing_class
        if not hasattr(processor, "image_seq_length"):
            raise ValueError(
                f"group_by_modality_length needs a LlavaHfProcessor (tokenizer + image_seq_length) as the "
                f"processing_class, got {type(processor).__name__}."
            )
        lengths, has_image = self.modality_lengths or (None, None)
        if lengths is None or len(lengths) != len(train_dataset) or min(lengths, default=0) < 0:
            lengths, has_image = estimate_lengths(train_dataset, processor.tokenizer, processor.image_seq_length)
        # One optimizer step's samples, as the original (`world_size * gradient_accumulation_steps` batches).
        megabatch_size = self._train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ModalityLengthGroupedSampler(lengths, has_image, self._train_batch_size, megabatch_size, seed)

    def create_optimizer(self, model=None):
        model = self.model if model is None else model
        if self.optimizer is None:
            groups = parameter_groups(
                model,
                self.args.learning_rate,
                self.args.weight_decay,
                self.get_decay_parameter_names(model),
                self.learning_rates,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def load_model_and_processor(run: LlavaRunArguments):
    """The starting model: a checkpoint (`model_name_or_path`) or a vision tower + language model (`build_from_parts`)."""
    dtype = getattr(torch, run.dtype)
    quantization = (
        qlora_quantization_config(dtype if dtype != torch.float32 else torch.bfloat16)
        if STAGES[run.stage].quantized
        else None
    )
    if run.model_name_or_path:
        return load_checkpoint(
            run.model_name_or_path,
            dtype=run.dtype,
            device=None,  # the Trainer places the model
            quantization=quantization,
            for_inference=False,
        )
    if run.vision_tower and run.language_model:
        return build_from_parts(**parts_arguments(run), dtype=dtype, quantization_config=quantization)
    raise ValueError(NO_MODEL)


def load_processor(run: LlavaRunArguments):
    """The processor `load_model_and_processor(run)` returns, without loading any weights."""
    if run.model_name_or_path:
        return load_checkpoint_processor(run.model_name_or_path)
    if run.vision_tower and run.language_model:
        return build_processor_from_parts(**parts_arguments(run))
    raise ValueError(NO_MODEL)


NO_MODEL = "give model_name_or_path, or vision_tower and language_model, or pass a model and processor."


def parts_arguments(run: LlavaRunArguments) -> dict:
    """What `build_from_parts` and `build_processor_from_parts` take from the run."""
    return {
        "vision_tower": run.vision_tower,
        "language_model": run.language_model,
        "projector_type": run.projector_type,
        "vision_feature_layer": run.vision_feature_layer,
        "image_aspect_ratio": run.image_aspect_ratio,
    }


def build_trainer(
    run: LlavaRunArguments,
    args: SFTConfig,
    model=None,
    processor=None,
    train_dataset=None,
    eval_dataset=None,
) -> LlavaSFTTrainer:
    """Everything up to `trainer.train()`: data check, model, projector, freezing/LoRA, collator, optimizer groups.

    The data is read and checked before the model is loaded (with the processor alone): refused data stops the run
    in seconds, not after minutes of loading a 7B model."""
    if model is not None and processor is None:
        raise ValueError("pass the processor that goes with the model.")
    if train_dataset is None and not run.data_path:
        raise ValueError("give data_path (or pass train_dataset).")
    data_processor = processor if processor is not None else load_processor(run)
    chat_template = resolve_chat_template(run.chat_template or STAGES[run.stage].chat_template)

    # The main process reads the data and checks it (or finds both cached) first; the other ranks then read them from
    # the cache instead of parsing and checking the same file at the same time.
    with args.main_process_first(desc="loading and checking the training data"):
        if train_dataset is None:
            train_dataset = load_rows(run.data_path, run.image_folder, run.data_split, run.data_subset)
        if isinstance(train_dataset, list):
            from datasets import Dataset

            from ..data import ROW_FEATURES

            train_dataset = Dataset.from_list(train_dataset, features=ROW_FEATURES)
        if run.max_train_samples is not None:
            train_dataset = train_dataset.select(range(min(run.max_train_samples, len(train_dataset))))
        checked = preflight(
            train_dataset,
            data_processor,
            chat_template,
            args.max_length,
            run.skip_bad_rows,
            run.image_check,
            run.preflight_num_proc,
        )
    train_dataset = checked.dataset

    if model is None:
        model, processor = load_model_and_processor(run)
    if run.projector_path:
        load_projector(model, run.projector_path)

    stage = STAGES[run.stage]
    set_trainable(
        model,
        train_vision_tower=run.train_vision_tower,
        train_projector=stage.train_projector if run.train_projector is None else run.train_projector,
        train_language_model=stage.train_language_model
        if run.train_language_model is None
        else run.train_language_model,
    )
    if run.pack_batches:
        from ..data.packed_attention import use_packed_attention

        use_packed_attention(model)  # SDPA per packed sample: without it packing is slower than padding (no varlen)
    if stage.lora:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if stage.quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.activation_checkpointing)
        # PEFT freezes everything but the adapters and `modules_to_save` (the projector copy).
        model = get_peft_model(
            model, lora_config(run.lora_r, run.lora_alpha, run.lora_dropout, run.lora_target_modules)
        )
        # PEFT takes the base's name from the model, which a model built from parts does not have.
        base_name = lora_base_name(run)
        if base_name:
            model.peft_config["default"].base_model_name_or_path = base_name
    if run.unfreeze_vision_layers:
        unfreeze_vision_layers(model, run.unfreeze_vision_layers)
    logger.info(f"trainable parameters per component: {trainable_counts(model)}")

    # The raw rows go to our collator untouched (TRL's `dataset_kwargs={"skip_prepare_dataset": True}`).
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    args.remove_unused_columns = False
    collator = LlavaCollator(
        processor,
        chat_template=chat_template,
        max_length=args.max_length,
        padding_free=run.pack_batches,
        pad_to_multiple_of=args.pad_to_multiple_of,
    )
    learning_rates = {
        "multi_modal_projector": run.projector_learning_rate,
        "vision_tower": run.vision_tower_learning_rate,
    }
    trainer = LlavaSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        data_collator=collator,
        learning_rates=learning_rates,
        group_by_modality_length=run.group_by_modality_length,
        modality_lengths=(checked.lengths, checked.has_image),
    )
    check_distributed_launch(trainer)
    return trainer


def check_distributed_launch(trainer: LlavaSFTTrainer) -> None:
    """Refuse a multi-process launch that did not become what was asked for, before any step.

    accelerate 1.15 runs FSDP only with a device backend: on a CPU machine an FSDP config becomes DDP over gloo
    (`use_cpu`) or, without `use_cpu`, ranks that never join a process group, each training alone on all the data
    and overwriting the others' output. Both happen silently; this check makes them errors.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and trainer.accelerator.num_processes != world_size:
        raise RuntimeError(
            f"launched as {world_size} processes, but they did not join one process group (no device backend; on "
            "CPU pass --use_cpu true for DDP over gloo): each would train alone and overwrite the others' output."
        )
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not trainer.is_fsdp_enabled:
        raise RuntimeError(
            "accelerate was launched with an FSDP config, but FSDP is not active: accelerate runs FSDP only on GPUs "
            "(on CPU it falls back to DDP). On CPU use examples/configs/accelerate/ddp_cpu_2proc.yaml."
        )


def lora_base_name(run: LlavaRunArguments) -> str | None:
    """adapter_config.json's `base_model_name_or_path`: the llava_hf checkpoint the run started from; for a model
    built from parts, the stage-1 result it loaded (whose llava_run_arguments.json names the parts), else the language
    model (the original's LoRA adapters name their Vicuna). `load_lora_base` turns it back into the model."""
    if run.model_name_or_path:
        return run.model_name_or_path
    if run.projector_path:
        folder = Path(run.projector_path)
        return str(folder if folder.is_dir() else folder.parent)
    return run.language_model


def load_lora_base(adapter_dir: str | Path, dtype: torch.dtype = torch.float32):
    """The model a LoRA adapter saved by `train()` applies to, for `PeftModel.from_pretrained(base, adapter_dir)`.

    Reads `base_model_name_or_path` from the adapter's config: a llava_hf checkpoint is loaded as is; a stage-1 result
    or a language model is rebuilt from the parts named in the run's `llava_run_arguments.json` (the adapter folder's,
    else the stage-1 folder's) plus the stage-1 projector. The rebuild is exact: `build_from_parts` is deterministic
    apart from the projector, which the adapter replaces (`modules_to_save`).
    """
    from ..modeling import LlavaHfForConditionalGeneration

    adapter_dir = Path(adapter_dir)
    base = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path; load the base yourself.")
    run_file = next(
        (path for path in (adapter_dir / RUN_ARGUMENTS_FILE, Path(base) / RUN_ARGUMENTS_FILE) if path.is_file()), None
    )
    run = json.loads(run_file.read_text()) if run_file else {}
    if run.get("model_name_or_path") == base or (Path(base) / "config.json").is_file():
        return LlavaHfForConditionalGeneration.from_pretrained(base, dtype=dtype)
    if not (run.get("vision_tower") and run.get("language_model")):
        raise ValueError(f"{base} is not a llava_hf checkpoint and no {RUN_ARGUMENTS_FILE} names the parts.")
    model, _ = build_from_parts(
        run["vision_tower"],
        run["language_model"],
        projector_type=run.get("projector_type", "mlp2x_gelu"),
        vision_feature_layer=run.get("vision_feature_layer", -2),
        image_aspect_ratio=run.get("image_aspect_ratio", "pad"),
        dtype=dtype,
    )
    if (Path(base) / PROJECTOR_FILE).is_file():
        load_projector(model, base)
    return model


def merge_lora_adapter(adapter_dir: str | Path, output_dir: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write base + adapter as one checkpoint at `output_dir`: the unquantized base (`load_lora_base`, in `dtype`)
    with the adapter of `adapter_dir` merged into its weights (PEFT's `merge_and_unload`), and the adapter's processor.

    This is how a QLoRA adapter becomes a full model: the 4-bit weights it trained against cannot absorb the update
    (PEFT cannot add a dense delta to packed NF4 blocks), and the released model is the 16-bit base plus the adapter,
    as in the original's `scripts/merge_lora_weights.py`. Needs memory for the base in `dtype`.
    """
    from peft import PeftModel
    from transformers import AutoProcessor

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    merged = PeftModel.from_pretrained(load_lora_base(adapter_dir, dtype), adapter_dir).merge_and_unload()
    merged.save_pretrained(str(output_dir))
    AutoProcessor.from_pretrained(adapter_dir).save_pretrained(str(output_dir))
    return output_dir


def save_outputs(trainer: LlavaSFTTrainer, run: LlavaRunArguments) -> Path:
    """Stage 1: the projector alone (+ processor); finetune: the full model; LoRA: the adapter with the projector
    (`modules_to_save`), and the merged model under `merged/` when asked (QLoRA: merged into the base reloaded
    unquantized in `run.dtype`, see `merge_lora_adapter`)."""
    output_dir = Path(trainer.args.output_dir)
    if not STAGES[run.stage].saves_projector_only:
        trainer.save_model(str(output_dir))  # every rank calls it: ZeRO-3 / FSDP gather the weights collectively
    if not trainer.is_world_process_zero():
        return output_dir
    processor = trainer.processing_class
    if STAGES[run.stage].saves_projector_only:
        save_projector(trainer.model, output_dir)
    processor.save_pretrained(str(output_dir))
    # Written before the merge: a base built from parts is rebuilt from the parts this file names.
    (output_dir / RUN_ARGUMENTS_FILE).write_text(json.dumps(asdict(run), indent=2))
    if run.merge_lora and STAGES[run.stage].lora and not STAGES[run.stage].quantized:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(output_dir / "merged"))
        processor.save_pretrained(str(output_dir / "merged"))
    if run.merge_lora and STAGES[run.stage].quantized:
        merge_lora_adapter(output_dir, output_dir / "merged", getattr(torch, run.dtype))
    return output_dir


class CheckpointNotFound(ValueError):
    """`resume_from_checkpoint` names no complete checkpoint."""


def is_complete_checkpoint(folder: Path) -> bool:
    """True when the Trainer finished writing `folder`: it writes `trainer_state.json` last (after the weights, the
    optimizer, the scheduler and the RNG states), so a folder a kill interrupted mid-save has none, or a truncated one.
    """
    try:
        return "global_step" in json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The `checkpoint-N` folder with the highest N that is complete; incomplete ones are skipped with a warning."""
    numbered = []
    for folder in Path(output_dir).glob("checkpoint-*"):
        suffix = folder.name.removeprefix("checkpoint-")
        if folder.is_dir() and suffix.isdigit():
            numbered.append((int(suffix), folder))
    for _, folder in sorted(numbered, reverse=True):
        if is_complete_checkpoint(folder):
            return folder
        logger.warning(f"skipping {folder}: incomplete (no readable trainer_state.json; interrupted while saving?)")
    return None


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str | Path) -> str | None:
    """What `--resume_from_checkpoint` means: a folder, or `true` for the last complete checkpoint in `output_dir`.

    `true` with no complete checkpoint yet starts from scratch (a preempted job can be relaunched with the same
    command, as the original's train.py did); `false` / empty / None: no resume. A folder must be complete.
    """
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false", "none")):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() == "true"):
        last = last_complete_checkpoint(output_dir)
        if last is None:
            logger.warning(
                f"resume_from_checkpoint=true: no complete checkpoint in {output_dir}; starting from step 0."
            )
            return None
        logger.info(f"resuming from {last}")
        return str(last)
    folder = Path(value)
    if not is_complete_checkpoint(folder):
        raise CheckpointNotFound(
            f"--resume_from_checkpoint {value}: not a complete checkpoint folder (no readable trainer_state.json); "
            f"pass a checkpoint-N folder, or true for the last complete one in output_dir."
        )
    return str(folder)


def train(
    run: LlavaRunArguments,
    args: SFTConfig,
    model=None,
    processor=None,
    train_dataset=None,
    eval_dataset=None,
) -> LlavaSFTTrainer:
    """Train one stage and save its outputs; returns the trainer (`trainer.state.log_history` holds the losses).

    Args:
        run: the stage and its settings (see `LlavaRunArguments`).
        args: TRL's `SFTConfig`; `max_length` is the collator's limit (counted after image expansion), and
            `resume_from_checkpoint` resumes: a checkpoint folder, or True / "true" for the last complete checkpoint
            in `output_dir` (see `resolve_resume_checkpoint`).
        model, processor: an in-memory model and its processor; default: loaded from `run`.
        train_dataset: rows in the library's schema (`datasets.Dataset` or list); default: loaded from `run.data_path`.
    """
    resume_from = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    trainer = build_trainer(run, args, model, processor, train_dataset, eval_dataset)
    trainer.train(resume_from_checkpoint=resume_from)
    save_outputs(trainer, run)
    return trainer


__all__ = [
    "CheckpointNotFound",
    "LlavaRunArguments",
    "LlavaSFTTrainer",
    "build_trainer",
    "last_complete_checkpoint",
    "load_lora_base",
    "load_model_and_processor",
    "load_processor",
    "merge_lora_adapter",
    "resolve_resume_checkpoint",
    "save_outputs",
    "train",
]
