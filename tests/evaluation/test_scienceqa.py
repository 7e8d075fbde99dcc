"""ScienceQA: answer parsing, the paper's table on hand-computed fixtures in both layouts, and prompts, converter
output and scoring compared with what the original LLaVA scripts produce on the same fixture."""

import json

import pytest

from helpers.evaluation_data import SCIENCEQA, SCIENCEQA_ORIGINAL, scienceqa_parquet, write_jsonl
from llava_hf.evaluation import evaluate, markdown_table, scienceqa
from llava_hf.testing import make_tiny_processor

CHOICES = ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        ("B.", "B"),
        (" (B) ", "B"),
        ("B)", "B"),
        ("B. dog", "B"),
        ("(C) bird", "C"),
        ("The answer is B.", "B"),
        ("Answer: Dogs bark.\\nThe answer is B.", "B"),
        ("The answer is (A).", "A"),
        ("dog", "B"),
        ("Dog.", "B"),
        ("The answer is bird.", "C"),
        ("D", None),  # beyond the 3 options
        ("The answer is D.", None),
        ("A cat is on the mat", None),  # the article, not option A
        ("The answer is A. The answer is B.", None),  # contradicts itself
        ("I am not sure", None),
        ("", None),
    ],
)
def test_parse_choice(text, letter):
    assert scienceqa.parse_choice(text, CHOICES) == letter


# Hand-computed from tests/assets/evaluation/scienceqa (see make_evaluation_fixtures.py): correct = 1, 2, 4;
# 5 is unparseable, 6 is missing, 3 picks the wrong option.
PREDICTIONS = {"1": "B", "2": "The answer is A.", "3": "(B) Ohio", "4": "Paris", "5": "I think maybe"}
EXPECTED = {
    "NAT": 100.0,
    "SOC": 50.0,
    "LAN": 0.0,
    "TXT": 50.0,
    "IMG": 100 / 3,
    "NO": 50.0,
    "G1-6": 100 / 3,
    "G7-12": 200 / 3,
    "Avg": 50.0,
    "IMG-subset accuracy": 100 / 3,
}


def check_scores(results, ids):
    assert results["metrics"] == pytest.approx(EXPECTED)
    assert results["unparseable"] == [{"question_id": ids["5"], "text": "I think maybe"}]
    assert results["missing"] == [ids["6"]]
    assert results["counts"]["IMG"] == {"correct": 1, "total": 3}
    assert results["table"]["columns"] == ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg"]


def test_scores_original_layout_and_original_answer_file(tmp_path):
    # the original LLaVA answer-file shape, int question ids
    answers = [
        {"question_id": int(pid), "prompt": "...", "text": text, "answer_id": "x", "model_id": "m", "metadata": {}}
        for pid, text in PREDICTIONS.items()
    ]
    path = write_jsonl(tmp_path / "answers.jsonl", answers)
    task = scienceqa.build_task(SCIENCEQA, "test")
    results = evaluate(task, predictions=path, output_dir=tmp_path / "out")
    check_scores(results, {pid: pid for pid in "123456"})
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["metrics"] == results["metrics"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| NAT | SOC | LAN | TXT | IMG | NO | G1-6 | G7-12 | Avg |" in table
    assert "| 100.00 | 50.00 | 0.00 | 50.00 | 33.33 | 50.00 | 33.33 | 66.67 | 50.00 |" in table
    assert markdown_table(results) == table


def test_scores_hub_layout(tmp_path):
    task = scienceqa.build_task(scienceqa_parquet(tmp_path), "test")
    # Hub rows have no pid: ids are the row indices (pid "1" is row 0)
    assert [example.id for example in task.examples] == ["0", "1", "2", "3", "4", "5"]
    assert [len(example.images) for example in task.examples] == [1, 0, 1, 0, 0, 1]
    predictions = {str(int(pid) - 1): {"question_id": str(int(pid) - 1), "text": t} for pid, t in PREDICTIONS.items()}
    results = scienceqa.score([])  # an empty run scores nothing and says so
    assert results["metrics"] == {}
    from llava_hf.evaluation import score_task

    check_scores(score_task(task, predictions), {pid: str(int(pid) - 1) for pid in "123456"})


# ---------------------------------------------------------------------------------------------------------------------
# The original scripts' strings (tests/assets/evaluation/scienceqa_original, written by make_scienceqa_original_outputs.py
# from haotian-liu/LLaVA c121f04's own code on the fixture above).

FINE_TUNING_FORMATS = scienceqa.PROMPT_FORMATS[1:]


def original_run(prompt_format):
    """The original model_vqa_science.py run a prompt format is evaluated like (sqa.sh / sqa_eval_batch.sh)."""
    return "CQM-A_single-pred_vicuna_v1" if prompt_format == "zero_shot" else f"{prompt_format}_llava_v1"


def test_every_offered_format_has_original_outputs():
    assert len(FINE_TUNING_FORMATS) == 18 and "QCM-LEA" in FINE_TUNING_FORMATS and "CQM-A" in FINE_TUNING_FORMATS
    for prompt_format in scienceqa.PROMPT_FORMATS:
        assert (SCIENCEQA_ORIGINAL / f"answers_{original_run(prompt_format)}.jsonl").is_file()


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("prompt_format", FINE_TUNING_FORMATS)
def test_converter_writes_the_original_file_byte_for_byte(tmp_path, split, prompt_format):
    examples = scienceqa.load_examples(SCIENCEQA, split, prompt_format=prompt_format)
    path = scienceqa.convert_to_llava(examples, tmp_path, prompt_format, split)
    assert path.name == f"llava_{split}_{prompt_format}.json"
    assert path.read_bytes() == (SCIENCEQA_ORIGINAL / path.name).read_bytes()


def test_converter_keeps_the_originals_quirks():
    """Spelled out, the cases the fixture holds for it (all already covered by the byte comparison above)."""
    records = {
        (split, record["id"]): record["conversations"]
        for split in ("train", "val", "test")
        for record in json.loads((SCIENCEQA_ORIGINAL / f"llava_{split}_QCM-LEA.json").read_text())
    }
    assert records["train", "7"][0]["value"].endswith("Options: (A) north-south (B) north-north\n<image>")
    assert records["train", "7"][1]["value"] == (
        "Magnets attract.\nOpposite poles attract. N and S attract. The answer is A."  # "Answer: " gone, newline back
    )
    assert records["test", "4"][1]["value"] == " The answer is B."  # empty lecture + solution: a leading space
    assert records["train", "9"][1]["value"].startswith("Temperature is measured in degrees.\nHot")  # literal \\n
    assert records["train", "11"][0]["value"].startswith("Is the following trait")  # "Question: " removed
    assert "Read the text.  Then answer." in records["train", "11"][0]["value"]  # three spaces -> two
    assert records["val", "13"][0]["value"].startswith("Read the card. which item")  # every "Question: " goes
    assert records["val", "13"][1]["value"].startswith("weigh both.")  # and every "Answer: "
    assert "image" in json.loads((SCIENCEQA_ORIGINAL / "llava_val_QCM-A.json").read_text())[0]  # file missing


@pytest.mark.parametrize("prompt_format", scienceqa.PROMPT_FORMATS)
def test_evaluation_prompt_is_model_vqa_science_s(prompt_format):
    answers = [
        json.loads(line) for line in (SCIENCEQA_ORIGINAL / f"answers_{original_run(prompt_format)}.jsonl").open()
    ]
    examples = {example.id: example for example in scienceqa.load_examples(SCIENCEQA, "test", None, prompt_format)}
    assert [answer["question_id"] for answer in answers] == list(examples)
    for answer in answers:
        example = examples[answer["question_id"]]
        # model_vqa_science's `prompt` is the user turn with the image first, as our chat templates render it
        assert "<image>\n" * len(example.images) + example.prompt == answer["prompt"]


@pytest.mark.parametrize("prompt_format", ["zero_shot", "QCM-LEA", "CQM-A"])
def test_rendered_prompt_is_the_originals_conversation(prompt_format):
    """The whole prompt string the original tokenizes (conv_templates[...].get_prompt()) from our chat template."""
    from llava_hf.evaluation.generation import render_prompts
    from llava_hf.processing import get_chat_template

    template = "vicuna_v1" if prompt_format == "zero_shot" else "llava_v1"
    processor = make_tiny_processor(chat_template=get_chat_template(template))
    task = scienceqa.build_task(SCIENCEQA, "test", prompt_format=prompt_format)
    original = json.loads((SCIENCEQA_ORIGINAL / f"prompts_{original_run(prompt_format)}.json").read_text())
    assert dict(zip((example.id for example in task.examples), render_prompts(task, processor, task.examples))) == (
        original
    )


# What our parser reads that the original eval_science_qa.py scores as FAILED (the documented deviations); every
# other text parses to the original's letter (a letter beyond the options is wrong in both).
PARSE_DEVIATIONS = {
    "I think the answer is B.": "B",  # the original's pattern is case-sensitive ("The answer is")
    "(B)": "B",
    "B)": "B",
    "The answer is (C).": "C",
    "Paris": "B",  # exactly an option's text
    "A.": "A",
    "B.": "B",  # what model_vqa_science's .strip() leaves of "B. "
    "A:": "A",
    "The answer is B": "B",  # the original's pattern needs one more character after the letter
    "The answer is A. The answer is A.": "A",  # two agreeing statements; the original wants exactly one
}


@pytest.mark.parametrize("run", range(4))
def test_parsing_and_accuracy_against_eval_science_qa(tmp_path, run):
    examples = {example.id: example for example in scienceqa.load_examples(SCIENCEQA, "test")}
    original = json.loads((SCIENCEQA_ORIGINAL / f"eval_{run}_output.json").read_text())
    result = json.loads((SCIENCEQA_ORIGINAL / f"eval_{run}_result.json").read_text())
    analyses = original["correct"] + original["incorrect"]
    ours_correct = set()
    for analysis in analyses:
        example = examples[analysis["question_id"]]
        valid = scienceqa.LETTERS[: len(example.metadata["choices"])]
        letter = analysis["parsed_ans"] if analysis["parsed_ans"] in valid else None
        expected = PARSE_DEVIATIONS.get(analysis["pred"], letter)
        assert scienceqa.parse_choice(analysis["pred"], example.metadata["choices"]) == expected, analysis["pred"]
        assert analysis["ground_truth"] == example.answer
        assert analysis["is_multimodal"] == bool(example.images)  # the original's IMG test is `<image>` in prompt
        if expected == example.answer:
            ours_correct.add(example.id)
    original_correct = {analysis["question_id"] for analysis in original["correct"]}
    assert result["acc"] == pytest.approx(100 * len(original_correct) / 6)
    # the same answers scored by us: the original's correct ones plus those only our parser reads
    answers = [{"question_id": analysis["question_id"], "text": analysis["pred"]} for analysis in analyses]
    ours = evaluate(scienceqa.build_task(SCIENCEQA, "test"), predictions=write_jsonl(tmp_path / "a.jsonl", answers))
    assert ours["metrics"]["Avg"] == pytest.approx(100 * len(ours_correct) / 6)
    deviating = {
        analysis["question_id"]
        for analysis in analyses
        if PARSE_DEVIATIONS.get(analysis["pred"]) == examples[analysis["question_id"]].answer
    }
    assert ours_correct == original_correct | deviating


def test_converter_saves_hub_images(tmp_path):
    examples = scienceqa.load_examples(scienceqa_parquet(tmp_path / "hub", "train"), "train", prompt_format="QCM-A")
    records = json.loads(scienceqa.convert_to_llava(examples, tmp_path / "out", "QCM-A").read_text())
    assert records[0]["image"] == "images/0.png" and records[0]["conversations"][0]["value"].endswith("\n<image>")
    assert (tmp_path / "out" / "images" / "0.png").is_file()
    # the same texts as from the original layout: only ids and image paths differ
    original = json.loads((SCIENCEQA_ORIGINAL / "llava_train_QCM-A.json").read_text())
    assert [record["conversations"] for record in records] == [record["conversations"] for record in original]
    with pytest.raises(ValueError, match="fine-tuning format"):
        scienceqa.convert_to_llava(examples, tmp_path, "zero_shot")


def test_cli_converter_writes_sqa_sh_question_file(tmp_path):
    from llava_hf.cli import main

    argv = ["scienceqa-to-llava", "--data", str(SCIENCEQA), "--output-dir", str(tmp_path)]
    assert main(argv + ["--split", "test", "--prompt-format", "CQM-A"]) == 0
    name = "llava_test_CQM-A.json"  # the question file of LLaVA-1.5's scripts/v1_5/eval/sqa.sh
    assert (tmp_path / name).read_bytes() == (SCIENCEQA_ORIGINAL / name).read_bytes()
    assert main(argv) == 0  # default: the train split in the paper's QCM-LEA
    assert (tmp_path / "llava_train_QCM-LEA.json").read_bytes() == (
        SCIENCEQA_ORIGINAL / "llava_train_QCM-LEA.json"
    ).read_bytes()


def test_bad_inputs_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="no split 'dev'"):
        scienceqa.build_task(SCIENCEQA, "dev")
    path = write_jsonl(tmp_path / "p.jsonl", [{"question_id": 99, "text": "A"}])
    with pytest.raises(ValueError, match="does not have"):
        evaluate(scienceqa.build_task(SCIENCEQA, "test"), predictions=path)
    (tmp_path / "bad.jsonl").write_text('{"question_id": 1, "text": "A"}\n{"question_id": 2\n{"question_id": 3}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 is not valid JSON"):
        evaluate(scienceqa.build_task(SCIENCEQA, "test"), predictions=tmp_path / "bad.jsonl")
    (tmp_path / "no_text.jsonl").write_text('{"question_id": 1, "answer": "A"}\n')
    with pytest.raises(ValueError, match="no 'question_id' and 'text'"):
        evaluate(scienceqa.build_task(SCIENCEQA, "test"), predictions=tmp_path / "no_text.jsonl")
    with pytest.raises(ValueError, match="lacks column"):
        import datasets

        scienceqa.build_task(datasets.Dataset.from_dict({"question": ["q"]}), "test")


def test_cli_predictions_for_other_ids_exit_2_in_one_line_or_are_ignored_on_request(tmp_path, capsys):
    from llava_hf.cli import main

    answers = [{"question_id": pid, "text": "A"} for pid in ("1", "2", "99", "100")]
    path = write_jsonl(tmp_path / "answers.jsonl", answers)
    argv = ["evaluate", "--task", "scienceqa", "--data", str(SCIENCEQA), "--predictions", str(path)]
    assert main(argv + ["--output-dir", str(tmp_path / "strict")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'100', '99'" in error and "--ignore-extra-ids" in error
    assert "Traceback" not in error and not (tmp_path / "strict" / "results.json").exists()

    assert main(argv + ["--output-dir", str(tmp_path / "lenient"), "--ignore-extra-ids"]) == 0
    out = capsys.readouterr().out
    assert "2 answer(s) for ids outside the split, ignored" in out and "4 example(s) without an answer" in out
    results = json.loads((tmp_path / "lenient" / "results.json").read_text())
    assert results["ignored_ids"] == ["100", "99"] and results["num_answered"] == 2

    assert main(argv[:-2] + ["--model", "m", "--output-dir", str(tmp_path), "--ignore-extra-ids"]) == 2
    assert "applies to --predictions" in capsys.readouterr().err


def test_cli_converter_bad_input_exits_2_in_one_line(tmp_path, capsys):
    from llava_hf.cli import main

    argv = ["scienceqa-to-llava", "--data", str(SCIENCEQA), "--output-dir", str(tmp_path)]
    for extra, message in [(["--split", "dev"], "no split 'dev'"), (["--prompt-format", "QCM-X"], "QCM-LEA")]:
        assert main(argv + extra) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1 and "Traceback" not in error
    assert not list(tmp_path.iterdir())


def test_default_image_folder_is_llavas_images_split_layout(tmp_path):
    import shutil

    data = tmp_path / "scienceqa"
    shutil.copytree(SCIENCEQA, data)
    # as LLaVA's docs/ScienceQA.md lays it out: <base>/images/<split>/<pid>/image.png
    (data / "images").mkdir()
    shutil.move(data / "test", data / "images" / "test")
    example = next(e for e in scienceqa.load_examples(data, "test") if e.images)
    assert example.images[0] == data / "images" / "test" / "1" / "image.png" and example.images[0].is_file()
    example = next(e for e in scienceqa.load_examples(SCIENCEQA, "test") if e.images)
    assert example.images[0] == SCIENCEQA / "test" / "1" / "image.png"  # without images/: <base>/<split>
