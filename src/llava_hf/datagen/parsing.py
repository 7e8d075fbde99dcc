"""Teacher output -> LLaVA turns, or the reason it is rejected.

Formats (the same for an LLM and the rule-based teacher):
- conversation: blocks `Question:\\n...\\n===\\nAnswer:\\n...\\n===`, at least one pair -> a multi-turn record;
- detail: plain prose -> one turn, the human side an instruction picked from the detailed-description list;
- complex: exactly one Question/Answer pair -> one turn.
The first human turn starts with `<image>\\n`, the placement LLaVA's training normalises every image turn to.

Reject reasons (each counted in the summary and kept in `rejects.jsonl`): `truncated` (finish_reason "length"),
`empty`, `malformed` (blocks that do not parse), `leak_coordinates`, `leak_caption`, `leak_bounding_box` (the output
betrays that the teacher read text and numbers rather than saw an image, which the trained model would imitate).
"""

from __future__ import annotations

import re

REJECT_REASONS = ("truncated", "empty", "malformed", "leak_coordinates", "leak_caption", "leak_bounding_box")

# Order matters: the first match names the reason.
LEAK_PATTERNS = [
    ("leak_bounding_box", re.compile(r"bounding[\s-]*box", re.IGNORECASE)),
    ("leak_caption", re.compile(r"\bcaption(s|ed)?\b|\b(given|provided) (sentences|descriptions?)\b", re.IGNORECASE)),
    (
        "leak_coordinates",
        re.compile(
            r"\bcoordinates\b"  # the noun (not the verb "coordinate")
            r"|[\[(]\s*-?\d*\.\d+\s*,\s*-?\d*\.\d+"  # a bracketed list of decimals: [0.37, 0.584
            r"|\b0\.\d{3}\b",  # a bare 3-decimal fraction, the format of the boxes
            re.IGNORECASE,
        ),
    ),
]

BLOCK_SEPARATOR = re.compile(r"^\s*={3,}\s*$", re.MULTILINE)
BLOCK_LABEL = re.compile(r"^\s*\**(question|answer)\**\s*:\s*\**\s*", re.IGNORECASE)


class MalformedOutput(ValueError):
    """Teacher output that does not follow the block format."""


def split_qa_blocks(text: str) -> list[tuple[str, str]]:
    """`Question:/===/Answer:/===` blocks -> [(question, answer), ...]; raises MalformedOutput unless they alternate
    question, answer, question, ... and every block has text."""
    pairs, question = [], None
    for block in BLOCK_SEPARATOR.split(text):
        if not block.strip():
            continue
        match = BLOCK_LABEL.match(block)
        if match is None:
            raise MalformedOutput(f"block without a Question:/Answer: label: {block.strip()[:60]!r}")
        label, content = match.group(1).lower(), block[match.end() :].strip()
        if not content:
            raise MalformedOutput(f"empty {label}")
        if label == "question":
            if question is not None:
                raise MalformedOutput("two questions in a row")
            question = content
        else:
            if question is None:
                raise MalformedOutput("an answer without a question")
            pairs.append((question, content))
            question = None
    if question is not None:
        raise MalformedOutput("the last question has no answer")
    return pairs


def find_leak(text: str) -> str | None:
    """The reject reason if `text` mentions the symbolic source, else None."""
    for reason, pattern in LEAK_PATTERNS:
        if pattern.search(text):
            return reason
    return None


def parse_output(
    task_type: str, text: str, finish_reason: str | None, detail_instruction: str
) -> tuple[list[dict] | None, str | None]:
    """Returns `(conversations, None)` for an accepted output or `(None, reason)` for a rejected one.

    `conversations` is LLaVA's list of `{"from": "human"|"gpt", "value": ...}`; `detail_instruction` is the human
    turn used for `detail` outputs.
    """
    if finish_reason == "length":
        return None, "truncated"
    text = (text or "").strip()
    if not text:
        return None, "empty"
    leak = find_leak(text)
    if leak is not None:
        return None, leak
    if task_type == "detail":
        if BLOCK_LABEL.match(text):
            return None, "malformed"  # Q&A blocks where prose was asked for
        pairs = [(detail_instruction, text)]
    else:
        try:
            pairs = split_qa_blocks(text)
        except MalformedOutput:
            return None, "malformed"
        if not pairs or (task_type == "complex" and len(pairs) != 1):
            return None, "malformed"
    conversations = []
    for index, (question, answer) in enumerate(pairs):
        human = f"<image>\n{question}" if index == 0 else question
        conversations.append({"from": "human", "value": human})
        conversations.append({"from": "gpt", "value": answer})
    return conversations, None
