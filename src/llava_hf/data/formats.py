"""Every training-data format LLaVA users have, turned into one row schema (ARCHITECTURE.md):

    {"id": str, "images": [PIL.Image, ...],
     "messages": [{"role": "system"|"user"|"assistant", "content": [{"type": "image"} | {"type": "text", "text": str}]}]}

Formats:
- the original LLaVA JSON (the original `llava/train/train.py`, `preprocess_multimodal`): a list of `{"id", "image" (relative path, a list of paths, or absent),
  "conversations": [{"from": "human"|"gpt", "value"}]}` plus the folder the image paths are relative to;
- TRL's vision rows `{"messages", "images"}` (e.g. llava-instruct-mix-vsft);
- the_cauldron rows `{"images", "texts": [{"user", "assistant", "source"}]}`.

Images stay lazy: the `images` column is a `datasets` `List(Image())` feature, so a path is opened only when a row is
read. `convert_llava_json` writes the original JSON + image folder as parquet shards with the image bytes embedded, a
folder that `load_rows` reads back and that `huggingface-cli upload` can push as is.
"""

import codecs
import itertools
import json
import logging
import os
import re
import time
from pathlib import Path

import datasets
import pyarrow
import pyarrow.compute
import xxhash
from datasets import Dataset, Features, Image, List, Value
from datasets.arrow_writer import ArrowWriter

from ..utils.io import staged_directory

logger = logging.getLogger(__name__)

# The Arrow schema of the row format. `text` is None for image parts (Arrow structs have a fixed set of keys).
ROW_FEATURES = Features(
    {
        "id": Value("string"),
        "images": List(Image()),
        "messages": List(
            {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
        ),
    }
)
IMAGE_TOKEN = "<image>"
LLAVA_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def llava_records_to_table(records, image_folder: str | os.PathLike | None) -> pyarrow.Table:
    """Original LLaVA records as an Arrow table of rows (`ROW_FEATURES`; image paths resolved against `image_folder`,
    not opened).

    Follows the original preprocessing (haotian-liu/LLaVA `llava/train/train.py::preprocess_multimodal`): a leading
    `gpt` turn is dropped; a turn containing `<image>` loses its occurrences, is stripped, and gets its images at its
    front: one image part per `<image>`, so a turn with two tags and one image is a count mismatch that `check_rows`
    reports (the original would merge the tags into one silently). Nothing is repaired here: count mismatches and
    role errors are reported by `check_rows`, never silently fixed.

    The columns are built as flat lists and list offsets, not as one dict per row and part: at 665k rows the
    per-object cost of the nested form (and of encoding it feature by feature) is most of the parsing time.
    """
    ids, paths, roles, part_types, part_texts = [], [], [], [], []
    image_offsets, message_offsets, part_offsets = [0], [0], [0]
    folder = None if image_folder is None else os.fspath(image_folder)
    for record in records:
        record_id = str(record.get("id", ""))
        image_field = record.get("image")
        if image_field is not None:
            relative_paths = [image_field] if isinstance(image_field, str) else list(image_field)
            if relative_paths and folder is None:
                raise ValueError(f"record {record_id!r} has images {relative_paths} but no image folder was given.")
            paths += [os.path.join(folder, path) for path in relative_paths]  # os.path, not pathlib: 665k rows
        turns = record.get("conversations") or []
        if turns and turns[0].get("from") == "gpt":  # the original drops a leading answer (it has no question)
            turns = turns[1:]
        for turn in turns:
            speaker, value = turn.get("from"), turn.get("value") or ""
            role = LLAVA_ROLES.get(speaker)
            if role is None:
                raise ValueError(
                    f"record {record_id!r} has a turn from {speaker!r}; LLaVA JSON turns are from 'human' or 'gpt'."
                )
            if IMAGE_TOKEN in value:
                count = value.count(IMAGE_TOKEN)
                part_types += ["image"] * count
                part_texts += [None] * count
                value = value.replace(IMAGE_TOKEN, "").strip()
            part_types.append("text")
            part_texts.append(value)
            part_offsets.append(len(part_types))
            roles.append(role)
        ids.append(record_id)
        image_offsets.append(len(paths))
        message_offsets.append(len(roles))

    def listed(offsets, values):
        return pyarrow.ListArray.from_arrays(pyarrow.array(offsets, pyarrow.int32()), values)

    # The Image feature stores each image as {"bytes", "path"}; a path-only image has null bytes.
    images = pyarrow.StructArray.from_arrays(
        [pyarrow.nulls(len(paths), pyarrow.binary()), pyarrow.array(paths, pyarrow.string())], ["bytes", "path"]
    )
    parts = pyarrow.StructArray.from_arrays(
        [pyarrow.array(part_types, pyarrow.string()), pyarrow.array(part_texts, pyarrow.string())], ["type", "text"]
    )
    messages = pyarrow.StructArray.from_arrays(
        [pyarrow.array(roles, pyarrow.string()), listed(part_offsets, parts)], ["role", "content"]
    )
    columns = [pyarrow.array(ids, pyarrow.string()), listed(image_offsets, images), listed(message_offsets, messages)]
    return pyarrow.Table.from_arrays(columns, schema=ROW_FEATURES.arrow_schema)


def _llava_batch_to_table(batch: pyarrow.Table, image_folder: str | None) -> pyarrow.Table:
    return llava_records_to_table(batch.to_pylist(), image_folder)


def trl_row_to_row(row: dict, index: int) -> dict:
    """A TRL vision row (`messages` whose content is a string or a list of typed parts, `images`) as a row."""
    messages = []
    for message in row["messages"]:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        parts = []
        for part in content:
            if part.get("type") in ("image", "image_url"):
                parts.append({"type": "image", "text": None})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part.get("text") or ""})
            else:
                raise ValueError(f"row {index}: content part of type {part.get('type')!r}; expected image or text.")
        messages.append({"role": message["role"], "content": parts})
    return {"id": str(row.get("id", index)), "images": list(row.get("images") or []), "messages": messages}


def cauldron_row_to_row(row: dict, index: int) -> dict:
    """A the_cauldron row: all images go in front of the first user turn (that dataset's convention)."""
    images = list(row.get("images") or [])
    messages = []
    for turn_index, turn in enumerate(row["texts"]):
        user = [{"type": "image", "text": None} for _ in images] if turn_index == 0 else []
        user.append({"type": "text", "text": turn["user"]})
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["assistant"]}]})
    return {"id": str(row.get("id", index)), "images": images, "messages": messages}


def _detect_format(column_names) -> str:
    if "conversations" in column_names:
        return "llava"
    if "messages" in column_names:
        return "trl"
    if "texts" in column_names:
        return "cauldron"
    raise ValueError(
        f"cannot tell the data format from the columns {sorted(column_names)}; expected `conversations` (LLaVA JSON), "
        "`messages` + `images` (TRL) or `texts` + `images` (the_cauldron)."
    )


def load_llava_json(
    json_path: str | os.PathLike,
    image_folder: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """The original LLaVA JSON (a list, or JSON lines) as a memory-mapped row dataset with lazily opened images.

    The file is parsed once, record by record, into an Arrow file under `cache_dir` (default: `datasets`' cache,
    `HF_DATASETS_CACHE/llava_hf`) named by a hash of its content and the image folder; later calls map that file
    (seconds, whatever the size, and no Python objects per row). Peak memory while parsing is a few batches of
    records, not the whole list: `json.load` of the 1 GB LLaVA-1.5 mix holds several GB of Python objects.

    Text that is not valid UTF-8 (undecodable bytes, or a lone surrogate such as `"\\ud800"` that cannot be stored)
    raises a ValueError naming the record, its line and the field, not a codec error deep in Arrow.
    """
    json_path = Path(json_path)
    folder = None if image_folder is None else str(Path(image_folder).resolve())
    key = xxhash.xxh64(f"{ROWS_CACHE_VERSION}|{file_fingerprint(json_path)}|{folder}".encode()).hexdigest()
    cached = Path(cache_dir or default_cache_dir()) / "rows" / f"{json_path.stem}-{key}.arrow"
    if cached.is_file():
        logger.info(f"rows: reusing {cached}")
    else:
        started = time.perf_counter()
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        try:
            writer = ArrowWriter(features=ROW_FEATURES, path=str(partial))
            for records in _batched(_read_llava_records(json_path), ROWS_PER_BATCH):
                writer.write_table(llava_records_to_table(records, image_folder))
            num_rows, _ = writer.finalize()
            os.replace(partial, cached)  # atomic: a concurrent or killed run never leaves a half file in place
        finally:
            partial.unlink(missing_ok=True)
        logger.info(f"rows: parsed {num_rows} records in {time.perf_counter() - started:.1f} s into {cached}")
    return Dataset.from_file(str(cached))


ROWS_CACHE_VERSION = 1  # bump when llava_records_to_table changes what it writes
ROWS_PER_BATCH = 10_000
READ_CHUNK_BYTES = 16 << 20


def _batched(items, size: int):
    """Lists of `size` consecutive items (the last one shorter)."""
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


def default_cache_dir() -> Path:
    """Where llava_hf keeps what it derives from a data file (rows as Arrow, preflight reports): inside `datasets`'
    cache, so `HF_DATASETS_CACHE` moves it and clearing that cache clears it."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "llava_hf"


def file_fingerprint(path: str | os.PathLike) -> str:
    """A hash of the file's bytes (xxh64, about 1 s per GB from the page cache): a changed file, even one rewritten
    within the same second with the same size, gets a new fingerprint."""
    digest = xxhash.xxh64()
    with open(path, "rb") as file:
        while chunk := file.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return f"{Path(path).stat().st_size}-{digest.hexdigest()}"


def _read_llava_records(json_path: Path):
    """Yield the records of a JSON list or JSON-lines file one by one, reading it in chunks.

    Undecodable bytes are kept as lone surrogates (`surrogateescape`) and reported with the record's line, as are
    `\\udXXX` escapes that decode to a lone surrogate.
    """
    decoder = json.JSONDecoder()
    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    buffer, position, line, index, at_end = "", 0, 1, 0, False
    is_list = None
    with open(json_path, "rb") as file:
        while True:
            # Skip separators; `line` counts the newlines consumed so far (for error messages).
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n,":
                    line += buffer[position] == "\n"
                    position += 1
                if position < len(buffer) or at_end:
                    break
                buffer, position = buffer[position:] + text_decoder.decode(file.read(READ_CHUNK_BYTES)), 0
                at_end = at_end or not buffer
            if is_list is None and position < len(buffer):
                is_list = buffer[position] == "["
                position += is_list
                continue
            if position >= len(buffer) or (is_list and buffer[position] == "]"):
                return
            while True:
                try:
                    record, end = decoder.raw_decode(buffer, position)
                    # A JSON value cut at the buffer's end can still parse (a number): read on unless at the end.
                    if end < len(buffer) or at_end:
                        break
                except json.JSONDecodeError as error:
                    if at_end:
                        raise ValueError(
                            f"{json_path}: record {index} (line {line}) is not valid JSON: {error.msg}"
                        ) from None
                chunk = file.read(READ_CHUNK_BYTES)
                at_end = not chunk
                buffer, position = buffer[position:] + text_decoder.decode(chunk, final=at_end), 0
            text = buffer[position:end]
            if _SURROGATE.search(text) or _SURROGATE_ESCAPE.search(text):  # rare: only then look for the field
                problem = _surrogate_problem(record, bad_bytes=bool(_SURROGATE.search(text)))
                if problem:
                    record_id = record.get("id") if isinstance(record, dict) else None
                    raise ValueError(
                        f"{json_path}: record {index} (id {record_id!r}, line {line}) has {problem}; write the file "
                        "as UTF-8 without lone surrogates."
                    )
            line += text.count("\n")
            position, index = end, index + 1
            if position > READ_CHUNK_BYTES:  # drop what is parsed, so the buffer stays about one chunk long
                buffer, position = buffer[position:], 0
            yield record


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _surrogate_problem(record, bad_bytes: bool) -> str | None:
    """What is wrong with the first string of `record` holding a lone surrogate, and where; None if none does."""

    def strings(value, where):
        if isinstance(value, str):
            yield where, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from strings(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for position, item in enumerate(value):
                yield from strings(item, f"{where}[{position}]")

    for where, value in strings(record, ""):
        match = _SURROGATE.search(value)
        if match:
            code = ord(match.group())
            if bad_bytes and 0xDC80 <= code <= 0xDCFF:  # how surrogateescape stores an undecodable byte
                what = f"the byte 0x{code - 0xDC00:02x}, which is not UTF-8,"
            else:
                what = f"a lone surrogate \\u{code:04x}"
            return f"{what} in `{where}` after {value[max(0, match.start() - 30) : match.start()]!r}"
    return None


def load_rows(
    source: str | os.PathLike,
    image_folder: str | os.PathLike | None = None,
    split: str = "train",
    subset: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load training data in any supported format as a memory-mapped row dataset (see the module docstring).

    Args:
        source: a LLaVA `.json`/`.jsonl` file; a local folder or file readable by `datasets.load_dataset`
            (parquet, e.g. the output of `convert_llava_json`); or a Hub dataset id.
        image_folder: the folder LLaVA JSON image paths are relative to (LLaVA JSON only).
        split: the split to read (folders and Hub datasets).
        subset: the configuration name (e.g. a the_cauldron subset such as "ai2d").
        cache_dir: where the Arrow form of a LLaVA JSON file is kept (see `load_llava_json`); the other formats use
            `datasets`' own cache.
    """
    path = Path(source)
    if path.is_file() and path.suffix in (".json", ".jsonl"):
        return load_llava_json(path, image_folder, cache_dir)
    if path.is_file() and path.suffix == ".parquet":
        raw = datasets.load_dataset("parquet", data_files=str(path), split=split)
    elif path.is_dir():
        raw = _load_local_folder(path, subset, split)
    else:
        raw = datasets.load_dataset(str(source), subset, split=split)
    data_format = _detect_format(raw.column_names)
    if data_format == "llava":
        # Batch by batch from Arrow to Arrow (cached by `datasets` like any map): no Python object per row kept.
        converted = raw.with_format("arrow").map(
            _llava_batch_to_table,
            batched=True,
            batch_size=ROWS_PER_BATCH,
            remove_columns=raw.column_names,
            features=ROW_FEATURES,
            fn_kwargs={"image_folder": None if image_folder is None else os.fspath(image_folder)},
        )
        return converted.with_format(None)
    convert = trl_row_to_row if data_format == "trl" else cauldron_row_to_row
    # Only the text columns are rewritten (one pass, cached by `datasets`); the image column is joined back as it is
    # stored, so its bytes (gigabytes for the_cauldron) are neither copied nor decoded.
    text_columns = [name for name in raw.column_names if name != "images"]
    # How many images each row has, read from the Arrow list offsets (the conversion places one part per image).
    counts = (
        pyarrow.compute.list_value_length(raw.data.column("images")).fill_null(0).to_pylist()
        if "images" in raw.column_names
        else [0] * len(raw)
    )
    converted = raw.select_columns(text_columns).map(
        lambda row, index: {
            key: value
            for key, value in convert({**row, "images": [None] * counts[index]}, index).items()
            if key != "images"
        },
        with_indices=True,
        remove_columns=text_columns,
        features=Features({"id": ROW_FEATURES["id"], "messages": ROW_FEATURES["messages"]}),
    )
    if "images" in raw.column_names:
        images = raw.select_columns(["images"])
        if images.features["images"] != ROW_FEATURES["images"]:  # e.g. a plain struct column: cast (a copy)
            images = images.cast(Features({"images": ROW_FEATURES["images"]}))
        converted = datasets.concatenate_datasets([converted, images], axis=1)
    else:  # text-only datasets
        converted = converted.add_column("images", [[] for _ in range(len(converted))], feature=ROW_FEATURES["images"])
    return converted.select_columns(list(ROW_FEATURES))


def to_conversation(row: dict) -> list[dict]:
    """The row's messages with the None-valued keys Arrow adds removed (`{"type": "image"}`, `{"type": "text", ...}`)."""
    return [
        {
            "role": message["role"],
            "content": [
                {key: value for key, value in part.items() if value is not None} for part in message["content"]
            ],
        }
        for message in row["messages"]
    ]


def convert_llava_json(
    json_path: str | os.PathLike,
    image_folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_shard_rows: int = 5000,
) -> Path:
    """Write an original LLaVA JSON + image folder as a Hub-ready dataset folder with the images embedded.

    Output: `output_dir/data/train-XXXXX-of-YYYYY.parquet` and a README.md (the dataset card: its task and how to
    load it; `datasets` finds the shards by their names). The rows are TRL's vision format, `images` (a `List(Image())`
    feature: `load_dataset` returns PIL images, as for TRL's and the_cauldron's datasets; the bytes are embedded, the
    names kept as the relative paths) and `messages`, plus `id`. Missing images are an error that lists them (run
    `llava-hf data check` first). Shards are built one at a time in memory, so memory stays at one shard's images.
    The folder is written next to its final place and moved in at the end, so a crash never leaves a half-written
    dataset.
    """
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} already exists; remove it or choose another output folder.")
    raw = load_llava_json(json_path, image_folder).cast_column("images", List(Image(decode=False)))
    missing = [
        (record_id, image["path"])
        for record_id, images in zip(raw["id"], raw["images"])
        for image in images
        if not Path(image["path"]).is_file()
    ]
    if missing:
        listed = ", ".join(f"{record_id}: {path}" for record_id, path in missing[:5])
        raise FileNotFoundError(f"{len(missing)} image(s) are missing ({listed}); fix the paths or the image folder.")
    folder = Path(image_folder)

    def embed(row):
        return {
            "images": [
                {"bytes": Path(image["path"]).read_bytes(), "path": str(Path(image["path"]).relative_to(folder))}
                for image in row["images"]
            ]
        }

    # Staged next to output_dir and renamed into place when complete, with normal permissions (mkdtemp's are 0700).
    with staged_directory(output_dir) as staging:
        num_shards = max(1, -(-len(raw) // max_shard_rows))
        (staging / "data").mkdir()
        for shard_index in range(num_shards):
            shard = raw.shard(num_shards, shard_index, contiguous=True)
            embedded = shard.map(embed, features=raw.features, keep_in_memory=True)
            # Decodable images in the written schema: readers get PIL images without casting.
            embedded = embedded.cast_column("images", List(Image()))
            embedded.to_parquet(str(staging / "data" / f"train-{shard_index:05d}-of-{num_shards:05d}.parquet"))
        (staging / "README.md").write_text(dataset_card(output_dir.name, Path(json_path).name, len(raw)))
    return output_dir


def _load_local_folder(folder: Path, subset: str | None, split: str) -> Dataset:
    """`datasets.load_dataset(folder)` with the folder's data files named explicitly. For a folder whose card declares
    `configs` (a Hub dataset cloned with git, say), `datasets` (5.x) otherwise keys its cache by the card and the
    folder's name alone: the folder updated in place, or another folder of the same name, would load the first one's
    rows. Named data files key the cache by the files themselves. (A folder without data files raises `datasets`'
    EmptyDatasetError here, as `load_dataset` would.)"""
    data_files = datasets.load_dataset_builder(str(folder), subset).config.data_files
    files = {name: list(paths) for name, paths in data_files.items()}
    return datasets.load_dataset(str(folder), subset, split=split, data_files=files)


def dataset_card(name: str, source_name: str, num_rows: int) -> str:
    """The README.md of a converted dataset: its task, and how to load it.

    The card declares no `configs`: the shards' names (`data/train-XXXXX-of-YYYYY.parquet`) are the layout
    `datasets` finds by itself, locally and on the Hub, and a `configs` block would make a consumer's plain
    `load_dataset(folder)` cache the folder by its card and name alone (see `_load_local_folder`)."""
    return f"""---
task_categories:
- image-text-to-text
---
# {name}

Converted with `llava-hf data convert` from `{source_name}`: {num_rows} rows, images embedded. Columns: `id`,
`images` (a list of images) and `messages` (TRL's vision format: `role`, and `content` parts of type `image` or
`text`).

## Load it

```python
from datasets import load_dataset

dataset = load_dataset("{name}", split="train")  # this folder's path, or its Hub id once pushed
row = dataset[0]
print(row["images"])  # PIL images
print(row["messages"])
```

TRL trains on it as it is, e.g. `trl sft --dataset_name {name} --model_name_or_path <a vision-language model>`.
"""


__all__ = [
    "ROW_FEATURES",
    "convert_llava_json",
    "load_llava_json",
    "load_rows",
    "llava_records_to_table",
    "to_conversation",
]
