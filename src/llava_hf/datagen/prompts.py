"""The prompt set (data files in `prompts/`) and the chat messages built from it.

A request follows the paper (the LLaVA paper §3): a system message that describes the task as if the model saw the
image, then few-shot pairs (user = an example context, assistant = the example output), then the target context.
The context is the captions one per line; for `detail` and `complex` also a blank line and one line per object,
`category: [x1, y1, x2, y2]` with 3 decimals.

Prompt files are YAML: `conversation.yaml`, `detail.yaml`, `complex.yaml` (`version`, `system`, `examples: [{context,
output}]`) and `instructions.yaml` (`version`, `brief: [...]`, `detailed: [...]`). Edit them in place or pass a folder
with your own copies (`--prompts-dir`); every generated record stores the versions it was made with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from .inputs import SymbolicImage

TASK_TYPES = ("conversation", "detail", "complex")
# Which types see the object boxes: the paper gives conversation only the captions.
TYPES_WITH_BOXES = {"conversation": False, "detail": True, "complex": True}
DEFAULT_PROMPTS_DIR = Path(__file__).parent / "prompts"


@dataclass
class PromptTemplate:
    """System message and few-shot `(context, output)` pairs for one task type."""

    task_type: str
    version: str
    system: str
    examples: list[tuple[str, str]]


@dataclass
class PromptSet:
    """All templates plus the instruction lists; `version(task_type)` is what records store as `prompt_version`."""

    templates: dict[str, PromptTemplate]
    instructions_version: str
    brief_instructions: list[str]
    detailed_instructions: list[str]

    def version(self, task_type: str) -> str:
        if task_type == "caption":
            return f"instructions@{self.instructions_version}"
        version = f"{task_type}@{self.templates[task_type].version}"
        if task_type == "detail":  # the human turn comes from the instruction list
            version += f"+instructions@{self.instructions_version}"
        return version


def load_prompt_set(folder: str | Path | None = None) -> PromptSet:
    """Load the prompt files from `folder` (default: the ones shipped in the package)."""
    folder = Path(folder) if folder is not None else DEFAULT_PROMPTS_DIR
    templates = {}
    for task_type in TASK_TYPES:
        data = _load_yaml(folder / f"{task_type}.yaml", required=("version", "system", "examples"))
        examples = [(str(example["context"]).strip(), str(example["output"]).strip()) for example in data["examples"]]
        templates[task_type] = PromptTemplate(task_type, str(data["version"]), data["system"].strip(), examples)
    instructions = _load_yaml(folder / "instructions.yaml", required=("version", "brief", "detailed"))
    return PromptSet(
        templates=templates,
        instructions_version=str(instructions["version"]),
        brief_instructions=[str(item).strip() for item in instructions["brief"]],
        detailed_instructions=[str(item).strip() for item in instructions["detailed"]],
    )


def _load_yaml(path: Path, required: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} is missing; copy it from {DEFAULT_PROMPTS_DIR} and edit the copy")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"prompt file {path} lacks {missing}; see {DEFAULT_PROMPTS_DIR / path.name} for the layout")
    return data


def format_context(image: SymbolicImage, with_boxes: bool) -> str:
    """The symbolic description the teacher reads: captions, then (optionally) a blank line and the object lines."""
    lines = list(image.captions)
    if with_boxes and image.instances:
        lines.append("")
        for instance in image.instances:
            coordinates = ", ".join(_format_coordinate(value) for value in instance["bbox"])
            lines.append(f"{instance['category']}: [{coordinates}]")
    return "\n".join(lines)


def _format_coordinate(value: float) -> str:
    # 3 decimals without trailing zeros, as in the released files ("0.37", "0.584", "0.0").
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def build_messages(template: PromptTemplate, image: SymbolicImage) -> list[dict]:
    """The chat request for one image: system, few-shot user/assistant pairs, then the image's context."""
    messages = [{"role": "system", "content": template.system}]
    for context, output in template.examples:
        messages.append({"role": "user", "content": context})
        messages.append({"role": "assistant", "content": output})
    messages.append({"role": "user", "content": format_context(image, TYPES_WITH_BOXES[template.task_type])})
    return messages


def stable_choice(items: list[str], *key_parts: object) -> str:
    """Pick one item by a hash of `key_parts`: the same image gets the same instruction on every run and machine
    (Python's `hash` is salted per process, so it cannot be used)."""
    digest = hashlib.sha256("/".join(str(part) for part in key_parts).encode()).digest()
    return items[int.from_bytes(digest[:8], "big") % len(items)]
