"""ScienceQA: answer parsing, the paper's table on hand-computed fixtures in both layouts, prompts, the converter."""

import json

import pytest
from evaluation_fixtures import SCIENCEQA, scienceqa_parquet, write_jsonl

from llava_hf.evaluation import evaluate, scienceqa
from llava_hf.evaluation.task import markdown_table

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


def test_zero_shot_and_fine_tuning_prompts():
    task = scienceqa.build_task(SCIENCEQA, "test")
    by_id = {example.id: example for example in task.examples}
    assert by_id["3"].prompt == (
        "Context: Look at the map.\nWhich state is farthest north?\nA. Texas\nB. Ohio\nC. Maine\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert by_id["4"].prompt.startswith("What is the capital of France?\nA. Rome")  # no empty Context line
    qcm = scienceqa.build_task(SCIENCEQA, "test", prompt_format="QCM-LEA")
    assert qcm.examples[3].prompt == (
        "Question: What is the capital of France?\nContext: N/A\nOptions: (A) Rome (B) Paris (C) Berlin"
    )
    assert qcm.max_new_tokens == 1024 and task.max_new_tokens == 16
    with pytest.raises(ValueError, match="unknown ScienceQA prompt format"):
        scienceqa.build_task(SCIENCEQA, "test", prompt_format="QCM-X")


def test_converter_writes_llava_training_json(tmp_path):
    examples = scienceqa.load_examples(SCIENCEQA, "train", prompt_format="QCM-LEA")
    path = scienceqa.convert_to_llava(examples, tmp_path, "QCM-LEA")
    records = json.loads(path.read_text())
    assert records[0] == {
        "id": "7",
        "image": "7/image.png",
        "conversations": [
            {
                "from": "human",
                "value": "<image>\nQuestion: Which magnet pulls?\nContext: N/A\nOptions: (A) north-south (B) north-north",
            },
            {
                "from": "gpt",
                "value": "Answer: Magnets attract.\\nOpposite poles attract. N and S attract. The answer is A.",
            },
        ],
    }
    assert "image" not in records[1] and records[1]["conversations"][0]["value"].startswith("Question: Which word")
    short = json.loads(scienceqa.convert_to_llava(examples, tmp_path, "QCM-A").read_text())
    assert short[1]["conversations"][1]["value"] == "Answer: The answer is A."
    # what the converter teaches, the parser reads back
    assert scienceqa.parse_choice(records[0]["conversations"][1]["value"], ["north-south", "north-north"]) == "A"
    with pytest.raises(ValueError, match="fine-tuning format"):
        scienceqa.convert_to_llava(examples, tmp_path, "zero_shot")


def test_converter_saves_hub_images(tmp_path):
    examples = scienceqa.load_examples(scienceqa_parquet(tmp_path / "hub", "train"), "train", prompt_format="QCM-A")
    records = json.loads(scienceqa.convert_to_llava(examples, tmp_path / "out", "QCM-A").read_text())
    assert records[0]["image"] == "images/0.png"
    assert (tmp_path / "out" / "images" / "0.png").is_file()


def test_cli_converter(tmp_path):
    from llava_hf.cli import main

    assert main(["scienceqa-to-llava", "--data", str(SCIENCEQA), "--output-dir", str(tmp_path)]) == 0
    assert len(json.loads((tmp_path / "llava_QCM-LEA.json").read_text())) == 2


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
