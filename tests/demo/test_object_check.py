"""The object checker and the repeated-phrase count: the teacher's descriptions of a real world pass in full, wrong,
missing and made-up objects are caught, and repeating what the reference repeats is not a fault."""

from llava_hf.demo.object_check import answer_checks, check_description, mentions, object_check, repeats_phrase
from llava_hf.demo.questions import open_questions
from llava_hf.demo.world import build_world
from llava_hf.evaluation.task import Outcome

# A red circle in the upper left cell, a blue square at the center, another red circle in the lower right cell.
INSTANCES = [
    {"category": "red circle", "bbox": [0.05, 0.05, 0.3, 0.3]},
    {"category": "blue square", "bbox": [0.4, 0.4, 0.6, 0.6]},
    {"category": "red circle", "bbox": [0.7, 0.7, 0.9, 0.9]},
]


def test_mentions_read_colour_shape_and_the_position_the_clause_gives():
    text = (
        "Two red circles and one blue square. One red circle is in the upper left part of the picture, a blue "
        "square at the center and another red circle in the lower right part."
    )
    assert mentions(text) == {
        ("red circle", "upper left part"),
        ("blue square", "center"),
        ("red circle", "lower right part"),
    }  # "two red circles" and "one blue square" are covered by the placed mentions
    assert mentions("The Green Triangles are in the middle left part.") == {("green triangle", "middle left part")}
    assert mentions("a yellow star, then nothing") == {("yellow star", None)}


def test_counts_of_one_description():
    right = "A red circle in the upper left part, a blue square in the center and a red circle in the lower right part."
    assert check_description(right, INSTANCES) == {"objects": 3, "recalled": 3, "mentions": 3, "correct": 3}
    # Wrong place for the square, a made-up star, one red circle without a place (true, but recalls nothing).
    wrong = "The blue square is in the upper middle part. There is a red circle and a green star."
    assert check_description(wrong, INSTANCES) == {"objects": 3, "recalled": 0, "mentions": 3, "correct": 1}
    degenerate = "The green triangle is a green triangle is one green triangle."
    assert check_description(degenerate, INSTANCES) == {"objects": 3, "recalled": 0, "mentions": 1, "correct": 0}


def test_pooled_over_descriptions_and_a_missing_answer_misses_its_objects():
    one = [{"category": "blue square", "bbox": [0.4, 0.4, 0.6, 0.6]}]
    pooled = object_check([("The blue square is in the center.", one), (None, INSTANCES)])
    assert pooled["objects"] == 4 and pooled["mentions"] == 1
    assert pooled["recall"] == 25.0 and pooled["precision"] == 100.0


def test_repetition_counts_only_what_the_reference_does_not_repeat():
    reference = "The red circle is in the center. The blue square is in the lower left part."
    assert not repeats_phrase("The red circle is in the center. The blue square is in the upper left part.", reference)
    assert repeats_phrase("The green triangle is a green triangle is one green triangle.", reference)
    assert not repeats_phrase("", reference)


def test_the_teachers_descriptions_of_a_world_pass_the_checker(tmp_path):
    world = build_world(tmp_path, num_train=1, num_test=200, seed=0, image_size=48, max_objects=3)
    examples = open_questions(world, "test")
    references = [Outcome(example, example.answer, example.answer) for example in examples]
    checks = answer_checks(references)
    assert checks["detail_objects"]["recall"] == 100.0 and checks["detail_objects"]["precision"] == 100.0
    assert checks["detail_objects"]["objects"] == sum(len(image.objects) for image in world.splits["test"])
    assert checks["repetition"]["overall"] == {"answers": 600, "repeating": 0, "percent": 0.0}
    # A model that describes every image with the first image's description is caught by both figures.
    first = next(example for example in examples if example.metadata["category"] == "detail")
    copied = [Outcome(example, first.answer, first.answer) for example in examples]
    wrong = answer_checks(copied)["detail_objects"]
    assert wrong["recall"] < 20 and wrong["precision"] < 20
