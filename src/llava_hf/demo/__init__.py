"""`llava-hf demo`: the LLaVA recipe end to end on a synthetic "shapes world", small enough for a laptop CPU.

- `world.py`         procedural images of coloured shapes with COCO-style captions and boxes, train / held-out splits
- `pretrain.py`      the starting towers made at toy scale: BPE tokenizer, contrastive CLIP tower (hard negatives), Llama LLM; assembly
- `questions.py`     multiple-choice questions (ScienceQA format) and LLaVA-Bench-style questions with a rule-based judge
- `object_check.py`  the object checker of detailed descriptions and the repeated-phrase count
- `end_to_end.py`    `DemoArguments` and `run_demo`: world -> datagen -> stage 1 -> stage 2 -> evaluation -> folder -> report
- `ablation.py`      `llava-hf demo --ablation-seeds N`: the stage-1 ablation over seeds, with standard errors
- `report.py`        report.md with PIL-drawn plots and held-out examples
- `demo_command.py`  `llava-hf demo`
"""
