"""`import llava_hf` is cheap, the first use of its classes registers the Auto classes, and commands answer --help and
bad flags at once.

Each check runs in a fresh interpreter (a subprocess), because what matters is what one import pulls in."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "llava-hf")


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_package_datagen_scorers_and_cli_import_no_torch():
    modules = [
        "llava_hf",
        "llava_hf.cli",
        "llava_hf.datagen.pipeline",
        "llava_hf.datagen.generate_data_command",
        "llava_hf.evaluation.scienceqa",
        "llava_hf.evaluation.pope",
        "llava_hf.evaluation.llava_bench",
        "llava_hf.evaluation.evaluate_command",
        "llava_hf.utils.io",
        "llava_hf.utils.command_line",
    ]
    code = f"import sys\nfor name in {modules!r}: __import__(name)\nprint(sorted({{'torch', 'transformers'}} & set(sys.modules)))"
    assert run_python(code) == "[]"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from llava_hf.testing import make_tiny_config, make_tiny_model, make_tiny_processor

    # a linear projector: the `llava_hf` model type (built-in llava's projector is always mlp2x_gelu), which only the
    # Auto registration makes loadable; the processor is transformers' own LlavaProcessor either way
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    make_tiny_model(make_tiny_config(projector_type="linear")).save_pretrained(folder)
    make_tiny_processor(chat_template="vicuna_v1").save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "first_import",
    [
        "import llava_hf; llava_hf.register_auto_classes()",  # registering explicitly
        "from transformers import AutoConfig; from llava_hf import LlavaForConditionalGeneration",  # Auto loaded first
        "import llava_hf.modeling",  # the model classes register when their package is imported
        "from llava_hf import LlavaConfig",
    ],
)
def test_auto_classes_load_a_saved_checkpoint_after_any_first_import(checkpoint, first_import):
    code = (
        f"{first_import}\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        f"model = AutoModelForImageTextToText.from_pretrained({str(checkpoint)!r})\n"
        f"processor = AutoProcessor.from_pretrained({str(checkpoint)!r})\n"
        "print(type(model).__name__, type(processor).__name__, model.config.model_type)"
    )
    assert run_python(code) == "LlavaHfForConditionalGeneration LlavaProcessor llava_hf"


def test_public_names_resolve_lazily():
    code = (
        "import llava_hf\n"
        "from llava_hf import LlavaForConditionalGeneration, LlavaHfForConditionalGeneration, get_chat_template\n"
        "print(LlavaForConditionalGeneration is LlavaHfForConditionalGeneration, 'USER' in get_chat_template('vicuna_v1'))"
    )
    assert run_python(code) == "True True"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import llava_hf

        llava_hf.Nope  # noqa: B018


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--task", "nosuch", "--data", "x", "--output-dir", "y"], "invalid choice: 'nosuch'"),
        (["generate-data", "--output-dir", "y", "--limit", "abc"], "invalid int value: 'abc'"),
        (["generate-data", "--output-dir", "y"], "give exactly one input"),
        (["data"], "choose a subcommand: check or convert"),
        (["data", "check"], "the following arguments are required: --source"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message):
    result = subprocess.run([CONSOLE_SCRIPT, *argv], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_help_shows_choices_and_data_help_succeeds():
    evaluate_help = subprocess.run([CONSOLE_SCRIPT, "evaluate", "--help"], capture_output=True, text=True, check=True)
    assert "{scienceqa,pope,llava_bench}" in evaluate_help.stdout
    datagen_help = subprocess.run(
        [CONSOLE_SCRIPT, "generate-data", "--help"], capture_output=True, text=True, check=True
    )
    assert "{openai,rule-based}" in datagen_help.stdout and "--save_dataset [SAVE_DATASET]" in datagen_help.stdout
    data_help = subprocess.run([CONSOLE_SCRIPT, "data", "--help"], capture_output=True, text=True, check=True)
    assert "check" in data_help.stdout and "convert" in data_help.stdout


def test_datagen_and_scoring_runs_import_no_torch(tmp_path):
    # a real rule-based `generate-data` run and a real POPE scoring run (answers given, no model): neither needs torch
    pope = Path(__file__).parent / "assets" / "evaluation" / "pope"
    rows = [json.loads(line) for line in (pope / "coco_pope_popular.json").read_text().splitlines()]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        "".join(json.dumps({"question_id": f"popular-{r['question_id']}", "text": "Yes"}) + "\n" for r in rows)
    )
    caps_boxes = Path(__file__).parent / "assets" / "datagen" / "caps_boxes_coco2014_val_80.jsonl"
    runs = [
        [
            "generate-data",
            "--input",
            str(caps_boxes),
            "--output-dir",
            str(tmp_path / "data"),
            "--teacher",
            "rule-based",
            "--limit",
            "3",
        ],
        [
            "evaluate",
            "--task",
            "pope",
            "--data",
            str(pope),
            "--image-folder",
            str(pope / "images"),
            "--pope-splits",
            "popular",
        ]
        + ["--predictions", str(predictions), "--output-dir", str(tmp_path / "scores")],
    ]
    code = (
        "import sys\nfrom llava_hf.cli import main\n"
        f"statuses = [main(argv) for argv in {runs!r}]\n"
        "print(statuses, sorted({'torch', 'transformers.modeling_utils', 'trl', 'datasets'} & set(sys.modules)))"
    )
    assert run_python(code).splitlines()[-1] == "[0, 0] []"
    assert json.loads((tmp_path / "scores" / "results.json").read_text())["num_answered"] == len(rows)
    assert (tmp_path / "data" / "llava_instruct.json").is_file()
