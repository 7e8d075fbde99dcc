"""LLaVA's training stages around TRL's SFTTrainer.

- `arguments.py`      the stage table (`STAGES`: what each stage trains and saves) and LlavaRunArguments; no torch
- `recipes.py`        applying a stage: freezing, LoRA/QLoRA configs, the stage-1 projector file, building from parts
- `sampler.py`        LLaVA-1.5's group-by-modality-length batching
- `trainer.py`        LlavaSFTTrainer (per-group learning rates), build_trainer(), train(), saving, resuming
- `train_command.py`  `llava-hf train`: --help and LLaVA's flags before TRL loads, then YAML + flags -> one stage
"""

from ..utils.lazy import lazy_attributes

# public name -> submodule, loaded on first use: `llava-hf train --help` (train_command.py) needs no torch or TRL.
_LAZY_ATTRIBUTES = {
    "LORA_TARGET_MODULES": "arguments",
    "STAGES": "arguments",
    "LlavaRunArguments": "arguments",
    "Stage": "arguments",
    "PROJECTOR_FILE": "recipes",
    "QLORA_SKIP_MODULES": "recipes",
    "build_from_parts": "recipes",
    "build_processor_from_parts": "recipes",
    "load_projector": "recipes",
    "lora_config": "recipes",
    "qlora_quantization_config": "recipes",
    "save_projector": "recipes",
    "set_trainable": "recipes",
    "trainable_counts": "recipes",
    "unfreeze_vision_layers": "recipes",
    "ModalityLengthGroupedSampler": "sampler",
    "estimate_lengths": "sampler",
    "modality_length_grouped_indices": "sampler",
    "LlavaSFTTrainer": "trainer",
    "build_trainer": "trainer",
    "load_lora_base": "trainer",
    "load_model_and_processor": "trainer",
    "load_processor": "trainer",
    "merge_lora_adapter": "trainer",
    "save_outputs": "trainer",
    "train": "trainer",
}
__all__ = sorted(_LAZY_ATTRIBUTES)
__getattr__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES)
