"""Teacher output -> LLaVA turns, and every reject reason, table-driven."""

import pytest

from llava_hf.datagen.parsing import parse_output, split_qa_blocks

DETAIL_INSTRUCTION = "Describe this image in detail."
TWO_PAIRS = "Question:\nHow many dogs?\n===\nAnswer:\nTwo dogs.\n===\nQuestion:\nWhere?\n===\nAnswer:\nOn a lawn.\n==="


def test_conversation_becomes_alternating_turns_with_the_image_first():
    conversations, reason = parse_output("conversation", TWO_PAIRS, "stop", DETAIL_INSTRUCTION)
    assert reason is None
    assert conversations == [
        {"from": "human", "value": "<image>\nHow many dogs?"},
        {"from": "gpt", "value": "Two dogs."},
        {"from": "human", "value": "Where?"},
        {"from": "gpt", "value": "On a lawn."},
    ]


def test_detail_uses_the_instruction_and_complex_one_pair():
    conversations, _ = parse_output("detail", "  A red bus on a street.\n", "stop", DETAIL_INSTRUCTION)
    assert conversations == [
        {"from": "human", "value": "<image>\nDescribe this image in detail."},
        {"from": "gpt", "value": "A red bus on a street."},
    ]
    conversations, _ = parse_output("complex", "Question: Why?\n===\nAnswer: Because.\n===", "stop", "")
    assert [turn["value"] for turn in conversations] == ["<image>\nWhy?", "Because."]


def test_tolerates_labels_on_the_same_line_bold_labels_and_no_trailing_separator():
    pairs = split_qa_blocks("**Question:** Is it sunny?\n===\n**Answer:** Yes.\nIt is noon.")
    assert pairs == [("Is it sunny?", "Yes.\nIt is noon.")]


@pytest.mark.parametrize(
    "task_type, text, finish_reason, reason",
    [
        ("conversation", TWO_PAIRS, "length", "truncated"),
        ("detail", "   \n", "stop", "empty"),
        ("conversation", "Just some prose, no blocks.", "stop", "malformed"),
        ("conversation", "Question:\nA?\n===\nQuestion:\nB?\n===\nAnswer:\nC\n===", "stop", "malformed"),
        ("conversation", "Question:\nA?\n===", "stop", "malformed"),
        ("conversation", "Answer:\nC\n===", "stop", "malformed"),
        ("conversation", "Question:\n\n===\nAnswer:\nC\n===", "stop", "malformed"),
        ("complex", TWO_PAIRS, "stop", "malformed"),
        ("detail", "Question:\nWhy?\n===\nAnswer:\nBecause.", "stop", "malformed"),
        ("detail", "The captions say there is a dog.", "stop", "leak_caption"),
        ("detail", "Based on the provided descriptions, a dog sits.", "stop", "leak_caption"),
        ("detail", "A dog sits inside its bounding box.", "stop", "leak_bounding_box"),
        ("detail", "A dog at [0.37, 0.584, 0.504, 0.709] sits.", "stop", "leak_coordinates"),
        ("detail", "A dog whose box starts at 0.584 sits.", "stop", "leak_coordinates"),
        ("detail", "Judging by the coordinates, the dog is left.", "stop", "leak_coordinates"),
        ("complex", "Question:\nWhere is the dog per its caption?\n===\nAnswer:\nLeft.\n===", "stop", "leak_caption"),
    ],
)
def test_rejects(task_type, text, finish_reason, reason):
    assert parse_output(task_type, text, finish_reason, DETAIL_INSTRUCTION) == (None, reason)


@pytest.mark.parametrize(
    "text", ["Two teams coordinate their attack.", "It costs 2.50 dollars.", "A 0.5 litre bottle stands there."]
)
def test_ordinary_prose_is_not_a_leak(text):
    assert parse_output("detail", text, "stop", DETAIL_INSTRUCTION)[1] is None
