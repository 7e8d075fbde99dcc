"""The batch TRL's SFTTrainer builds for `trl sft --config CONFIG` (the same SFTConfig, model folder and dataset),
captured from the trainer's own data collator.

    python trl_collator.py CONFIG_YAML FOLDER DATASET_DIR OUTPUT_PT

Writes the collator's input_ids, attention_mask and labels for the first two rows to OUTPUT_PT; prints JSON.
"""

import json
import sys

import torch
import yaml
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer

config_path, folder, dataset_dir, output_path = sys.argv[1:]
settings = yaml.safe_load(open(config_path))
args = SFTConfig(output_dir="trl-collator", use_cpu=True, bf16=False, **settings)
dataset = load_dataset(dataset_dir, split="train")
trainer = SFTTrainer(model=folder, args=args, train_dataset=dataset)
batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
torch.save({key: batch[key] for key in ("input_ids", "attention_mask", "labels")}, output_path)
print(
    json.dumps(
        {
            "llava_hf_imported": "llava_hf" in sys.modules,
            "collator": type(trainer.data_collator).__name__,
            "processor": type(trainer.processing_class).__name__,
            "image_type": type(dataset[0]["images"][0]).__name__,
        }
    )
)
