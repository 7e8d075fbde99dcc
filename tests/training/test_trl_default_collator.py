"""TRL's `SFTTrainer` given only the model, the processor and rows (no `data_collator`) uses TRL's own vision
collator, which calls the processor as transformers' contract says (`apply_chat_template`, `add_special_tokens=False`,
an explicit `padding_side`). Our processor does not guess its caller: TRL's collator builds exactly the batch it builds
with transformers' built-in `LlavaProcessor` for the same settings, for TRL's three dataset shapes. With
`assistant_only_loss=True` only the answers are supervised; LLaVA's own masking stays `LlavaCollator`'s."""

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


def text_and_prompt_completion_rows(rows):
    """The same samples as TRL's other two dataset shapes: plain `text` (language modelling) and prompt-completion."""
    text_rows, prompt_rows = [], []
    for row in rows:
        question = row["messages"][0]["content"][-1]["text"]
        answer = row["messages"][-1]["content"][0]["text"]
        text_rows.append({"text": f"<image>\n{question} {answer}", "images": row["images"]})
        prompt_rows.append({"prompt": f"<image>\n{question}", "completion": f" {answer}", "images": row["images"]})
    return text_rows, prompt_rows


def trl_batches(model, processor, rows, output_dir, **config):
    """TRL's default collator on the first two rows, with our processor and with transformers' built-in one."""
    batches = []
    for processing_class in (processor, processor.to_builtin()):
        args = SFTConfig(
            output_dir=str(output_dir), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3, use_cpu=True,
            bf16=False, report_to=[], save_strategy="no", activation_checkpointing=False, max_length=None,
            disable_tqdm=True, **config,
        )  # fmt: skip
        features = ROW_FEATURES if "messages" in rows[0] else None
        dataset = Dataset.from_list(rows, features=features)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processing_class)
        batches.append(trainer.data_collator([dataset[0], dataset[1]]))
    return trainer, batches


@pytest.mark.parametrize("shape", ["messages", "messages, assistant_only_loss", "text", "prompt-completion"])
def test_trl_collator_gets_what_the_builtin_processor_gives(tmp_path, parts, shape):
    model, processor = parts
    rows = make_shape_rows(4, seed=2, image_size=32)
    text_rows, prompt_rows = text_and_prompt_completion_rows(rows)
    config = {"assistant_only_loss": True} if "assistant_only_loss" in shape else {}
    if shape == "text":
        # remove_unused_columns=False: with its default TRL drops the `text` column before its collator sees it
        config["remove_unused_columns"] = False
    data = {"text": text_rows, "prompt-completion": prompt_rows}.get(shape, rows)
    trainer, (ours, builtin) = trl_batches(model, processor, data, tmp_path, **config)
    assert set(ours) == set(builtin)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(ours[key], builtin[key]), key
    torch.testing.assert_close(ours["pixel_values"], builtin["pixel_values"], atol=0, rtol=0)

    tokenizer = processor.tokenizer
    if shape in ("messages, assistant_only_loss", "prompt-completion"):  # answers only, never the image positions
        for row in range(2):
            labels = ours["labels"][row][ours["labels"][row] != -100]
            assert processor.image_token_id not in labels.tolist()
            answer = (
                rows[row]["messages"][-1]["content"][0]["text"] + tokenizer.eos_token
                if shape != "prompt-completion"
                else prompt_rows[row]["completion"].strip()
            )
            assert tokenizer.decode(labels).strip() == answer
    trainer.train()
    assert trainer.state.global_step == 1


def test_llava_collator_supervises_the_same_answers(tmp_path, parts):
    """LLaVA's masking (`LlavaCollator`: BOS, answers + EOS, image positions ignored) and TRL's
    `assistant_only_loss=True` supervise the same answer tokens."""
    model, processor = parts
    rows = make_shape_rows(4, seed=2, image_size=32)
    _, (trl_batch, _) = trl_batches(model, processor, rows, tmp_path, assistant_only_loss=True)
    dataset = Dataset.from_list(rows, features=ROW_FEATURES)
    ours = LlavaCollator(processor)([dataset[0], dataset[1]])
    assert (ours["input_ids"][:, 0] == processor.tokenizer.bos_token_id).all()
    for row in range(2):
        supervised = [batch["labels"][row][batch["labels"][row] != -100].tolist() for batch in (ours, trl_batch)]
        assert supervised[0] == supervised[1]
