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
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, Image, List
from PIL import Image as PILImage

from .collator import LlavaCollator, SampleError
from .formats import to_conversation

logger = logging.getLogger(__name__)

PROBLEMS = {
    "missing_image": "image file does not exist",
    "unreadable_image": "image cannot be decoded",
    "image_count_mismatch": "image placeholders != images",
    "role_order": "roles not (system) user/assistant alternating, ending with assistant",
    "empty_answer": "assistant turn with no text",
    "too_long": "longer than max_length after image expansion",
    "unmaskable": "no supervised token after rendering",
}


class DataCheckError(ValueError):
    """Raised by `preflight` when the data has problems and skipping them was not requested."""


@dataclass
class CheckReport:
    num_rows: int
    problems: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # problem -> row indices
    ids: dict[int, str] = field(default_factory=dict)  # row index -> sample id, for offending rows
    skipped_checks: list[str] = field(default_factory=list)

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
        lines += [f"  (not checked: {skipped})" for skipped in self.skipped_checks]
        return "\n".join(lines)


def _image_problem(image) -> str | None:
    """`image` is a `datasets` undecoded image (`{"path", "bytes"}`), a path, or a PIL image."""
    if isinstance(image, PILImage.Image):
        return None
    if isinstance(image, (str, Path)):
        image = {"path": str(image), "bytes": None}
    if image.get("bytes") is None:
        path = image.get("path")
        if not path or not Path(path).is_file():
            return "missing_image"
        source = path
    else:
        source = io.BytesIO(image["bytes"])
    try:
        with PILImage.open(source) as opened:
            opened.verify()  # reads the whole file without decoding pixels into memory
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
    check_images: bool = True,
) -> CheckReport:
    """Check every row of a row-schema dataset (see `formats`) and return the report.

    Args:
        dataset: a `datasets.Dataset` (images are read undecoded) or a list of row dicts.
        processor: a `LlavaHfProcessor`; without it the length and masking checks are skipped (and reported so).
        chat_template: the template training will use (default: the processor's).
        max_length: the training max length in tokens, counted after image expansion; None skips `too_long`.
        check_images: open every image (the slow part on large datasets).
    """
    if isinstance(dataset, Dataset) and "images" in dataset.column_names:
        dataset = dataset.cast_column("images", List(Image(decode=False)))
    report = CheckReport(num_rows=len(dataset))
    collator = LlavaCollator(processor, chat_template=chat_template) if processor is not None else None
    if collator is None:
        report.skipped_checks.append("too_long and unmaskable: no processor given")
    elif max_length is None:
        report.skipped_checks.append("too_long: no max_length given")
    if not check_images:
        report.skipped_checks.append("missing_image and unreadable_image: image check disabled")

    for index, row in enumerate(dataset):
        problems = []
        images = list(row.get("images") or [])
        if check_images:
            problems += sorted({problem for problem in map(_image_problem, images) if problem})
        messages = to_conversation(row)
        parts = [part for message in messages for part in message["content"]]
        if sum(part.get("type") == "image" for part in parts) != len(images):
            problems.append("image_count_mismatch")
        role_problems = _role_problems(messages)
        problems += role_problems
        if collator is not None and "image_count_mismatch" not in problems and "role_order" not in role_problems:
            try:
                sample = collator.encode({**row, "images": images})
                if max_length is not None and len(sample.input_ids) > max_length:
                    problems.append("too_long")
            except SampleError:
                problems.append("unmaskable")
        for problem in dict.fromkeys(problems):
            report.problems[problem].append(index)
        if problems:
            report.ids[index] = str(row.get("id") or index)
    return report


def preflight(
    dataset: Dataset,
    processor,
    chat_template: str | None = None,
    max_length: int | None = None,
    skip_bad_rows: bool = False,
    check_images: bool = True,
) -> Dataset:
    """Run `check_rows` before training: return the dataset if it is clean; raise `DataCheckError` with the table if
    not, or with `skip_bad_rows=True` return it without the bad rows and log how many were skipped and why."""
    report = check_rows(dataset, processor, chat_template, max_length, check_images)
    if report.ok:
        logger.info(report.table())
        return dataset
    if not skip_bad_rows:
        raise DataCheckError(
            f"the training data has problems:\n{report.table()}\nFix them, or pass skip_bad_rows=True "
            "(--skip_bad_rows) to train without those rows."
        )
    bad = report.bad_rows
    logger.warning(f"skipping {len(bad)} of {report.num_rows} rows:\n{report.table()}")
    return dataset.select([index for index in range(len(dataset)) if index not in bad])


__all__ = ["PROBLEMS", "CheckReport", "DataCheckError", "check_rows", "preflight"]
