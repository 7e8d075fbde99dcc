"""The one lower layer of plumbing the capabilities share (nothing here imports a capability).

- `io.py`            atomic writes, staged folders, append-only JSONL logs with torn-tail repair
- `command_line.py`  the command-line conventions: HfArgumentParser dataclasses, exit status 2 with one line on bad input
- `loading.py`       loading a checkpoint for inference or training: one dtype / device / quantization / template policy
- `memory.py`        a checkpoint's size from its safetensors headers, the available memory, a cast without two copies
- `endpoints.py`     OpenAI-compatible endpoints (teachers, judges) on the `openai` SDK
- `lazy.py`          package `__getattr__` that loads public names on first use (`data`, `conversion`)

Nothing here imports a capability (`conversion`, `training`, `datagen`, `evaluation`, `serving`, `demo`, `cli`);
`io`, `command_line` and `endpoints` import neither torch nor transformers' model code.
"""
