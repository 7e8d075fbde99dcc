"""The collator supervises exactly the answers and their end tokens (the original `llava/train/train.py` `preprocess_v1` and `llava/mm_utils.py` `tokenizer_image_token`), for every template, on seeded
random conversations; it matches the processor token for token; bad samples are errors, never zero-loss rows."""

import random

import pytest
import torch

from llava_hf import CHAT_TEMPLATE_NAMES
from llava_hf.data import IGNORE_INDEX, LlavaCollator, SampleError, padding_fraction
from llava_hf.data.synthetic import make_shape_rows
from llava_hf.testing import TINY_IMAGE_TOKENS, make_image, make_tiny_model, make_tiny_processor

# How each template closes an answer: the supervised text of one answer `a` (the original `llava/conversation.py` and `llava/train/train.py` `preprocess_v1`).
SUPERVISED_ANSWER = {
    "vicuna_v1": lambda answer: f" {answer}</s>",
    "llava_v1": lambda answer: f" {answer}</s>",
    "llava_llama_2": lambda answer: f" {answer} </s>",
    "mistral_instruct": lambda answer: f" {answer} </s>",
    "chatml_direct": lambda answer: f"{answer}<|im_end|>",
    "plain": lambda answer: f"{answer}\n",
}
WORDS = [
    "red",
    "square",
    "It's",
    "ASSISTANT",
    "USER:",
    "[INST]",
    "a",
    "42",
    "naïve",
    "café",
    "—",
    "?",
    "!",
    ":",
    "\n",
    "x",
]


def random_text(rng: random.Random, min_words: int = 1) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, 8))]
    text = "".join(word + rng.choice([" ", " ", "", "\n", "  "]) for word in words)
    return rng.choice(["", " ", "\n"]) + text.strip() + rng.choice(["", ".", " ?"])


def random_row(rng: random.Random, template: str, index: int) -> tuple[dict, list[str]]:
    """A random conversation: 1-3 turns, 0-2 images at the front of random user turns, optional system prompt."""
    messages, answers, images = [], [], []
    if template != "plain" and rng.random() < 0.3:
        messages.append({"role": "system", "content": [{"type": "text", "text": random_text(rng)}]})
    for _ in range(rng.randint(1, 3)):
        content = []
        if len(images) < 2 and rng.random() < 0.5:
            images.append(make_image(index * 7 + len(images), size=(8, 8)))
            content.append({"type": "image", "text": None})
        content.append({"type": "text", "text": random_text(rng)})
        answer = random_text(rng).strip() or "ok"
        answers.append(answer)
        messages += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
    return {"id": f"random-{index}", "images": images, "messages": messages}, answers


@pytest.fixture(scope="module")
def processor():
    return make_tiny_processor()


@pytest.mark.parametrize("template", CHAT_TEMPLATE_NAMES)
def test_supervised_tokens_are_exactly_the_answers_and_end_tokens(processor, template):
    collator = LlavaCollator(processor, chat_template=template)
    rng = random.Random(template)
    for index in range(40):
        row, answers = random_row(rng, template, index)
        sample = collator.encode(row)
        supervised = [label for label in sample.labels if label != IGNORE_INDEX]
        expected = "".join(SUPERVISED_ANSWER[template](answer) for answer in answers)
        assert processor.tokenizer.decode(supervised) == expected, (template, row["messages"])
        # Supervised tokens are the real tokens at those positions, never image or padding ids.
        for token, label in zip(sample.input_ids, sample.labels):
            assert label in (IGNORE_INDEX, token)
        assert sample.input_ids.count(processor.image_token_id) == len(row["images"]) * TINY_IMAGE_TOKENS


def test_matches_the_processor_token_for_token(processor):
    images = [make_image(1), make_image(2, size=(20, 60))]
    row = {
        "id": "two-images",
        "images": images,
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A square."}]},
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "And this?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A circle."}]},
        ],
    }
    batch = LlavaCollator(processor)([row])
    with_images = [
        {
            "role": message["role"],
            "content": [
                {"type": "image", "image": images[0 if turn == 0 else 1]} if part["type"] == "image" else part
                for part in message["content"]
            ],
        }
        for turn, message in enumerate(row["messages"])
    ]
    reference = processor.apply_chat_template(
        with_images, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert torch.equal(batch["pixel_values"], reference["pixel_values"])
    expected_labels = torch.where(torch.as_tensor(reference["assistant_masks"]) == 1, reference["input_ids"], -100)
    assert torch.equal(batch["labels"], expected_labels)
    assert processor.tokenizer.decode(batch["labels"][batch["labels"] != -100]) == " A square.</s> A circle.</s>"


def test_left_and_right_padding_give_the_same_samples_and_loss(processor):
    rows = make_shape_rows(4, seed=3, image_size=32, lengths="realistic")
    model = make_tiny_model()
    right = LlavaCollator(processor, padding_side="right")(rows)
    left = LlavaCollator(processor, padding_side="left")(rows)
    for index in range(len(rows)):
        keep_right, keep_left = right["attention_mask"][index] == 1, left["attention_mask"][index] == 1
        assert torch.equal(right["input_ids"][index][keep_right], left["input_ids"][index][keep_left])
        assert torch.equal(right["labels"][index][keep_right], left["labels"][index][keep_left])
        assert (right["labels"][index][~keep_right] == -100).all() and (left["labels"][index][~keep_left] == -100).all()
    assert left["attention_mask"][:, -1].all() and right["attention_mask"][:, 0].all()
    with torch.no_grad():
        # Left padding shifts absolute positions; RoPE attention only sees relative ones, so the loss is the same.
        torch.testing.assert_close(model(**left).loss, model(**right).loss, atol=1e-4, rtol=1e-4)


def test_padding_free_loss_equals_padded_loss(processor):
    rows = make_shape_rows(6, seed=5, image_size=32, lengths="realistic")
    model = make_tiny_model()
    padded = LlavaCollator(processor)(rows)
    packed = LlavaCollator(processor, padding_free=True)(rows)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["input_ids"].shape[1] == int(padded["attention_mask"].sum())
    assert torch.equal(packed["pixel_values"], padded["pixel_values"])
    lengths = padded["attention_mask"].sum(1).tolist()
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
    assert (packed["position_ids"][0, starts] == 0).all()
    with torch.no_grad():
        torch.testing.assert_close(model(**packed).loss, model(**padded, use_cache=False).loss, atol=1e-5, rtol=1e-5)
    assert padding_fraction(lengths, batch_size=len(rows)) > 0


def test_text_only_batch_has_no_pixel_values(processor):
    rows = [row for row in make_shape_rows(40, seed=1, image_size=32, lengths="realistic") if not row["images"]][:2]
    batch = LlavaCollator(processor)(rows)
    assert "pixel_values" not in batch and (batch["labels"] != -100).any()


def test_plain_template_supervises_caption_and_newline_only(processor):
    row = make_shape_rows(1, seed=0, image_size=32)[0]
    batch = LlavaCollator(processor, chat_template="plain")([row])
    answer = row["messages"][1]["content"][0]["text"]
    assert processor.tokenizer.decode(batch["labels"][batch["labels"] != -100]) == f"{answer}\n"
    text = processor.tokenizer.decode(batch["input_ids"][0][batch["input_ids"][0] != processor.image_token_id])
    assert text == f"<s>{answer}\n"  # the instruction text is discarded in stage 1


def test_bad_samples_are_errors_that_name_them(processor):
    collator = LlavaCollator(processor)
    row = make_shape_rows(1, seed=0, image_size=32)[0]
    with pytest.raises(SampleError, match="shape-0-0 has 1 image placeholder.*but 0 image"):
        collator.encode({**row, "images": []})
    question_only = {**row, "messages": row["messages"][:1]}
    with pytest.raises(SampleError, match="no supervised tokens"):
        collator.encode(question_only)
    empty_answer = {
        **row,
        "messages": [row["messages"][0], {"role": "assistant", "content": [{"type": "text", "text": ""}]}],
    }
    assert processor.tokenizer.decode([x for x in collator.encode(empty_answer).labels if x != -100]) == " </s>"

    full = collator.encode(row)
    first_image = full.input_ids.index(processor.image_token_id)
    with pytest.raises(SampleError, match="cuts through an image"):
        LlavaCollator(processor, max_length=first_image + 3).encode(row)
    first_answer = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    with pytest.raises(SampleError, match="removes every answer token"):
        LlavaCollator(processor, max_length=first_answer).encode(row)
    truncated = LlavaCollator(processor, max_length=first_answer + 1).encode(row)
    assert len(truncated.input_ids) == first_answer + 1 and truncated.labels[-1] != IGNORE_INDEX


def test_template_without_generation_markers_is_refused(processor):
    with pytest.raises(ValueError, match="generation"):
        LlavaCollator(processor, chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
