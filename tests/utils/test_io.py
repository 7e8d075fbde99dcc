"""utils.io: atomic writes, staged folders and JSONL logs, on real files (permissions, leftovers, torn lines, locks)."""

import json
import os
import stat
import subprocess
import sys

import pytest

from llava_hf.utils.io import JsonlLog, atomic_write, read_jsonl, remove_leftovers, staged_directory


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_write_replaces_with_normal_permissions_and_leaves_no_temporary(tmp_path, umask_022):
    path = atomic_write(tmp_path / "sub" / "a.json", "old")
    atomic_write(path, b"new bytes")
    assert path.read_bytes() == b"new bytes" and mode(path) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "a.txt", "old")
    with pytest.raises(TypeError):
        atomic_write(path, 42)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    (tmp_path / ".a.txt.tmp-killed").write_text("half")  # what a kill between write and rename leaves
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_staged_directory_gets_plain_mkdir_permissions(tmp_path, umask_022):
    with staged_directory(tmp_path / "out") as staging:
        assert not (tmp_path / "out").exists()
        (staging / "data").mkdir()
        (staging / "data" / "x.bin").write_bytes(b"x")
        os.chmod(staging / "data" / "x.bin", 0o600)  # safetensors writes 0600 files
    assert mode(tmp_path / "out") == 0o755 and mode(tmp_path / "out" / "data" / "x.bin") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_directory_cleans_up_on_failure_and_replaces_when_asked(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with staged_directory(tmp_path / "out", replace=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (tmp_path / "out" / "old.txt").exists()
    with staged_directory(tmp_path / "out", replace=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_jsonl_log_repairs_a_torn_tail_keeps_a_complete_one_and_rejects_a_bad_middle_line(tmp_path):
    path = tmp_path / "log.jsonl"
    with JsonlLog(path) as log:
        log.append({"i": 0}, {"i": 1})
        log.append()
    path.write_bytes(path.read_bytes() + b'{"i": 2, "tor')  # killed mid-write
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    with JsonlLog(path) as log:
        assert log.entries == [{"i": 0}, {"i": 1}]
        log.append({"i": 2})
    assert path.read_text().splitlines() == ['{"i": 0}', '{"i": 1}', '{"i": 2}']
    path.write_bytes(path.read_bytes() + b'{"i": 3}')  # complete, only the newline is missing
    with JsonlLog(path) as log:
        assert log.entries[-1] == {"i": 3}
        log.append({"i": 4})
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == [0, 1, 2, 3, 4]
    path.write_text('{"i": 0}\n{not json\n{"i": 2}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2 is not valid JSON.*remove that line \(or fix it\)"):
        JsonlLog(path)
    with pytest.raises(ValueError, match="log.jsonl:2"):
        read_jsonl(path)


def test_a_locked_log_refuses_a_second_writer_until_the_first_process_dies(tmp_path):
    path = tmp_path / "journal.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from llava_hf.utils.io import JsonlLog; JsonlLog({str(path)!r}, lock=True); "
            "print('locked', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="another process is writing"):
            JsonlLog(path, lock=True)
    finally:
        holder.kill()
        holder.wait()
    with JsonlLog(path, lock=True) as log:  # the kernel dropped the lock with the process
        log.append({"ok": True})
    assert read_jsonl(path) == [{"ok": True}]
