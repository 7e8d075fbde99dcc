"""Instruction-data generation, the LLaVA paper's text-only teacher pipeline (the LLaVA paper §3, prompts in the original `playground/data/prompts/`).

Each image is described symbolically (its captions plus normalised object boxes); a teacher writes a conversation, a
detailed description and a complex-reasoning Q&A from that text alone. The teacher is any OpenAI-compatible endpoint
or an offline rule-based writer. Files, in the order data flows through them:

- `inputs.py`                 COCO annotation files or a JSONL of symbolic images -> `SymbolicImage`s
- `prompts.py`                the prompt set in `prompts/*.yaml` -> chat messages for one image and one type
- `prompts`                   the versioned prompt files: system messages, few-shot examples, instruction lists
- `rule_teacher.py`           the offline teacher: correct Q&A from counts, categories, positions and sizes
- `parsing.py`                teacher output -> LLaVA turns, or a reject reason
- `pipeline.py`               the async run: jobs -> teacher -> validation -> journal (`utils.io.JsonlLog`) -> LLaVA JSON,
                              rejects, summary
- `generate_data_command.py`  `llava-hf generate-data`

Nothing here imports torch, transformers or model code.
"""
