"""Files that survive `kill -9` at any moment: atomic writes, staged folders and append-only JSONL logs.

- `atomic_write(path, text)`: a temporary file in the same folder, fsync'd, renamed over `path`, then the folder
  fsync'd, so a reader (and a crash at any moment) sees the old file or the new one, never half of one, and the new
  name survives a power cut.
- `staged_directory(destination)`: build a folder next to its destination and rename it into place only when complete,
  with the permissions a plain `mkdir` would give (`tempfile.mkdtemp` makes it 0700, safetensors writes 0600 files);
  on failure the half-built folder is removed and the destination is untouched.
- `JsonlLog(path)`: one JSON object per line, each append written with a single `write` on an `O_APPEND` descriptor
  and fsync'd before it counts. A kill can leave at most one torn line at the very end; it is cut off when the log is
  reopened (a last line that parses but lacks its newline was complete and is kept). `read_jsonl` reads such a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per file is then up to the user
    fcntl = None

TEMPORARY_MARKER = ".tmp-"  # temporary names are `.<name>.tmp-<random>`, so leftovers of a killed run can be found


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make the names in `folder` (a new file, a rename) durable, not only the files' contents (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Replace `path` with `data` (text or bytes) so readers and a crash see the old or the new file, never half.

    The file gets the permissions `open(path, "w")` would give (not mkstemp's 0600). Returns `path` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMPORARY_MARKER}")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode(encoding) if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)
    return path


def remove_leftovers(folder: str | os.PathLike) -> None:
    """Delete the temporary files `atomic_write` leaves when it is killed between writing and renaming."""
    for leftover in Path(folder).glob(f".*{TEMPORARY_MARKER}*"):
        if leftover.is_file():
            leftover.unlink()


def make_shareable(folder: str | os.PathLike) -> None:
    """Give `folder` and everything in it the permissions a plain mkdir/open would (mode 0777/0666 minus umask)."""
    umask = _umask()
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def staged_directory(destination: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """`with staged_directory(dest) as staging:` fill `staging`; on success it becomes `dest` in one rename.

    `staging` is a new folder next to `dest` (same file system, so the rename is atomic). When the block raises, the
    staging folder is removed and `dest` is untouched. Without `replace`, `dest` must not exist when the block ends
    (callers check that up front with a message naming the fix); with `replace`, an existing `dest` is moved aside,
    the new folder renamed in, and the old one deleted.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}{TEMPORARY_MARKER}", dir=destination.parent))
    try:
        yield staging
        make_shareable(staging)
        old = None
        if replace and destination.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
            os.replace(destination, old)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(destination.parent)
    if old is not None:
        shutil.rmtree(old)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON values of a JSONL file written by `JsonlLog`, in order.

    A torn last line (a writer killed mid-line) is ignored; a last line that parses but lacks its newline counts. A bad
    line anywhere else raises ValueError naming the file and line (the file was edited or two writers raced).
    """
    return [record for _, record in numbered_jsonl(path)]


def numbered_jsonl(path: str | os.PathLike) -> list[tuple[int, object]]:
    """`read_jsonl` with each value's 1-based line number, for errors that point at a line."""
    numbered, _ = _parse(Path(path), Path(path).read_bytes())
    return numbered


class JsonlLog:
    """An append-only JSONL file opened for appending; `entries` holds what was in it already.

    Opening repairs a torn last line so appends start on a fresh line. With `lock=True` the log holds an exclusive
    `flock` until closed, so a second process on the same file fails fast instead of interleaving lines; the kernel
    drops the lock when the process dies, however it dies.
    """

    def __init__(self, path: str | os.PathLike, lock: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        if lock and fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._fd)
                raise RuntimeError(
                    f"another process is writing {self.path}; wait for it to finish or use another output folder"
                ) from None
        fsync_directory(self.path.parent)  # make the new file's name durable, not only its content
        try:
            numbered, complete_end = _parse(self.path, self.path.read_bytes())
        except BaseException:
            self.close()
            raise
        self.entries = [entry for _, entry in numbered]
        size = os.fstat(self._fd).st_size
        if complete_end < size:  # a torn last line from a killed writer: cut it off
            os.ftruncate(self._fd, complete_end)
            os.fsync(self._fd)
        elif size and self.path.read_bytes()[-1:] != b"\n":  # complete, only its newline is missing
            self._write(b"\n")

    def append(self, *entries: dict) -> None:
        """Write `entries` (one line each) in one write and fsync them; when this returns they survive a crash."""
        if entries:
            self._write("".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries).encode("utf-8"))

    def _write(self, data: bytes) -> None:
        while data:  # a regular-file write is normally whole; loop in case it is not
            written = os.write(self._fd, data)
            data = data[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the flock
            self._fd = -1

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _parse(path: Path, data: bytes) -> tuple[list[tuple[int, object]], int]:
    """([(line number, value)], the byte offset where the complete lines end)."""
    lines = data.split(b"\n")
    records = []
    offset = 0
    for line_number, line in enumerate(lines, start=1):
        last = line_number == len(lines)
        if line.strip():
            try:
                records.append((line_number, json.loads(line)))
            except ValueError as error:
                if last:  # torn by a kill mid-write
                    return records, offset
                raise ValueError(
                    f"{path}:{line_number} is not valid JSON ({error}), and only the last line can be torn by a kill; "
                    "remove that line (or fix it) and re-run"
                ) from None
        offset += len(line) + (0 if last else 1)
    return records, offset


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
