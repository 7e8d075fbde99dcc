"""The installed package: light core import, the console script and its command table."""

import subprocess
import sys
from pathlib import Path

import pytest

from llava_hf.cli import COMMANDS, command_function
from llava_hf.cli import main as llava_hf_main

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "llava-hf")  # installed by `pip install -e .`


def test_core_import_pulls_no_optional_or_training_dependencies():
    code = (
        "import sys, llava_hf\n"
        "heavy = [name for name in ('trl', 'peft', 'datasets', 'openai', 'httpx', 'uvicorn', 'matplotlib') if name in sys.modules]\n"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_console_script_lists_every_command():
    result = subprocess.run([CONSOLE_SCRIPT, "--help"], capture_output=True, text=True, check=True)
    for command in COMMANDS:
        assert command in result.stdout


def test_every_command_has_a_function():
    for command, (_, help_text) in COMMANDS.items():
        assert callable(command_function(command)), command
        assert help_text


def test_unknown_command_is_an_error():
    result = subprocess.run([CONSOLE_SCRIPT, "trian"], capture_output=True, text=True)
    assert result.returncode == 2 and "llava-hf --help" in result.stderr


def test_a_command_whose_extra_is_missing_exits_2_naming_the_extra(monkeypatch, capsys):
    # `serve` needs the `serve` extra (FastAPI + uvicorn); without it --help still lists the flags, and running the
    # server says what to install, in one line, no traceback.
    monkeypatch.setitem(sys.modules, "fastapi", None)  # None in sys.modules makes `import fastapi` raise ImportError
    monkeypatch.delitem(sys.modules, "llava_hf.serving.server", raising=False)
    with pytest.raises(SystemExit) as exit:
        llava_hf_main(["serve", "--help"])
    assert exit.value.code == 0 and "--max_batch_size" in capsys.readouterr().out
    assert llava_hf_main(["serve", "--model", "some/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "pip install 'llava_hf[serve]'" in error


def test_evaluation_evaluate_stays_the_function_after_the_cli_is_imported():
    """The command's module is `evaluation.cli`: a submodule named `evaluate` would replace the package's
    `evaluate()` function with itself as soon as anything (the CLI) imported it."""
    import llava_hf.evaluation
    import llava_hf.evaluation.evaluate_command  # noqa: F401

    assert (
        callable(llava_hf.evaluation.evaluate) and llava_hf.evaluation.evaluate.__module__ == "llava_hf.evaluation.run"
    )
