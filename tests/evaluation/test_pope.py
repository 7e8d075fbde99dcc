"""POPE: the yes/no protocol, metrics per split against hand-computed values, both data layouts."""

import json

import pytest

from helpers.evaluation_data import POPE, write_jsonl
from llava_hf.evaluation import evaluate, pope, score_task


@pytest.mark.parametrize(
    "text, answer",
    [
        ("Yes", "yes"),
        ("yes, there is a dog.", "yes"),
        ("No", "no"),
        ("No, there is no cat.", "no"),
        ("There is not a car in the image.", "no"),
        ("NO.", "no"),
        ("Yes. There is no doubt.", "yes"),  # only the first sentence counts
        ("Nothing like that", "yes"),  # "nothing" is not the word "no"
        ("Maybe", "yes"),  # the protocol reads anything else as yes (and we list it as unclear)
    ],
)
def test_parse_yes_no(text, answer):
    assert pope.parse_yes_no(text) == answer


def test_binary_metrics_by_hand():
    # TP 2, FP 1, TN 1, FN 1 -> precision 2/3, recall 2/3, accuracy 3/5, yes 3/5
    metrics = pope.binary_metrics(["yes", "yes", "yes", "no", "no"], ["yes", "yes", "no", "no", "yes"])
    assert metrics == pytest.approx(
        {"accuracy": 60.0, "precision": 200 / 3, "recall": 200 / 3, "f1": 200 / 3, "yes_ratio": 60.0}
    )
    assert pope.binary_metrics(["no", "no"], ["no", "no"])["precision"] == 0.0  # no positive predictions


# Hand-computed for tests/assets/evaluation/pope:
# adversarial labels yes yes no no, answers yes no no yes -> TP 1 FN 1 TN 1 FP 1;
# popular all right; random: "Maybe a bird" (unclear, read as yes: TP) and a missing answer on a "no" (wrong: FP).
ANSWERS = {
    "adversarial": ["Yes, there is a dog.", "No.", "There is not a car.", "Yes"],
    "popular": ["yes", "no", "Yes"],
    "random": ["Maybe a bird"],
}
EXPECTED = {
    "adversarial": {"accuracy": 50.0, "precision": 50.0, "recall": 50.0, "f1": 50.0, "yes_ratio": 50.0},
    "popular": {"accuracy": 100.0, "precision": 100.0, "recall": 100.0, "f1": 100.0, "yes_ratio": 200 / 3},
    "random": {"accuracy": 50.0, "precision": 50.0, "recall": 100.0, "f1": 200 / 3, "yes_ratio": 100.0},
}


def check(results, missing_id):
    for split, metrics in EXPECTED.items():
        for name, value in metrics.items():
            assert results["metrics"][f"{split}/{name}"] == pytest.approx(value), (split, name)
    assert results["metrics"]["f1"] == pytest.approx((50 + 100 + 200 / 3) / 3)
    assert results["missing"] == [missing_id]
    assert [item["text"] for item in results["unclear"]] == ["Maybe a bird"]
    assert [row[0] for row in results["table"]["rows"]] == ["adversarial", "popular", "random", "mean"]


def test_original_layout(tmp_path):
    task = pope.build_task(POPE, image_folder=str(POPE / "images"))
    assert len(task.examples) == 9 and task.examples[0].id == "adversarial-1"
    assert task.examples[0].prompt == "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    records = [
        {"question_id": f"{split}-{number}", "text": text}
        for split, texts in ANSWERS.items()
        for number, text in enumerate(texts, start=1)
    ]
    check(evaluate(task, predictions=write_jsonl(tmp_path / "answers.jsonl", records)), "random-2")


def test_hub_layout_and_split_selection():
    import datasets
    from PIL import Image

    rows = {"question_id": [], "question": [], "answer": [], "image": [], "category": [], "image_source": []}
    for split in pope.SPLITS:
        for number, line in enumerate((POPE / f"coco_pope_{split}.json").read_text().splitlines(), start=1):
            record = json.loads(line)
            rows["question_id"].append(str(number))
            rows["question"].append(record["text"])
            rows["answer"].append(record["label"])
            rows["image"].append(Image.open(POPE / "images" / record["image"]))
            rows["category"].append(split)
            rows["image_source"].append(record["image"])
    dataset = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    task = pope.build_task(dataset)
    predictions = {
        f"{split}-{number}": {"question_id": f"{split}-{number}", "text": text}
        for split, texts in ANSWERS.items()
        for number, text in enumerate(texts, start=1)
    }
    check(score_task(task, predictions), "random-2")
    only_random = pope.build_task(dataset, splits=["random"])
    assert {example.metadata["split"] for example in only_random.examples} == {"random"}
    with pytest.raises(ValueError, match="unknown POPE split"):
        pope.build_task(dataset, splits=["hard"])


def test_images_are_needed_to_generate_not_to_score(tmp_path):
    task = pope.build_task(POPE, image_folder=str(tmp_path))  # no images there
    records = [{"question_id": example.id, "text": "yes"} for example in task.examples]
    assert evaluate(task, predictions=write_jsonl(tmp_path / "a.jsonl", records))["metrics"]["recall"] == 100.0
    with pytest.raises(FileNotFoundError, match=r"9 image file\(s\) do not exist.*--image-folder"):
        evaluate(task, model=object(), processor=_NoProcessor(), output_dir=tmp_path / "out")


class _NoProcessor:
    """Renders prompts without a tokenizer: the image check must fail before any model or tokenizer work."""

    def apply_chat_template(self, conversation, add_generation_prompt=True):
        return str(conversation)
