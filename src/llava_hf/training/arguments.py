"""What `llava-hf train` and `llava_hf.training.train()` train, and on what: the stage table (`STAGES`) and
`LlavaRunArguments`. The optimisation settings are TRL's `SFTConfig`, parsed alongside.

Imports nothing heavy, so `llava-hf train --help` and its argument errors answer before torch and TRL load.
"""

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Stage:
    """What one training stage trains and saves; `STAGES` is the one place these are defined."""

    train_projector: bool  # default of --train_projector
    train_language_model: bool  # default of --train_language_model (LoRA stages train it through adapters instead)
    lora: bool  # LoRA adapters on the language model's linear layers (+ the projector as a module to save)
    quantized: bool  # the language model loaded in 4-bit under the adapters (QLoRA)
    chat_template: str | None  # default template; None = the processor's own
    saves_projector_only: bool  # stage 1's output is projector.safetensors (+ processor), not a model


# LLaVA-1.5 (Liu et al. 2023b, Appendix hyperparameters; original scripts/v1_5/pretrain.sh, finetune.sh,
# finetune_lora.sh): stage 1 trains only the projector on captions with the `plain` template; stage 2 trains the
# projector and the language model (fully or through LoRA); the vision tower stays frozen in both.
STAGES = {
    "pretrain": Stage(True, False, lora=False, quantized=False, chat_template="plain", saves_projector_only=True),
    "finetune": Stage(True, True, lora=False, quantized=False, chat_template=None, saves_projector_only=False),
    "lora": Stage(True, False, lora=True, quantized=False, chat_template=None, saves_projector_only=False),
    "qlora": Stage(True, False, lora=True, quantized=True, chat_template=None, saves_projector_only=False),
}

# The language model's linear layers (LLaVA's LoRA recipe targets all of them); the regex keeps LoRA off the vision
# tower and the projector, and off lm_head, which TRL 1.16 refuses to adapt ("Applying a PEFT adapter to lm_head is not supported").
LORA_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class LlavaRunArguments:
    """What to train and on what; the optimisation settings are TRL's `SFTConfig` (parsed alongside)."""

    stage: str = field(
        default="finetune",
        metadata={
            "help": "pretrain = stage 1 (projector only), finetune = stage 2 (projector + LLM), lora / qlora.",
            "choices": tuple(STAGES),
        },
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A llava_hf checkpoint (folder or Hub id) to start from."}
    )
    vision_tower: str | None = field(
        default=None,
        metadata={
            "help": "Vision model to build from (with --language_model), e.g. openai/clip-vit-large-patch14-336."
        },
    )
    language_model: str | None = field(
        default=None,
        metadata={"help": "Causal LM + tokenizer to build from (with --vision_tower), e.g. lmsys/vicuna-7b-v1.5."},
    )
    projector_type: str = field(
        default="mlp2x_gelu", metadata={"help": "linear, mlp{N}x_gelu or identity (building only)."}
    )
    vision_feature_layer: int = field(
        default=-2, metadata={"help": "Vision hidden state fed to the projector (building only)."}
    )
    image_aspect_ratio: Literal["pad", "square", "anyres"] = field(
        default="pad", metadata={"help": "pad (v1.5), square (v1) or anyres (v1.6: base + grid tiles, spatial_unpad)."}
    )
    projector_path: str | None = field(
        default=None,
        metadata={"help": "Stage-1 output (folder or projector.safetensors, or original mm_projector.bin)."},
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Template name or Jinja file; default `plain` for pretrain, else the processor's."},
    )
    data_path: str | None = field(
        default=None,
        metadata={"help": "Training data: LLaVA .json, a dataset folder/parquet file or a Hub dataset id."},
    )
    image_folder: str | None = field(
        default=None, metadata={"help": "Folder the LLaVA JSON image paths are relative to."}
    )
    data_split: str = field(default="train", metadata={"help": "Split of a folder / Hub dataset."})
    data_subset: str | None = field(
        default=None, metadata={"help": "Configuration of a Hub dataset (e.g. a the_cauldron subset)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "Train without the rows the preflight check rejects (reported) instead of stopping."},
    )
    image_check: Literal["header", "decode", "none"] = field(
        default="header",
        metadata={
            "help": "Preflight image check: header = open every image and read its header (exists, format, size, "
            "mode); decode = decode every image in full (reads all pixel data); none = skip."
        },
    )
    preflight_num_proc: int | None = field(
        default=None,
        metadata={"help": "Processes for the preflight check (default: one per 10,000 rows, up to the CPUs)."},
    )
    pack_batches: bool = field(
        default=False,
        metadata={
            "help": "Padding-free batches: samples concatenated with restarting position_ids. With SDPA the language "
            "model is switched to per-sample SDPA (llava_hf.data.packed_attention), flash-attention uses its varlen "
            "kernel; eager attention computes the whole packed row under a block-diagonal mask, which usually costs "
            "more than the padding it removes (benchmarks/RESULTS_training.md)."
        },
    )
    group_by_modality_length: bool = field(
        default=False,
        metadata={
            "help": "LLaVA-1.5's batching: image and text-only samples in separate batches, similar lengths together "
            "(each row's length as the preflight check measured it, no image opened)."
        },
    )
    train_vision_tower: bool = field(default=False, metadata={"help": "Train the whole vision tower."})
    unfreeze_vision_layers: int = field(
        default=0, metadata={"help": "Train the last N vision layers feeding the projector."}
    )
    train_projector: bool | None = field(default=None, metadata={"help": "Override the stage default (True)."})
    train_language_model: bool | None = field(
        default=None, metadata={"help": "Override the stage default (finetune: True; pretrain/LoRA: False)."}
    )
    projector_learning_rate: float | None = field(
        default=None, metadata={"help": "Projector LR (default: learning_rate)."}
    )
    vision_tower_learning_rate: float | None = field(
        default=None, metadata={"help": "Vision tower LR (default: learning_rate)."}
    )
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (LLaVA-1.5: 128)."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (LLaVA-1.5: 256)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default=LORA_TARGET_MODULES, metadata={"help": "Regex of the modules that get LoRA."}
    )
    merge_lora: bool = field(default=False, metadata={"help": "Also save the merged model under output_dir/merged."})
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "Weights dtype when loading."}
    )

    def __post_init__(self):
        if self.stage not in STAGES:  # a YAML recipe's value, which argparse's choices do not see
            raise ValueError(f"stage {self.stage!r}: choose one of {', '.join(STAGES)}")
