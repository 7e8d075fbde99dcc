"""Predictions files: one JSON object per answer (`{"question_id", "prompt", "text", "model_id", ...}`, the original
LLaVA answer file's format), appended + fsync'd while generating (`utils.io.JsonlLog`), a torn last line tolerated."""

from __future__ import annotations

import os

from ..utils.io import numbered_jsonl

PREDICTIONS_FILE = "predictions.jsonl"


def read_predictions(path: str | os.PathLike) -> dict[str, dict]:
    """Read a predictions JSONL (ours or the original LLaVA answer file) into `{str(question_id): record}`.

    Every line must be a JSON object with `question_id` and `text`; a malformed line raises with its line number,
    except a torn last line (a run killed mid-write), which is ignored and regenerated on resume.
    A question_id that appears twice keeps its last record (a resumed run never writes one twice).
    """
    records: dict[str, dict] = {}
    for number, record in numbered_jsonl(path):
        if not isinstance(record, dict) or "question_id" not in record or "text" not in record:
            raise ValueError(
                f"{path}:{number} has no 'question_id' and 'text'; a predictions file holds one "
                '{"question_id": ..., "text": "<the model\'s answer>"} object per line.'
            )
        if not isinstance(record["text"], str):
            raise ValueError(f"{path}:{number}: 'text' must be a string, got {type(record['text']).__name__}.")
        records[str(record["question_id"])] = record
    return records
