"""Every `llava-hf` command follows `llava_hf.utils.command_line`: `--help` exits 0 and lists all of the command's flags, a bad
flag exits 2 with one line on stderr, and neither loads torch, transformers' models, TRL, datasets or FastAPI (what
made `--help` take 5-13 s). Each check runs the command in a fresh interpreter and reads its `sys.modules`."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from llava_hf.cli import COMMANDS
from llava_hf.conversion.arguments import ConvertArguments, ExportArguments, QuantizeArguments
from llava_hf.data.data_command import CheckArguments, DataConvertArguments
from llava_hf.datagen.pipeline import GenerateDataArguments
from llava_hf.demo.end_to_end import DemoArguments
from llava_hf.evaluation.evaluate_command import EvaluateArguments
from llava_hf.evaluation.scienceqa_to_llava_command import ScienceQAToLlavaArguments
from llava_hf.serving.arguments import (
    ChatArguments,
    GenerateArguments,
    ModelArguments,
    SamplingArguments,
    ServeArguments,
)
from llava_hf.training.arguments import LlavaRunArguments

HEAVY = ("torch", "transformers.modeling_utils", "trl", "datasets", "fastapi", "uvicorn", "openai")

# argv before --help -> the dataclasses whose fields it takes (and the extra flags it adds)
COMMAND_SETTINGS = {
    ("generate",): ((ModelArguments, SamplingArguments, GenerateArguments), ()),
    ("chat",): ((ModelArguments, SamplingArguments, ChatArguments), ()),
    ("serve",): ((ModelArguments, ServeArguments), ()),
    ("demo",): ((DemoArguments,), ()),
    ("convert",): ((ConvertArguments,), ("source", "destination")),
    ("export",): ((ExportArguments,), ("source", "destination")),
    ("quantize",): ((QuantizeArguments,), ("source", "destination")),
    ("generate-data",): ((GenerateDataArguments,), ()),
    ("data", "check"): ((CheckArguments,), ()),
    ("data", "convert"): ((DataConvertArguments,), ()),
    ("train",): ((LlavaRunArguments,), ("--config", "--help-all")),
    ("evaluate",): ((EvaluateArguments,), ()),
    ("scienceqa-to-llava",): ((ScienceQAToLlavaArguments,), ()),
}

# argv -> a piece of the one-line error (every one answered before anything heavy loads)
BAD_INPUT = {
    ("generate", "--nope"): "unrecognized arguments: --nope",
    ("generate", "--max_new_tokens", "abc"): "invalid int value: 'abc'",
    ("generate", "--temperature", "-1"): "--temperature must be >= 0",
    ("chat", "--nope"): "unrecognized arguments: --nope",
    ("serve", "--nope"): "unrecognized arguments: --nope",
    ("serve", "--max_batch_size", "0"): "--max_batch_size must be >= 1",
    ("demo", "--nope"): "unrecognized arguments: --nope",
    ("demo", "--vision-feature-layer", "3"): "--vision-feature-layer must be -2",
    ("convert", "--nope"): "the following arguments are required: source, destination",
    ("convert", "/no/such", "out"): "source '/no/such' is neither a folder nor a Hub repo id",
    ("export", "/no/such", "out"): "source '/no/such' is not a folder",
    ("export", "--to", "vllm", "a", "b"): "unknown target 'vllm'",
    ("quantize", "/no/such", "out"): "source '/no/such' is not a folder",
    ("generate-data", "--output-dir", "out", "--nope"): "unrecognized arguments: --nope",
    ("data", "--nope"): "choose a subcommand",
    ("data", "check", "--source", "s", "--nope"): "unrecognized arguments: --nope",
    ("train", "--stage", "nosuch"): "invalid choice: 'nosuch'",
    ("train", "--lora_r", "abc"): "invalid int value: 'abc'",
    ("train", "--config", "/no/such.yaml"): "--config /no/such.yaml: no such file",
    ("evaluate", "--nope"): "the following arguments are required: --task",
    ("scienceqa-to-llava", "--data", "d", "--output-dir", "o", "--nope"): "unrecognized arguments: --nope",
}


def run_command(argv) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `llava-hf *argv` in a fresh interpreter; return the result and the heavy modules it imported."""
    code = (
        "import json, sys\n"
        "from llava_hf.cli import main\n"
        "try:\n"
        f"    status = main({list(argv)!r})\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        f"print(json.dumps(sorted(set({HEAVY!r}) & set(sys.modules))), file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    *stderr_lines, heavy = result.stderr.strip().splitlines()
    result.stderr = "\n".join(stderr_lines)
    return result, json.loads(heavy)


def test_the_table_covers_every_command():
    assert {argv[0] for argv in COMMAND_SETTINGS} == set(COMMANDS)
    assert {argv[0] for argv in BAD_INPUT} == set(COMMANDS)


@pytest.mark.parametrize("argv", list(COMMAND_SETTINGS), ids=" ".join)
def test_help_lists_every_flag_without_loading_torch(argv):
    result, heavy = run_command([*argv, "--help"])
    assert result.returncode == 0, result.stderr
    assert heavy == []
    settings, extra = COMMAND_SETTINGS[argv]
    flags = [f"--{field.name}" for settings_class in settings for field in dataclasses.fields(settings_class)]
    missing = [flag for flag in [*flags, *extra] if flag not in result.stdout]
    assert not missing, result.stdout
    # a help text that states its own default does not get argparse's "(default: None)" as well
    assert not re.search(r"\(default:[^()]*(\([^()]*\)[^()]*)*\)\.?\s+\(default:", result.stdout), result.stdout


@pytest.mark.parametrize("argv", list(BAD_INPUT), ids=" ".join)
def test_bad_input_exits_2_with_one_line_without_loading_torch(argv):
    result, heavy = run_command(argv)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and BAD_INPUT[argv] in result.stderr, result.stderr
    assert result.stderr.startswith(f"llava-hf {argv[0]}")
    assert heavy == []


def test_choices_are_shown():
    result, _ = run_command(["train", "--help"])
    assert "{pretrain,finetune,lora,qlora}" in result.stdout and "--help-all" in result.stdout


@pytest.mark.slow  # loads TRL and torch (several seconds, a minute on a loaded machine)
def test_train_flags_of_sft_config_are_checked_and_listed():
    result, _ = run_command(["train", "--stage", "pretrain", "--nope"])
    assert result.returncode == 2 and result.stderr == (
        "llava-hf train: error: unrecognized arguments: --nope (see `llava-hf train --help-all`)"
    )
    result, _ = run_command(["train", "--learning_rate", "abc"])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and "invalid float value" in result.stderr
    result, _ = run_command(["train", "--help-all"])
    assert result.returncode == 0
    assert "--learning_rate" in result.stdout and "--projector_learning_rate" in result.stdout
