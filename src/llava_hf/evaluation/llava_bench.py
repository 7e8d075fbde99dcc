"""LLaVA-Bench (COCO: 90 questions on 30 val2014 images; In-the-Wild: 60 questions on 24 images), judged by a
text-only LLM the way the LLaVA paper does (the original `docs/Evaluation.md` and `llava/eval/`), through any OpenAI-compatible endpoint.

Data layouts read by `build_task`:
- the original folder: `questions.jsonl` or `qa90_questions.jsonl` (`{"question_id", "image", "text", "category"}`),
  reference answers `answers_gpt4.jsonl` or `qa90_gpt4_answer.jsonl` (`{"question_id", "text"}`), the judge's
  context `caps_boxes_coco2014_val_80.jsonl` (COCO: `{"image", "captions", "instances": [{"category", "bbox"}]}`)
  or `context.jsonl` (In-the-Wild: `{"image", "caption"}`), and the images in `image_folder` (default `images/`);
- the Hub layout (e.g. `lmms-lab/llava-bench-in-the-wild`): columns question_id, question, image, category, caption
  (the context; a list of captions is joined by newlines) and the reference in gpt_answer or answer.

Protocol: the judge sees the context (captions + boxes, or the human caption), the question, the reference answer
as "Assistant 1" and the candidate as "Assistant 2", and puts two 1-10 scores on its first line. Our own rule prompt
(`RULE_PROMPT`) asks for that; `parse_judgment` reads it strictly. A judgment that cannot be parsed is asked again
(up to `retries` more times, each a new cached request), then reported under `unparsed` and left out of every mean;
it is never averaged in as a score. Relative score per category and overall = mean(candidate) / mean(reference) x 100
over the judged questions. `swapped=True` adds a second pass with the candidate first, to measure position bias.
Every judgment is cached in `judgments.jsonl` keyed by a hash of its request, so a rerun costs no requests and gives
the same numbers; results record the judge model (as requested and as served), sampling and the prompt's hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..utils.endpoints import EndpointArguments
from ..utils.io import JsonlLog, read_jsonl
from .rows import load_rows, require_columns
from .task import Example, Outcome, Task

SYSTEM_PROMPT = "You are a careful, impartial reviewer of answers to questions about images."
RULE_PROMPT = (
    "You cannot see the image; the context above describes it (captions, and for some images object boxes as "
    "category: [x1, y1, x2, y2] in relative coordinates). Two assistants answered the question. Judge how helpful, "
    "relevant, accurate and detailed each answer is, given what the context says about the image, and give each a "
    "score from 1 to 10, where higher is better. The order in which the answers appear must not influence you.\n"
    "Write the two scores on the first line, Assistant 1's first, as two numbers separated by a space and nothing "
    "else. From the second line on, explain your scores briefly."
)
REQUEST_TEMPLATE = (
    "[Context]\n{context}\n\n[Question]\n{question}\n\n"
    "[Assistant 1]\n{first}\n\n[End of Assistant 1]\n\n"
    "[Assistant 2]\n{second}\n\n[End of Assistant 2]\n\n"
    "[System]\n{rule}\n\n"
)
PROMPT_HASH = hashlib.sha256((SYSTEM_PROMPT + "\0" + RULE_PROMPT + "\0" + REQUEST_TEMPLATE).encode()).hexdigest()[:16]
ORDERS = ("reference_first", "candidate_first")
QUESTION_FILES = ("questions.jsonl", "qa90_questions.jsonl")
REFERENCE_FILES = ("answers_gpt4.jsonl", "qa90_gpt4_answer.jsonl")
CONTEXT_FILES = ("caps_boxes_coco2014_val_80.jsonl", "context.jsonl")
HUB_COLUMNS = ["question_id", "question", "image", "category", "caption"]


# The order in which results.json has always recorded the judge settings (the endpoint fields come first in
# `asdict(JudgeArguments)` since they are inherited, so the record is built in this order instead).
JUDGE_RECORD_FIELDS = (
    "base_url",
    "model",
    "api_key_env",
    "temperature",
    "max_tokens",
    "retries",
    "swapped",
    "concurrency",
    "timeout",
    "max_retries",
)


@dataclass
class JudgeArguments(EndpointArguments):
    """Where and how to ask the judge: the endpoint (`EndpointArguments`: base_url incl. /v1, model, api_key_env,
    timeout, max_retries, concurrency, all passed to `llava_hf.utils.endpoints.ChatClient`) plus the protocol below.

    Args:
        temperature / max_tokens: judge sampling; 0 makes judgments as repeatable as the endpoint allows.
        retries: how many more times an unparseable judgment is asked for before it is reported.
        swapped: also judge with the candidate first and the reference second (position bias).
    """

    temperature: float = 0.0
    max_tokens: int = 256
    retries: int = 2
    swapped: bool = False

    def record(self) -> dict:
        """All settings as results.json records them: JUDGE_RECORD_FIELDS first, then any other field."""
        values = asdict(self)
        return {**{name: values.pop(name) for name in JUDGE_RECORD_FIELDS}, **values}


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def format_context(record: dict) -> str:
    """The judge's context for one image: COCO captions one per line, a blank line, then `category: [x1, y1, x2, y2]`
    lines (the paper's symbolic representation); or an In-the-Wild record's human-written caption."""
    if "captions" in record:
        captions = "\n".join(record["captions"])
        boxes = "\n".join(f"{item['category']}: {list(item['bbox'])}" for item in record.get("instances", []))
        return f"{captions}\n\n{boxes}" if boxes else captions
    if "caption" in record:
        caption = record["caption"]
        return "\n".join(caption) if isinstance(caption, (list, tuple)) else str(caption)
    raise ValueError(f"context record {record.get('image')!r} has neither 'captions' nor 'caption'.")


def load_examples(data, split: str = "train", image_folder: str | None = None) -> tuple[list[Example], str]:
    """LLaVA-Bench questions as `Example`s (answer = the reference answer; metadata: category, context) and the
    variant ("coco" or "wild")."""
    path = Path(data) if isinstance(data, (str, Path)) else None
    if path is not None and path.is_dir() and any((path / name).exists() for name in QUESTION_FILES):
        return _original_examples(path, image_folder)
    rows = load_rows(data, split)
    require_columns(rows, HUB_COLUMNS, "LLaVA-Bench Hub")
    reference_column = next((name for name in ("gpt_answer", "answer") if name in rows.column_names), None)
    if reference_column is None:
        raise ValueError(f"the data has no reference-answer column (gpt_answer or answer): {rows.column_names}.")
    examples = [
        make_example(
            row["question_id"],
            row["question"],
            row["image"],
            row[reference_column],
            row["category"],
            format_context({"caption": row["caption"]}),
        )
        for row in rows
    ]
    variant = "coco" if "coco" in str(data).lower() else "wild"
    return examples, variant


def _original_examples(folder: Path, image_folder: str | None) -> tuple[list[Example], str]:
    questions = _read_jsonl(_first_existing(folder, QUESTION_FILES))
    references = {str(r["question_id"]): r["text"] for r in _read_jsonl(_first_existing(folder, REFERENCE_FILES))}
    context_path = _first_existing(folder, CONTEXT_FILES)
    contexts = {record["image"]: format_context(record) for record in _read_jsonl(context_path)}
    images = Path(image_folder) if image_folder else folder / "images"
    examples = []
    for question in questions:
        question_id = str(question["question_id"])
        if question_id not in references:
            raise ValueError(f"question {question_id} has no reference answer in {folder}.")
        if question["image"] not in contexts:
            raise ValueError(f"image {question['image']} of question {question_id} has no context in {context_path}.")
        image = images / question["image"]  # checked before generation; scoring needs no images
        examples.append(
            make_example(
                question_id,
                question["text"],
                image,
                references[question_id],
                question["category"],
                contexts[question["image"]],
            )
        )
    return examples, "coco" if context_path.name.startswith("caps_boxes") else "wild"


def make_example(question_id, question: str, image, reference: str, category: str, context: str) -> Example:
    """One LLaVA-Bench item; build these directly to judge in-memory questions (e.g. synthetic images)."""
    return Example(
        id=str(question_id),
        prompt=question,
        images=[image] if image is not None else [],
        answer=reference,
        metadata={"category": category, "context": context},
    )


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder} holds none of {names}.")


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as error:
                raise ValueError(f"{path}:{number} is not valid JSON ({error}).") from None
    return records


# ---------------------------------------------------------------------------------------------------------------------
# Judging


def build_judge_messages(context: str, question: str, first: str, second: str) -> list[dict]:
    """The judge request for one question, `first` shown as Assistant 1 and `second` as Assistant 2."""
    content = REQUEST_TEMPLATE.format(context=context, question=question, first=first, second=second, rule=RULE_PROMPT)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def parse_judgment(text: str) -> tuple[float, float] | None:
    """The two scores on the judgment's first line, or None unless that line holds exactly two numbers in 1..10."""
    lines = text.strip().splitlines()
    if not lines:
        return None
    numbers = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])", lines[0].replace(",", " "))
    leftover = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", "", lines[0].replace(",", " ")).strip()
    if len(numbers) != 2 or leftover:
        return None
    scores = (float(numbers[0]), float(numbers[1]))
    return scores if all(1.0 <= score <= 10.0 for score in scores) else None


def request_key(settings: JudgeArguments, messages: list[dict], attempt: int) -> str:
    """Cache key: a hash of everything that determines a judgment, plus the attempt number (retries are new asks)."""
    request = {
        "model": settings.model,
        "messages": messages,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "attempt": attempt,
    }
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def judge(outcomes: list[Outcome], settings: JudgeArguments, cache_path: str | Path) -> dict:
    """Judge every answered outcome in each order, with cached requests; returns per-question judgments.

    Returns `{order: {question_id: {"reference", "candidate", "attempts", "judgment"} | {"error", ...}}}`.
    """
    from ..utils.endpoints import ChatClient, ChatError

    cache_path = Path(cache_path)
    # A torn last line from a killed run is ignored: that judgment is simply asked again.
    cache = {record["key"]: record for record in read_jsonl(cache_path)} if cache_path.exists() else {}
    orders = ORDERS if settings.swapped else ORDERS[:1]
    jobs = []  # (order, outcome, messages)
    for outcome in outcomes:
        if outcome.text is None:
            continue
        meta, example = outcome.example.metadata, outcome.example
        for order in orders:
            first, second = (
                (example.answer, outcome.text) if order == "reference_first" else (outcome.text, example.answer)
            )
            jobs.append((order, outcome, build_judge_messages(meta["context"], example.prompt, first, second)))
    judgments: dict[str, dict] = {order: {} for order in orders}
    client = ChatClient.from_settings(settings)
    try:
        with JsonlLog(cache_path) as writer:
            pending = jobs
            for attempt in range(settings.retries + 1):
                keys = [request_key(settings, messages, attempt) for _, _, messages in pending]
                to_ask = [(job, key) for job, key in zip(pending, keys) if key not in cache]
                replies = client.complete_many(
                    [messages for (_, _, messages), _ in to_ask],
                    temperature=settings.temperature,
                    max_tokens=settings.max_tokens,
                )
                new_records = []
                for ((order, outcome, _), key), reply in zip(to_ask, replies):
                    if isinstance(reply, ChatError):
                        judgments[order][outcome.example.id] = {"error": str(reply), "attempts": attempt + 1}
                        continue
                    if isinstance(reply, BaseException):
                        raise reply
                    record = {
                        "key": key,
                        "question_id": outcome.example.id,
                        "order": order,
                        "attempt": attempt,
                        "text": reply.text,
                        "model": reply.model,
                        "prompt_hash": PROMPT_HASH,
                    }
                    cache[key] = record
                    new_records.append(record)
                writer.append(*new_records)
                still_pending = []
                for (order, outcome, messages), key in zip(pending, keys):
                    if key not in cache:
                        continue  # failed at the HTTP level: reported above
                    record = cache[key]
                    scores = parse_judgment(record["text"])
                    if scores is None:
                        judgments[order][outcome.example.id] = {
                            "unparsed": record["text"],
                            "attempts": attempt + 1,
                            "served_model": record["model"],
                        }
                        still_pending.append((order, outcome, messages))
                        continue
                    reference, candidate = scores if order == "reference_first" else scores[::-1]
                    judgments[order][outcome.example.id] = {
                        "reference": reference,
                        "candidate": candidate,
                        "attempts": attempt + 1,
                        "served_model": record["model"],
                        "judgment": record["text"],
                    }
                pending = still_pending
                if not pending:
                    break
    finally:
        client.close()
    return judgments


def relative_scores(judged: dict[str, dict], categories: dict[str, str]) -> dict[str, dict]:
    """Per category and overall: mean reference, mean candidate, relative = mean(candidate)/mean(reference) x 100."""
    scored = {qid: item for qid, item in judged.items() if "candidate" in item}
    groups = {name: [qid for qid in scored if categories[qid] == name] for name in sorted(set(categories.values()))}
    groups["overall"] = list(scored)
    table = {}
    for name, ids in groups.items():
        if not ids:
            table[name] = {"count": 0, "reference": None, "candidate": None, "relative": None}
            continue
        reference = sum(scored[qid]["reference"] for qid in ids) / len(ids)
        candidate = sum(scored[qid]["candidate"] for qid in ids) / len(ids)
        table[name] = {
            "count": len(ids),
            "reference": reference,
            "candidate": candidate,
            "relative": 100.0 * candidate / reference,
        }
    return table


def make_score(settings: JudgeArguments, cache_path: str | Path):
    """The task's score function: judge, then relative scores per category (and the swapped pass, if asked)."""

    def score(outcomes: list[Outcome]) -> dict:
        categories = {outcome.example.id: outcome.example.metadata["category"] for outcome in outcomes}
        judgments = judge(outcomes, settings, cache_path)
        passes = {order: relative_scores(judgments[order], categories) for order in judgments}
        main = passes["reference_first"]
        metrics = {name: row["relative"] for name, row in main.items() if row["relative"] is not None}
        names = [name for name in main if name != "overall"] + ["overall"]
        columns = ["category", "judged", "reference", "candidate", "relative"]
        rows = [
            [
                name,
                main[name]["count"],
                _dash(main[name]["reference"]),
                _dash(main[name]["candidate"]),
                _dash(main[name]["relative"]),
            ]
            for name in names
        ]
        if "candidate_first" in passes:
            swapped = passes["candidate_first"]
            columns += ["relative (swapped)", "position bias"]
            for row, name in zip(rows, names):
                both = main[name]["relative"], swapped[name]["relative"]
                row += [_dash(both[1]), _dash(None if None in both else both[0] - both[1])]
            metrics.update({f"swapped/{name}": row["relative"] for name, row in swapped.items() if row["relative"]})
        failures = {
            order: [{"question_id": qid, **item} for qid, item in items.items() if "candidate" not in item]
            for order, items in judgments.items()
        }
        served = sorted(
            {
                item["served_model"]
                for items in judgments.values()
                for item in items.values()
                if item.get("served_model")
            }
        )
        return {
            "metrics": metrics,
            "passes": passes,
            "unparsed": {order: [f for f in items if "unparsed" in f] for order, items in failures.items()},
            "judge_errors": {order: [f for f in items if "error" in f] for order, items in failures.items()},
            "judge": {**settings.record(), "served_models": served, "prompt_hash": PROMPT_HASH},
            "judgments": judgments,
            "table": {"columns": columns, "rows": rows},
        }

    return score


def _dash(value):
    return "-" if value is None else value


def build_task(
    data=None,
    judge_settings: JudgeArguments | None = None,
    cache_path: str | Path = "judgments.jsonl",
    split: str = "train",
    image_folder: str | None = None,
    examples: list[Example] | None = None,
    variant: str | None = None,
    limit: int | None = None,
    max_new_tokens: int | None = None,
) -> Task:
    """The LLaVA-Bench task from files (`data`) or from in-memory `examples` (see `make_example`)."""
    if judge_settings is None:
        raise ValueError("LLaVA-Bench needs a judge: pass JudgeArguments(base_url=..., model=...) (--judge-base-url).")
    if examples is None:
        if data is None:
            raise ValueError("pass data (a LLaVA-Bench folder, parquet or Hub id) or in-memory examples.")
        examples, detected = load_examples(data, split, image_folder)
        variant = variant or detected
    variant = variant or "custom"
    dataset_types = {"coco": "lmms-lab/llava-bench-coco", "wild": "lmms-lab/llava-bench-in-the-wild"}
    return Task(
        name=f"llava_bench_{variant}",
        examples=examples[:limit],
        score=make_score(judge_settings, cache_path),
        max_new_tokens=max_new_tokens or 1024,
        dataset_type=dataset_types.get(variant, f"llava_bench_{variant}"),
        dataset_name=f"LLaVA-Bench ({variant})",
        dataset_split=split,
    )
