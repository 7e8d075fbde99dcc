"""`kill -9` a real generation subprocess mid-run, twice, then re-run the same command: the job finishes without
re-sending any request whose result was journaled, without duplicates and without corrupt lines."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import llava_hf
from helpers.datagen_teacher import CAPS_BOXES, TeacherScript, load_coco_images
from helpers.openai_server import OpenAIServer

SOURCE_ROOT = str(Path(llava_hf.__file__).parents[1])
IMAGES, TYPES = 40, 3


def journaled_jobs(journal: Path) -> list[tuple[str, str]]:
    """Jobs with a complete journal line; a torn last line (allowed after a kill) is ignored, any other bad line fails."""
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


def test_kill_9_twice_then_resume(tmp_path):
    coco_images = load_coco_images()
    teacher_script = TeacherScript(coco_images)
    env = {**os.environ, "PYTHONPATH": SOURCE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with OpenAIServer(responder=teacher_script, latency=0.05) as server:
        command = [sys.executable, "-m", "llava_hf.datagen.cli", "--input", str(CAPS_BOXES), "--limit", str(IMAGES)]
        command += ["--output-dir", str(tmp_path), "--base-url", server.base_url, "--model", "teacher-x"]
        command += ["--concurrency", "4"]
        journaled_before = []
        for kill_after in (25, 70):  # requests seen by the server, counted over all runs
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while len(teacher_script.jobs_requested) < kill_after:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "the generation subprocess made no progress"
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL
            sent_before = len(teacher_script.jobs_requested)
            journaled = journaled_jobs(tmp_path / "journal.jsonl")
            assert len(journaled) == len(set(journaled)) and set(journaled_before) <= set(journaled)
            assert sent_before - len(journaled) <= 4 * 2  # at most the in-flight requests of each kill are lost
            journaled_before = journaled

        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr
        resent = teacher_script.jobs_requested[sent_before:]

    assert not set(resent) & set(journaled_before), "a journaled request was sent again"
    assert len(resent) == len(set(resent)) == IMAGES * TYPES - len(journaled_before)
    journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == len({entry["key"] for entry in journal}) == IMAGES * TYPES
    records = json.loads((tmp_path / "llava_instruct.json").read_text())
    assert len(records) == len({record["id"] for record in records}) == IMAGES * TYPES
    assert not [path.name for path in tmp_path.iterdir() if ".tmp-" in path.name]  # no stray temp files
