"""Subprocesses in tests: wait for the process to exit (an event, never a wall-clock budget) and kill its whole
process group if the test stops first, so no child outlives a failing test."""

from __future__ import annotations

import os
import signal
import subprocess


def run_to_exit(command: list[str], **popen_arguments) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True)` without a timeout, in its own session."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen_arguments
    )
    try:
        stdout, stderr = process.communicate()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
