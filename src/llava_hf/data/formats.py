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

import json
import os
import re
from pathlib import Path

import datasets
from datasets import Dataset, Features, Image, List, Value

from ..utils.io import staged_directory

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


def llava_record_to_row(record: dict, image_folder: str | os.PathLike | None) -> dict:
    """One original LLaVA record as a row (image paths resolved against `image_folder`, not opened).

    Follows the original preprocessing (haotian-liu/LLaVA `llava/train/train.py::preprocess_multimodal`): a leading
    `gpt` turn is dropped; a turn containing `<image>` loses its occurrences, is stripped, and gets its images at its
    front: one image part per `<image>`, so a turn with two tags and one image is a count mismatch that `check_rows`
    reports (the original would merge the tags into one silently). Nothing is repaired here: count mismatches and
    role errors are reported by `check_rows`, never silently fixed.
    """
    record_id = str(record.get("id", ""))
    image_field = record.get("image")
    relative_paths = [] if image_field is None else [image_field] if isinstance(image_field, str) else list(image_field)
    if relative_paths and image_folder is None:
        raise ValueError(f"record {record_id!r} has images {relative_paths} but no image folder was given.")
    images = [str(Path(image_folder) / path) for path in relative_paths]

    turns = list(record.get("conversations") or [])
    if turns and turns[0].get("from") == "gpt":  # the original drops a leading answer (it has no question)
        turns = turns[1:]
    messages = []
    for turn in turns:
        speaker, value = turn.get("from"), turn.get("value") or ""
        if speaker not in LLAVA_ROLES:
            raise ValueError(
                f"record {record_id!r} has a turn from {speaker!r}; LLaVA JSON turns are from 'human' or 'gpt'."
            )
        content = []
        if IMAGE_TOKEN in value:
            content += [{"type": "image", "text": None} for _ in range(value.count(IMAGE_TOKEN))]
            value = value.replace(IMAGE_TOKEN, "").strip()
        content.append({"type": "text", "text": value})
        messages.append({"role": LLAVA_ROLES[speaker], "content": content})
    return {"id": record_id, "images": images, "messages": messages}


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


def load_llava_json(json_path: str | os.PathLike, image_folder: str | os.PathLike | None = None) -> Dataset:
    """The original LLaVA JSON (a list, or JSON lines) as a row dataset with lazily opened images.

    Text that is not valid UTF-8 (undecodable bytes, or a lone surrogate such as `"\\ud800"` that cannot be stored)
    raises a ValueError naming the record, its line and the field, not a codec error deep in Arrow.
    """
    raw = Path(json_path).read_bytes()
    try:
        text, bad_bytes = raw.decode("utf-8"), False
    except UnicodeDecodeError:  # undecodable bytes become lone surrogates, reported per record below
        text, bad_bytes = raw.decode("utf-8", errors="surrogateescape"), True
    # The original files are one JSON list; some forks write JSON lines.
    if text.lstrip().startswith("["):
        records = json.loads(text)
        lines = None
    else:
        numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
        records = [json.loads(line) for _, line in numbered]
        lines = [number for number, _ in numbered]
    if bad_bytes or _SURROGATE_ESCAPE.search(text):  # only then can a string hold a lone surrogate
        for index, record in enumerate(records):
            problem = _surrogate_problem(record, bad_bytes)
            if problem:
                line = lines[index] if lines else _record_line(text, index)
                record_id = record.get("id") if isinstance(record, dict) else None
                raise ValueError(
                    f"{json_path}: record {index} (id {record_id!r}, line {line}) has {problem}; write the file as "
                    "UTF-8 without lone surrogates."
                )
    rows = [llava_record_to_row(record, image_folder) for record in records]
    return Dataset.from_list(rows, features=ROW_FEATURES)


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


def _record_line(text: str, index: int) -> int | None:
    """The line record `index` of a JSON list starts on (None when the text cannot be walked)."""
    decoder, position = json.JSONDecoder(), text.index("[") + 1
    try:
        for current in range(index + 1):
            while text[position] in " \t\r\n,":
                position += 1
            if current == index:
                return text.count("\n", 0, position) + 1
            _, position = decoder.raw_decode(text, position)
    except (ValueError, IndexError):
        return None
    return None


def load_rows(
    source: str | os.PathLike,
    image_folder: str | os.PathLike | None = None,
    split: str = "train",
    subset: str | None = None,
) -> Dataset:
    """Load training data in any supported format as a row dataset (see the module docstring).

    Args:
        source: a LLaVA `.json`/`.jsonl` file; a local folder or file readable by `datasets.load_dataset`
            (parquet, e.g. the output of `convert_llava_json`); or a Hub dataset id.
        image_folder: the folder LLaVA JSON image paths are relative to (LLaVA JSON only).
        split: the split to read (folders and Hub datasets).
        subset: the configuration name (e.g. a the_cauldron subset such as "ai2d").
    """
    path = Path(source)
    if path.is_file() and path.suffix in (".json", ".jsonl"):
        return load_llava_json(path, image_folder)
    if path.is_file() and path.suffix == ".parquet":
        raw = datasets.load_dataset("parquet", data_files=str(path), split=split)
    else:
        raw = datasets.load_dataset(str(source), subset, split=split)
    data_format = _detect_format(raw.column_names)
    if data_format == "llava":
        rows = [llava_record_to_row(record, image_folder) for record in raw]
        return Dataset.from_list(rows, features=ROW_FEATURES)
    convert = trl_row_to_row if data_format == "trl" else cauldron_row_to_row
    # Only the text columns are rewritten; the images stay undecoded bytes/paths here (decoding every image just to
    # count them would read the whole dataset) and become lazily decoded `Image` features again in the final cast.
    if "images" in raw.column_names:
        raw = raw.cast_column("images", List(Image(decode=False)))
    converted = raw.map(
        lambda row, index: {key: value for key, value in convert(row, index).items() if key != "images"},
        with_indices=True,
        remove_columns=[name for name in raw.column_names if name != "images"],
    )
    if "images" not in converted.column_names:  # text-only datasets
        converted = converted.add_column("images", [[] for _ in range(len(converted))])
    return converted.select_columns(list(ROW_FEATURES)).cast(ROW_FEATURES)


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

    Output: `output_dir/data/train-XXXXX-of-YYYYY.parquet` (image bytes inside, names kept as the relative paths)
    and a README.md whose dataset-card header points `datasets` at the shards. Missing images are an error that
    lists them (run `llava-hf data check` first). The folder is written next to its final place and moved in at the
    end, so a crash never leaves a half-written dataset.
    """
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} already exists; remove it or choose another output folder.")
    dataset = load_llava_json(json_path, image_folder)
    raw = dataset.cast_column("images", List(Image(decode=False)))
    missing = [
        (row["id"], image["path"]) for row in raw for image in row["images"] if not Path(image["path"]).is_file()
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

    embedded = raw.map(embed, features=raw.features)
    # Staged next to output_dir and renamed into place when complete, with normal permissions (mkdtemp's are 0700).
    with staged_directory(output_dir) as staging:
        num_shards = max(1, -(-len(embedded) // max_shard_rows))
        (staging / "data").mkdir()
        for shard_index in range(num_shards):
            shard = embedded.shard(num_shards, shard_index, contiguous=True)
            shard.to_parquet(str(staging / "data" / f"train-{shard_index:05d}-of-{num_shards:05d}.parquet"))
        (staging / "README.md").write_text(
            "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n"
            f"# {output_dir.name}\n\nConverted with `llava-hf data convert` from `{Path(json_path).name}`: "
            f"{len(embedded)} rows, images embedded. Columns: `id`, `images`, `messages` (TRL's vision format).\n"
        )
    return output_dir


__all__ = [
    "ROW_FEATURES",
    "convert_llava_json",
    "load_llava_json",
    "load_rows",
    "llava_record_to_row",
    "to_conversation",
]
