"""The append-only journal that makes a generation run resumable after `kill -9` at any moment.

One JSON line per finished request (accepted or rejected), written with a single `write` on an `O_APPEND` descriptor
and `fsync`ed before the request counts as done. A kill can therefore leave at most one torn line at the very end (a
request that is then simply sent again); it is cut off when the journal is reopened. A bad line anywhere else means
the file was edited or two writers raced, and is an error. While a run holds the journal it holds an exclusive
`flock` on it, so a second run on the same output folder fails fast instead of interleaving lines; the kernel drops
the lock when the process dies, however it dies.

Final outputs are written with `write_atomic` (temp file, fsync, `os.replace`), so a reader sees the old file or
the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run per folder is then up to the user
    fcntl = None


class Journal:
    """Open (creating if needed) the journal at `path`; `entries` holds what earlier runs finished."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._fd)
                raise RuntimeError(
                    f"another process is writing {self.path}; wait for it to finish or use another --output-dir"
                ) from None
        _fsync_directory(self.path.parent)  # make the new file's name durable, not only its content
        self.entries = self._read_and_repair()

    def _read_and_repair(self) -> list[dict]:
        data = self.path.read_bytes()
        complete_end = data.rfind(b"\n") + 1
        if complete_end < len(data):
            # A torn last line from a killed writer: drop it so the next append starts on a fresh line.
            os.ftruncate(self._fd, complete_end)
            os.fsync(self._fd)
        entries = []
        for line_number, line in enumerate(data[:complete_end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                raise ValueError(
                    f"{self.path}:{line_number} is not valid JSON, and only the last line can be torn by a kill; "
                    "remove that line (its request will be sent again) and re-run"
                ) from None
        return entries

    def append(self, entry: dict) -> None:
        """Write one entry and fsync it; when this returns the entry survives a crash."""
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        while data:  # a regular-file write is normally whole; loop in case it is not
            written = os.write(self._fd, data)
            data = data[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the flock
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def write_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` so that readers, and a kill at any moment, see either the old or the new file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
