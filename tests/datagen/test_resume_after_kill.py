"""`kill -9` a real generation subprocess mid-run, twice, then re-run the same command: the job finishes without
re-sending any request whose result was journaled, without duplicates and without corrupt lines.

Every wait is for an event (journal lines written, the process exiting), never for a wall-clock budget, so the test
holds on a loaded machine; every subprocess runs in its own session and its whole process group is killed at the end.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llava_hf
from helpers.datagen_teacher import CAPS_BOXES, load_coco_images
from llava_hf.testing import OpenAIServer, TeacherScript

SOURCE_ROOT = str(Path(llava_hf.__file__).parents[1])
IMAGES, TYPES, CONCURRENCY = 40, 3, 4


def journaled_jobs(journal: Path) -> list[tuple[str, str]]:
    """Jobs with a complete journal line; a torn last line (allowed after a kill) is ignored, any other bad line fails."""
    if not journal.exists():
        return []
    lines = journal.read_bytes().split(b"\n")
    jobs = []
    for index, line in enumerate(lines):
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            assert index == len(lines) - 1, f"corrupt journal line {index + 1}"
            continue
        jobs.append((entry["id"], entry["type"]))
    return jobs


def wait_for_journal(process: subprocess.Popen, journal: Path, count: int, stderr: Path) -> None:
    """Block until `journal` holds `count` complete lines; fail at once if the process exits before that."""
    while len(journaled_jobs(journal)) < count:
        assert process.poll() is None, f"generation exited early ({process.returncode}): {stderr.read_text()[-2000:]}"
        time.sleep(0.01)


@pytest.mark.slow  # three interpreter starts: about a minute on a loaded 2-core machine
def test_kill_9_twice_then_resume(tmp_path):
    coco_images = load_coco_images()
    teacher_script = TeacherScript(coco_images)
    env = {**os.environ, "PYTHONPATH": SOURCE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    output_dir, journal, stderr = tmp_path / "out", tmp_path / "out" / "journal.jsonl", tmp_path / "stderr.txt"
    processes = []
    try:
        with OpenAIServer(responder=teacher_script, latency=0.05) as server:
            command = [sys.executable, "-m", "llava_hf.datagen.generate_data_command", "--input", str(CAPS_BOXES)]
            command += ["--limit", str(IMAGES), "--output-dir", str(output_dir)]
            command += ["--teacher-base-url", server.base_url]
            # A long request timeout: a request slowed by load must not be retried (that would count as re-sent).
            command += ["--teacher-model", "teacher-x", "--concurrency", str(CONCURRENCY), "--timeout", "3600"]

            def start() -> subprocess.Popen:
                with open(stderr, "ab") as log:  # a file, not a pipe: a pipe nobody reads can block the child
                    process = subprocess.Popen(
                        command, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
                    )
                processes.append(process)
                return process

            journaled_before = []
            for kill_after in (20, 60):  # journaled jobs, counted over all runs
                process = start()
                wait_for_journal(process, journal, kill_after, stderr)
                os.killpg(process.pid, signal.SIGKILL)
                assert process.wait() == -signal.SIGKILL
                sent_before = len(teacher_script.jobs_requested)
                journaled = journaled_jobs(journal)
                assert len(journaled) == len(set(journaled)) and set(journaled_before) <= set(journaled)
                # at most the requests in flight at each kill are lost
                assert sent_before - len(journaled) <= CONCURRENCY * 2
                journaled_before = journaled

            finished = start()
            assert finished.wait() == 0, stderr.read_text()[-2000:]
            resent = teacher_script.jobs_requested[sent_before:]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    assert not set(resent) & set(journaled_before), "a journaled request was sent again"
    assert len(resent) == len(set(resent)) == IMAGES * TYPES - len(journaled_before)
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(entries) == len({entry["key"] for entry in entries}) == IMAGES * TYPES
    records = json.loads((output_dir / "llava_instruct.json").read_text())
    assert len(records) == len({record["id"] for record in records}) == IMAGES * TYPES
    assert not [path.name for path in output_dir.iterdir() if ".tmp-" in path.name]  # no stray temp files
