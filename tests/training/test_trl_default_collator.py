"""TRL's `SFTTrainer` given only the model, the processor and rows (no `data_collator`) uses TRL's own vision
collator. Without `assistant_only_loss` that collator trains on every token (system prompt, questions, image
placeholders) and, told the template writes BOS, drops it: our processor stops it with an error naming
`LlavaCollator`. With `assistant_only_loss=True` it builds exactly LlavaCollator's batch (answers only, BOS)."""

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from llava_hf.data import ROW_FEATURES, LlavaCollator
from llava_hf.data.synthetic import make_shape_rows
from llava_hf.training import build_from_parts

REAL_SHAPED = Path(__file__).resolve().parents[1] / "assets" / "real_shaped"


@pytest.fixture(scope="module")
def parts():
    return build_from_parts(str(REAL_SHAPED / "clip-vit-large-patch14-336"), str(REAL_SHAPED / "vicuna-7b-v1.5"))


def sft_trainer(model, processor, rows, output_dir, **config):
    args = SFTConfig(
        output_dir=str(output_dir), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3, use_cpu=True,
        bf16=False, report_to=[], save_strategy="no", activation_checkpointing=False, max_length=None,
        disable_tqdm=True, **config,
    )  # fmt: skip
    dataset = Dataset.from_list(rows, features=ROW_FEATURES)
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor), dataset


def test_default_collator_stops_with_an_error_naming_llava_collator(tmp_path, parts):
    model, processor = parts
    trainer, _ = sft_trainer(model, processor, make_shape_rows(4, seed=2, image_size=32), tmp_path)
    with pytest.raises(ValueError, match="LlavaCollator") as error:
        trainer.train()
    assert "assistant_only_loss=True" in str(error.value)


def test_default_collator_with_assistant_only_loss_trains_answers_only_with_bos(tmp_path, parts):
    model, processor = parts
    rows = make_shape_rows(4, seed=2, image_size=32)
    trainer, dataset = sft_trainer(model, processor, rows, tmp_path, assistant_only_loss=True)
    batch = trainer.data_collator([dataset[0], dataset[1]])
    ours = LlavaCollator(processor)([dataset[0], dataset[1]])
    assert (batch["input_ids"][:, 0] == processor.tokenizer.bos_token_id).all()
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(batch[key], ours[key]), key
    supervised = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    answer = rows[0]["messages"][-1]["content"][0]["text"]
    assert supervised.strip() == f"{answer}</s>"
    projector = model.model.multi_modal_projector.linear_1.weight.detach().clone()
    trainer.train()
    assert trainer.state.global_step == 2 and not torch.equal(
        projector, model.model.multi_modal_projector.linear_1.weight
    )


def text_and_prompt_completion_rows(rows):
    """The same samples as TRL's other two dataset shapes: plain `text` (language modelling) and prompt-completion."""
    text_rows, prompt_rows = [], []
    for row in rows:
        question = row["messages"][0]["content"][-1]["text"]
        answer = row["messages"][-1]["content"][0]["text"]
        text_rows.append({"text": f"<image>\n{question} {answer}", "images": row["images"]})
        prompt_rows.append({"prompt": f"<image>\n{question}", "completion": f" {answer}", "images": row["images"]})
    return text_rows, prompt_rows


def test_plain_text_dataset_stops_with_an_error_naming_llava_collator(tmp_path, parts):
    model, processor = parts
    text_rows, _ = text_and_prompt_completion_rows(make_shape_rows(4, seed=2, image_size=32))
    # remove_unused_columns=False: with its default TRL drops the `text` column before its collator sees it (KeyError)
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, use_cpu=True, bf16=False, report_to=[],
        save_strategy="no", max_length=None, disable_tqdm=True, remove_unused_columns=False,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(text_rows), processing_class=processor)
    with pytest.raises(ValueError, match="LlavaCollator"):
        trainer.train()


def test_prompt_completion_dataset_trains_on_the_completion_with_bos(tmp_path, parts):
    model, processor = parts
    _, prompt_rows = text_and_prompt_completion_rows(make_shape_rows(4, seed=2, image_size=32))
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, use_cpu=True, bf16=False, report_to=[],
        save_strategy="no", max_length=None, disable_tqdm=True,
    )  # fmt: skip
    dataset = Dataset.from_list(prompt_rows)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    batch = trainer.data_collator([dataset[0], dataset[1]])
    tokenizer = processor.tokenizer
    for row in range(2):
        ids = batch["input_ids"][row][batch["attention_mask"][row] == 1]
        assert ids[0] == tokenizer.bos_token_id  # the tokenizer's BOS, which TRL's add_special_tokens=False dropped
        labels = batch["labels"][row][batch["labels"][row] != -100]
        assert processor.image_token_id not in labels.tolist()
        assert tokenizer.decode(labels).strip() == prompt_rows[row]["completion"].strip()
    trainer.train()
    assert trainer.state.global_step == 1
