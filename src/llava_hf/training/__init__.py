"""LLaVA's training stages around TRL's SFTTrainer.

- `recipes.py`  what each stage trains, LoRA/QLoRA configs, the stage-1 projector file, building from a tower + LLM
- `sampler.py`  LLaVA-1.5's group-by-modality-length batching
- `train.py`    LlavaSFTTrainer (per-group learning rates), build_trainer(), train(), saving, resuming
- `cli.py`      the run behind `llava-hf train`: YAML + flags -> arguments, train, DDP teardown
"""

from .recipes import (
    LORA_TARGET_MODULES,
    PROJECTOR_FILE,
    QLORA_SKIP_MODULES,
    STAGES,
    build_from_parts,
    build_processor_from_parts,
    load_projector,
    lora_config,
    qlora_quantization_config,
    save_projector,
    set_trainable,
    trainable_counts,
    unfreeze_vision_layers,
)
from .sampler import ModalityLengthGroupedSampler, estimate_lengths, modality_length_grouped_indices
from .train import (
    LlavaRunArguments,
    LlavaSFTTrainer,
    build_trainer,
    load_lora_base,
    load_model_and_processor,
    load_processor,
    merge_lora_adapter,
    save_outputs,
    train,
)

__all__ = [
    "LORA_TARGET_MODULES",
    "PROJECTOR_FILE",
    "QLORA_SKIP_MODULES",
    "STAGES",
    "LlavaRunArguments",
    "LlavaSFTTrainer",
    "ModalityLengthGroupedSampler",
    "build_from_parts",
    "build_processor_from_parts",
    "build_trainer",
    "estimate_lengths",
    "load_lora_base",
    "load_model_and_processor",
    "load_processor",
    "load_projector",
    "lora_config",
    "merge_lora_adapter",
    "modality_length_grouped_indices",
    "qlora_quantization_config",
    "save_outputs",
    "save_projector",
    "set_trainable",
    "train",
    "trainable_counts",
    "unfreeze_vision_layers",
]
