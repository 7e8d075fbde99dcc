"""The shapes world and its questions: deterministic files, the caps_boxes record format, definite answers, and a
judge that rewards true facts and penalises false ones."""

import hashlib
import json
from collections import Counter

from llava_hf.datagen.inputs import read_jsonl_images
from llava_hf.demo import questions
from llava_hf.demo.world import COLOURS, SHAPES, build_world


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_world_is_deterministic_and_splits_are_independent(tmp_path):
    first = build_world(tmp_path / "a", num_train=12, num_test=5, seed=3)
    second = build_world(tmp_path / "b", num_train=12, num_test=5, seed=3)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other_seed = build_world(tmp_path / "c", num_train=12, num_test=5, seed=4)
    assert first.splits["train"][0].objects != other_seed.splits["train"][0].objects
    # Growing the train split leaves the held-out split unchanged.
    bigger = build_world(tmp_path / "d", num_train=20, num_test=5, seed=3)
    assert bigger.splits["test"] == second.splits["test"]
    assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written


def test_records_follow_the_caps_boxes_format_and_the_datagen_reader(tmp_path):
    world = build_world(tmp_path, num_train=30, num_test=3, seed=0)
    records = [json.loads(line) for line in world.records_path("train").read_text().splitlines()]
    assert len(records) == 30
    for record, world_image in zip(records, world.splits["train"]):
        assert set(record) == {"id", "image", "captions", "instances"}
        assert len(record["captions"]) == 5
        assert (tmp_path / record["image"]).is_file()
        assert 1 <= len(record["instances"]) <= 4
        cells = set()
        for instance, item in zip(record["instances"], world_image.objects):
            colour, shape = instance["category"].split()
            assert colour in COLOURS and shape in SHAPES
            x1, y1, x2, y2 = instance["bbox"]
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            # The box lies inside its grid cell, so its region is definite and objects never overlap.
            row, column = item.cell
            assert column / 3 - 1e-3 <= x1 and x2 <= (column + 1) / 3 + 1e-3
            assert row / 3 - 1e-3 <= y1 and y2 <= (row + 1) / 3 + 1e-3
            cells.add(item.cell)
        assert len(cells) == len(record["instances"])
    symbolic = read_jsonl_images(world.records_path("train"))
    assert [image.id for image in symbolic] == [record["id"] for record in records]


def test_pixels_show_the_annotated_colours(tmp_path):
    world = build_world(tmp_path, num_train=10, num_test=1, seed=1, image_size=48)
    for world_image in world.splits["train"]:
        pixels = world.open(world_image)
        for item in world_image.objects:
            x = int((item.bbox[0] + item.bbox[2]) / 2 * 48)
            y = int((item.bbox[1] + item.bbox[3]) / 2 * 48)
            assert pixels.getpixel((x, y)) == COLOURS[item.colour]  # the centre of every shape is filled


def test_multiple_choice_answers_are_correct_and_definite(tmp_path):
    world = build_world(tmp_path, num_train=40, num_test=1, seed=0)
    examples = questions.multiple_choice(world, "train")
    by_id = {image.id: image for image in world.splits["train"]}
    seen_types = set()
    for example in examples:
        image = by_id[example.id.rsplit("_", 1)[0]]
        question_type = example.metadata["question_type"]
        seen_types.add(question_type)
        choices = example.metadata["choices"]
        assert len(choices) >= 3 and len(set(choices)) == len(choices)
        assert example.prompt.endswith("Answer with the option's letter from the given choices directly.")
        gold = choices["ABCDE".index(example.answer)]
        question = example.metadata["question"]
        if question_type == "colour":
            shape = question.removeprefix("What color is the ").removesuffix("?")
            assert [item.colour for item in image.objects if item.shape == shape] == [gold]
        elif question_type == "shape":
            colour = question.removeprefix("What shape is the ").removesuffix(" object?")
            assert [item.shape for item in image.objects if item.colour == colour] == [gold]
        elif question_type == "count":
            assert gold == str(len(image.objects))
        else:
            category = question.removeprefix("Is the ").split(" on the left side")[0]
            columns = [item.cell[1] for item in image.objects if item.category == category]
            assert len(columns) == 1 and gold == questions.SIDES[columns[0]]
            assert choices == list(questions.SIDES)
    assert seen_types == set(questions.QUESTION_TYPES)
    records = questions.multiple_choice_records(examples[:2], world)
    assert records[0]["conversations"][0]["value"].startswith("<image>\n")
    assert records[0]["conversations"][1]["value"] == examples[0].answer

    # Training data asks where every object with a one-off category is; the held-out set asks about the first only.
    everyone = questions.multiple_choice(world, "train", every_object=True)
    assert len({example.id for example in everyone}) == len(everyone)
    for image in world.splits["train"]:
        counts = Counter(item.category for item in image.objects)
        asked = [
            example.metadata["question"].removeprefix("Is the ").split(" on the left side")[0]
            for example in everyone
            if example.id.startswith(f"{image.id}_position")
        ]
        assert asked == [
            item.category for item in sorted(image.objects, key=lambda item: item.cell) if counts[item.category] == 1
        ]
    # The first question of each image keeps its id and text: everything else is as in the one-per-image set.
    everyone_by_id = {example.id: example.prompt for example in everyone}
    assert all(everyone_by_id[example.id] == example.prompt for example in examples)


def test_rule_based_judge_rewards_true_facts_and_penalises_false_ones():
    instances = [
        {"category": "red circle", "bbox": [0.05, 0.05, 0.3, 0.3]},
        {"category": "blue square", "bbox": [0.7, 0.7, 0.9, 0.9]},
    ]
    reference = "The red circle is in the upper left part of the image and the blue square is in the lower right part."
    assert questions.judge(reference, reference, instances) == 10.0
    half = "The red circle is in the upper left part."
    assert 1.0 < questions.judge(half, reference, instances) < 10.0
    wrong = "The red circle is in the lower right part and there is a green star."
    assert questions.judge(wrong, reference, instances) < questions.judge(half, reference, instances)
    assert questions.judge("There is a green star in the center.", reference, instances) == 1.0
    assert questions.judge("I like turtles.", reference, instances) == 1.0
    assert questions.fact_is_true(("side", "red circle", "left", "blue square"), instances)
    assert not questions.fact_is_true(("side", "red circle", "right", "blue square"), instances)
    assert questions.fact_is_true(("total", 2), instances)
    assert ("count", "blue square", 2) in questions.extract_facts("There are two blue squares.")


def test_open_questions_carry_teacher_references_the_judge_accepts(tmp_path):
    world = build_world(tmp_path, num_train=1, num_test=6, seed=2)
    examples = questions.open_questions(world, "test")
    assert [example.metadata["category"] for example in examples[:3]] == list(questions.OPEN_CATEGORIES)
    for example in examples:
        instances = example.metadata["instances"]
        # The references are true statements about the image: the judge rates each one 10.
        assert questions.judge(example.answer, example.answer, instances) == 10.0
        assert "context" in example.metadata


def test_stage2_mix_can_ask_every_conversation_question_first(tmp_path):
    """--vary-first-question rotates each generated conversation: the same (question, answer) pairs, the image once,
    before the new first question, and the first questions cover the teacher's kinds; off, the mix keeps the order."""
    from llava_hf.demo.end_to_end import DemoArguments, generate_data, stage2_rows

    world = build_world(tmp_path / "world", num_train=40, num_test=2, seed=0)

    def conversations(vary: bool) -> dict[str, list[dict]]:
        config = DemoArguments(output_dir=str(tmp_path), num_train_images=40, vary_first_question=vary, progress=False)
        data = generate_data(config, world, tmp_path / f"data_{vary}", seed=0)
        stage2_rows(config, world, data, tmp_path / f"data_{vary}")
        mix = json.loads((tmp_path / f"data_{vary}" / "stage2_mix.json").read_text())
        return {record["id"]: record["conversations"] for record in mix if record["id"].endswith("_conversation")}

    def pairs(turns):
        return Counter((q["value"].replace("<image>\n", ""), a["value"]) for q, a in zip(turns[::2], turns[1::2]))

    teacher, varied = conversations(False), conversations(True)
    assert set(teacher) == set(varied) and len(teacher) == 40
    assert {turns[0]["value"].split("\n")[1].split()[0] for turns in teacher.values()} == {"What"}
    firsts = Counter(turns[0]["value"].split("\n")[1].split(" ", 2)[:2] == ["How", "many"] for turns in varied.values())
    assert firsts[True] >= 5 and firsts[False] >= 5
    for record_id, turns in varied.items():
        assert pairs(turns) == pairs(teacher[record_id])
        assert turns[0]["value"].startswith("<image>\n")
        assert sum(turn["value"].count("<image>") for turn in turns) == 1
        assert [turn["from"] for turn in turns] == [turn["from"] for turn in teacher[record_id]]
