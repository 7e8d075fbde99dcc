"""A benchmark's rows from Hub-layout data: one split as a `datasets.Dataset`, and the check that it has the columns a
layout needs (a clear error instead of a KeyError deep in a task builder)."""

from __future__ import annotations

from pathlib import Path


def load_rows(data, split: str):
    """A `datasets.Dataset` for one split of Hub-layout data.

    `data` may be a `Dataset`/`DatasetDict` already in memory, a folder written by `save_to_disk`, a folder of
    parquet files (the Hub's `data/<split>-*.parquet` layout; files whose name contains the split are used, all files
    if none does), a single parquet file, or a Hub repo id (read from the local cache when offline).
    """
    import datasets

    if isinstance(data, datasets.DatasetDict):
        return _pick_split(data, split, "the DatasetDict")
    if isinstance(data, datasets.Dataset):
        return data
    path = Path(data)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        return _pick_split(loaded, split, str(path)) if isinstance(loaded, datasets.DatasetDict) else loaded
    if path.is_dir():
        files = sorted(str(file) for file in path.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{path} holds no parquet files and no dataset saved with save_to_disk.")
        chosen = [file for file in files if split in Path(file).name] or files
        return datasets.load_dataset("parquet", data_files=chosen, split="train")
    if path.suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    return datasets.load_dataset(str(data), split=split)


def _pick_split(dataset_dict, split: str, where: str):
    if split not in dataset_dict:
        raise ValueError(f"{where} has no split {split!r}; it has {sorted(dataset_dict)}.")
    return dataset_dict[split]


def require_columns(rows, columns: list[str], layout: str) -> None:
    """Raise naming the missing columns when `rows` lacks any of `columns`."""
    missing = [column for column in columns if column not in rows.column_names]
    if missing:
        raise ValueError(
            f"the data lacks column(s) {missing} of the {layout} layout (it has {rows.column_names}); pass data in "
            "that layout or the original files."
        )
