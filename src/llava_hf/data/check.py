"""Preflight check of training data: find every sample that would fail or train wrongly, before any GPU time is spent.

Problems found per row (a row can have several):
- `missing_image` / `unreadable_image`: an image path that does not exist, or bytes PIL cannot decode;
- `image_count_mismatch`: the number of `{"type": "image"}` parts differs from the number of images (LLaVA JSON: one
  part per `<image>` tag, so two tags in a turn with one image are reported, not merged as the original does);
- `role_order`: roles must be an optional system message, then user/assistant alternating, ending with an answer;
- `empty_answer`: an assistant turn with no text;
- `too_long`: longer than `max_length` tokens once each image is expanded to `image_seq_length` tokens (LLaVA counts
  the limit after expansion, the original `llava/train/train.py` `preprocess_v1` and `llava/mm_utils.py` `tokenizer_image_token`);
- `unmaskable`: the chat template yields no supervised token for the row.

`check_rows` returns a `CheckReport` (counts, first offending ids, a printable table); `preflight` is what training
runs: it raises `DataCheckError` on any problem unless told to skip bad rows, and then says how many it skipped and
why. Nothing is dropped silently. Text that is not UTF-8 fails earlier, when the file is read, naming the record and
its line (`formats.load_llava_json`).
"""

import io
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash
from datasets import Dataset, Features, List, Value
from PIL import Image as PILImage

from ..utils.memory import mapped_file_ranges, release_mapped_range
from .collator import LlavaCollator
from .formats import default_cache_dir, to_conversation

logger = logging.getLogger(__name__)

PROBLEMS = {
    "missing_image": "image file does not exist",
    "unreadable_image": "image cannot be read (header, or pixels with image_check=decode)",
    "image_count_mismatch": "image placeholders != images",
    "role_order": "roles not (system) user/assistant alternating, ending with assistant",
    "empty_answer": "assistant turn with no text",
    "too_long": "longer than max_length after image expansion",
    "unmaskable": "no supervised token after rendering",
}
# How images are checked: "header" opens each file and parses its header (format, size, mode: what PIL's
# Image.open reads, a few kB) without decoding pixels; "decode" decodes every image in full (reads all the bytes:
# ~100 GB for the LLaVA-1.5 mix, so opt-in); "none" skips images.
IMAGE_CHECKS = {
    "header": "every image opened, header read (exists, format, size, mode); pixels not decoded",
    "decode": "every image fully decoded",
    "none": "images not checked",
}
CHECK_FEATURES = Features(
    {"id": Value("string"), "problems": List(Value("string")), "length": Value("int32"), "has_image": Value("bool")}
)
ROWS_PER_PROCESS = 10_000  # fewer rows than this per process: starting a process costs more than it saves


class DataCheckError(ValueError):
    """Raised by `preflight` when the data has problems and skipping them was not requested; `report` is the check."""

    def __init__(self, message: str, report: "CheckReport | None" = None):
        super().__init__(message)
        self.report = report


@dataclass
class CheckReport:
    num_rows: int
    problems: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # problem -> row indices
    ids: dict[int, str] = field(default_factory=dict)  # row index -> sample id, for offending rows
    skipped_checks: list[str] = field(default_factory=list)
    image_check: str = "header"
    # Per row: the encoded length in tokens (after image expansion; -1 where not measured) and whether it has images.
    lengths: np.ndarray | None = None
    has_image: np.ndarray | None = None

    @property
    def bad_rows(self) -> set[int]:
        return {index for indices in self.problems.values() for index in indices}

    @property
    def ok(self) -> bool:
        return not self.bad_rows

    def table(self, show_ids: int = 5) -> str:
        """The summary: one line per problem with its count and the first `show_ids` offending sample ids."""
        lines = [f"checked {self.num_rows} rows: {self.num_rows - len(self.bad_rows)} ok, {len(self.bad_rows)} bad"]
        width = max(len(name) for name in PROBLEMS)
        for name, description in PROBLEMS.items():
            indices = self.problems.get(name, [])
            first = ", ".join(self.ids[index] for index in indices[:show_ids])
            lines.append(f"  {name.ljust(width)}  {len(indices):>7}  {description}" + (f"  [{first}]" if first else ""))
        lines.append(f"  images: {IMAGE_CHECKS[self.image_check]}")
        lines += [f"  (not checked: {skipped})" for skipped in self.skipped_checks]
        return "\n".join(lines)

    def save(self, path: Path) -> None:
        """One .npz file (lengths, has_image, and the rest as JSON), written atomically."""
        summary = {
            "num_rows": self.num_rows,
            "problems": dict(self.problems),
            "ids": {str(index): sample_id for index, sample_id in self.ids.items()},
            "skipped_checks": self.skipped_checks,
            "image_check": self.image_check,
        }
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        np.savez(partial, lengths=self.lengths, has_image=self.has_image, summary=np.array(json.dumps(summary)))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> "CheckReport":
        with np.load(path) as stored:
            summary = json.loads(str(stored["summary"]))
            report = cls(
                num_rows=summary["num_rows"],
                ids={int(index): sample_id for index, sample_id in summary["ids"].items()},
                skipped_checks=summary["skipped_checks"],
                image_check=summary["image_check"],
                lengths=stored["lengths"],
                has_image=stored["has_image"],
            )
        report.problems.update(summary["problems"])
        return report


def _image_problem(image, decode: bool) -> str | None:
    """`image` is a `datasets` undecoded image (`{"path", "bytes"}`), a path, or a PIL image."""
    if isinstance(image, PILImage.Image):
        return None
    if isinstance(image, (str, Path)):
        image = {"path": str(image), "bytes": None}
    if image.get("bytes") is None:
        path = image.get("path")
        if not path or not os.path.isfile(path):
            return "missing_image"
        source = path
    else:
        source = io.BytesIO(image["bytes"])
    try:
        with PILImage.open(source) as opened:  # parses the header only: format, size, mode
            if decode:
                opened.load()
            elif opened.width < 1 or opened.height < 1:
                return "unreadable_image"
    except Exception:  # PIL raises many types (OSError, SyntaxError, ...) for broken files
        return "unreadable_image"
    return None


def _role_problems(messages: list[dict]) -> list[str]:
    roles = [message["role"] for message in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    expected = ["user", "assistant"] * (len(roles) // 2 + 1)
    problems = []
    if not roles or roles != expected[: len(roles)] or roles[-1] != "assistant":
        problems.append("role_order")
    for message in messages:
        if message["role"] == "assistant":
            text = "".join(part.get("text") or "" for part in message["content"] if part.get("type") == "text")
            if not text.strip():
                problems.append("empty_answer")
                break
    return problems


def check_rows(
    dataset,
    processor=None,
    chat_template: str | None = None,
    max_length: int | None = None,
    image_check: str = "header",
    num_proc: int | None = None,
) -> CheckReport:
    """Check every row of a row-schema dataset (see `formats`) and return the report, with each row's length.

    Args:
        dataset: a `datasets.Dataset` (images are read undecoded) or a list of row dicts.
        processor: a `LlavaHfProcessor`; without it the length and masking checks are skipped (and reported so).
        chat_template: the template training will use (default: the processor's).
        max_length: the training max length in tokens, counted after image expansion; None skips `too_long`.
        image_check: "header" (default), "decode" or "none"; see `IMAGE_CHECKS`.
        num_proc: processes to check a `datasets.Dataset` with; default one per 10,000 rows, at most one per CPU.
    """
    if image_check not in IMAGE_CHECKS:
        raise ValueError(f"image_check must be one of {', '.join(IMAGE_CHECKS)}, got {image_check!r}.")
    collator = LlavaCollator(processor, chat_template=chat_template) if processor is not None else None
    settings = {"collator": collator, "max_length": max_length, "image_check": image_check}
    if isinstance(dataset, Dataset):
        # Arrow batches: images arrive as their stored {"path", "bytes"} structs, nothing decoded. (Casting the column
        # to `Image(decode=False)` instead would rewrite the whole dataset: a nested `List(Image())` cast is a copy.)
        dataset = dataset.with_format("arrow")
        if num_proc is None:
            num_proc = min(len(os.sched_getaffinity(0)), len(dataset) // ROWS_PER_PROCESS) or None
        results = dataset.map(
            _check_batch,
            batched=True,
            batch_size=500,
            with_indices=True,
            fn_kwargs=settings,
            remove_columns=dataset.column_names,
            features=CHECK_FEATURES,
            num_proc=num_proc if num_proc and num_proc > 1 else None,
            keep_in_memory=True,  # a few numbers per row; `preflight` keeps them
            # A fingerprint of our own: hashing the collator (tokenizer included) for `datasets`' cache is slow and
            # pointless here, as nothing is written.
            new_fingerprint=xxhash.xxh64(f"check|{dataset._fingerprint}|{time.time_ns()}".encode()).hexdigest(),
            desc="checking rows",
        )
        results = results.to_dict()
    else:
        columns = {name: [row.get(name) for row in dataset] for name in ("id", "images", "messages")}
        results = _check_batch(columns, list(range(len(dataset))), **settings)

    report = CheckReport(num_rows=len(results["length"]), image_check=image_check)
    if collator is None:
        report.skipped_checks.append("too_long and unmaskable: no processor given")
    elif max_length is None:
        report.skipped_checks.append("too_long: no max_length given")
    report.lengths = np.asarray(results["length"], dtype=np.int32)
    report.has_image = np.asarray(results["has_image"], dtype=bool)
    for index, (problems, sample_id) in enumerate(zip(results["problems"], results["id"])):
        for problem in problems:
            report.problems[problem].append(index)
        if problems:
            report.ids[index] = sample_id
    return report


def _check_batch(batch: dict, indices: list[int], collator, max_length, image_check) -> dict:
    """The check of a batch of rows (columns as lists, or an Arrow table): per row its problems, encoded length and
    modality."""
    if not isinstance(batch, dict):
        table, batch = batch, batch.to_pydict()
        _release_table_pages(table)
    results = {"id": [], "problems": [], "length": [], "has_image": []}
    encodable = []  # rows whose roles and image counts are right: measured together in one tokenizer call
    opened: dict = {}  # path -> problem, so an image shared by rows of the batch is opened once
    for position, index in enumerate(indices):
        row = {name: batch[name][position] for name in ("id", "images", "messages") if name in batch}
        images = list(row.get("images") or [])
        problems = []
        if image_check != "none":
            found = set()
            for image in images:
                key = image.get("path") if isinstance(image, dict) and image.get("bytes") is None else None
                if key is None or key not in opened:
                    problem = _image_problem(image, decode=image_check == "decode")
                    if key is not None:
                        opened[key] = problem
                else:
                    problem = opened[key]
                if problem:
                    found.add(problem)
            problems += sorted(found)
        messages = to_conversation(row)
        parts = [part for message in messages for part in message["content"]]
        if sum(part.get("type") == "image" for part in parts) != len(images):
            problems.append("image_count_mismatch")
        role_problems = _role_problems(messages)
        problems += role_problems
        if collator is not None and "image_count_mismatch" not in problems and "role_order" not in role_problems:
            encodable.append((position, {**row, "images": images}, messages))
        results["id"].append(str(row.get("id") or index))
        results["problems"].append(problems)
        results["length"].append(-1)
        results["has_image"].append(bool(images))
    if encodable:
        lengths = collator.encoded_lengths([row for _, row, _ in encodable], [messages for _, _, messages in encodable])
        for (position, _, _), length in zip(encodable, lengths):
            if length is None:
                results["problems"][position].append("unmaskable")
            else:
                results["length"][position] = length
                if max_length is not None and length > max_length:
                    results["problems"][position].append("too_long")
    results["problems"] = [list(dict.fromkeys(problems)) for problems in results["problems"]]
    return results


def _release_table_pages(table) -> None:
    """Drop the resident pages of a batch read from a memory-mapped Arrow file, once it is converted to Python: each
    process of the check reads its rows from the mapped file, and the pages it touched would otherwise stay counted
    in its memory until it exits (the whole 0.9 GB file at the end of a check of the LLaVA-1.5 mix). A batch that is
    a copy (a `select`ed dataset, an in-memory table) is not in a file mapping and is left alone."""
    mapped = mapped_file_ranges(".arrow")
    if not mapped:
        return
    for column in table.columns:
        for chunk in column.chunks:
            for buffer in chunk.buffers():
                if buffer is not None:
                    release_mapped_range(buffer.address, buffer.address + buffer.size, mapped)


@dataclass
class Preflight:
    """What training gets from `preflight`: the rows to train on, their lengths, and the report."""

    dataset: Dataset
    lengths: list[int]  # encoded length of each row of `dataset` (after image expansion); -1 where not measured
    has_image: list[bool]
    report: CheckReport
    cached: bool  # True when the report came from the cache


def preflight(
    dataset: Dataset,
    processor,
    chat_template: str | None = None,
    max_length: int | None = None,
    skip_bad_rows: bool = False,
    image_check: str = "header",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Preflight:
    """Run `check_rows` before training, once per data + settings: the report and the lengths are cached under
    `cache_dir` (default `HF_DATASETS_CACHE/llava_hf/preflight`) by `preflight_key`, so a relaunch or a resumed run
    reads them back in a second. Returns the dataset if it is clean; raises `DataCheckError` with the table if not, or
    with `skip_bad_rows=True` returns it without the bad rows and logs how many were skipped and why."""
    started = time.perf_counter()
    key = preflight_key(dataset, processor, chat_template, max_length, image_check)
    path = Path(cache_dir or default_cache_dir()) / "preflight" / f"{key}.npz"
    cached = path.is_file()
    if cached:
        report = CheckReport.load(path)
        logger.info(
            f"preflight: reusing the check of these rows and settings, {time.perf_counter() - started:.1f} s ({path})"
        )
    else:
        report = check_rows(dataset, processor, chat_template, max_length, image_check, num_proc)
        path.parent.mkdir(parents=True, exist_ok=True)
        report.save(path)
        logger.info(f"preflight: checked {report.num_rows} rows in {time.perf_counter() - started:.1f} s ({path})")
    lengths, has_image = report.lengths.tolist(), report.has_image.tolist()
    if report.ok:
        logger.info(report.table())
        return Preflight(dataset, lengths, has_image, report, cached)
    if not skip_bad_rows:
        raise DataCheckError(
            f"the training data has problems:\n{report.table()}\nFix them, or pass skip_bad_rows=True "
            "(--skip_bad_rows) to train without those rows.",
            report,
        )
    bad = report.bad_rows
    logger.warning(f"skipping {len(bad)} of {report.num_rows} rows:\n{report.table()}")
    kept = [index for index in range(len(dataset)) if index not in bad]
    return Preflight(
        dataset.select(kept), [lengths[index] for index in kept], [has_image[index] for index in kept], report, cached
    )


PREFLIGHT_CACHE_VERSION = 1  # bump when the check computes something different for the same inputs


def preflight_key(dataset: Dataset, processor, chat_template: str | None, max_length: int | None, image_check: str):
    """What the check's numbers depend on, hashed: the rows (`datasets`' fingerprint, which follows the source file's
    content hash, `select`s and `map`s), the tokenizer (its full serialisation: vocabulary, merges, added tokens),
    the image token and its expansion, the template source, `max_length` and the image check."""
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    template = LlavaCollator(processor, chat_template=chat_template).chat_template
    parts = [
        PREFLIGHT_CACHE_VERSION,
        getattr(dataset, "_fingerprint", None) or _rows_fingerprint(dataset),
        vocabulary,
        tokenizer.bos_token_id,
        processor.image_token_id,
        processor.image_seq_length,
        template,
        max_length,
        image_check,
    ]
    return xxhash.xxh128(json.dumps(parts, default=str).encode()).hexdigest()


def _rows_fingerprint(rows: list[dict]) -> str:
    """A list of rows has no `datasets` fingerprint: hash its text and image references."""
    digest = xxhash.xxh128()
    for row in rows:
        images = [image if isinstance(image, (str, dict)) else id(image) for image in row.get("images") or []]
        digest.update(json.dumps([row.get("id"), row["messages"], images], default=str).encode())
    return digest.hexdigest()


__all__ = ["IMAGE_CHECKS", "PROBLEMS", "CheckReport", "DataCheckError", "Preflight", "check_rows", "preflight"]
