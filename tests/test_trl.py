"""The model through TRL's SFTTrainer loss path (trl/trainer/sft_trainer.py, `compute_loss`): TRL calls the backbone and lm_head itself."""

import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from trl.trainer.utils import add_fused_lm_head

from llava_hf.testing import make_image


def make_batch(processor, questions_answers):
    conversations = [
        [
            {"role": "user", "content": [{"type": "image", "image": make_image(i)}, {"type": "text", "text": q}]},
            {"role": "assistant", "content": a},
        ]
        for i, (q, a) in enumerate(questions_answers)
    ]
    batch = processor.apply_chat_template(
        conversations,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    labels = batch["input_ids"].clone()
    labels[torch.as_tensor(batch.pop("assistant_masks")) == 0] = -100
    batch["labels"] = labels
    return dict(batch)


def test_fused_lm_head_loss_equals_model_loss(model, processor):
    batch = make_batch(processor, [("what?", "a red square"), ("colour of the circle?", "blue")])
    expected = model(**batch).loss
    add_fused_lm_head(model)
    fused = model(**batch, fused_lm_head=True)
    num_tokens = (batch["labels"][:, 1:] != -100).sum()
    torch.testing.assert_close(-fused.log_probs.sum() / num_tokens, expected, atol=1e-5, rtol=1e-5)


def test_sft_trainer_trains_projector_and_llm_not_vision_tower(tmp_path, model, processor):
    rows = [{"question": f"question {i}?", "answer": f"answer number {i}"} for i in range(8)]
    dataset = Dataset.from_list(rows)

    def collate(examples):
        return make_batch(processor, [(row["question"], row["answer"]) for row in examples])

    vision_before = {n: p.clone() for n, p in model.model.vision_tower.named_parameters()}
    projector_before = model.model.multi_modal_projector.linear_1.weight.clone()
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor, data_collator=collate
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(loss > 0 for loss in losses) and losses[-1] < losses[0]
    assert not torch.equal(projector_before, model.model.multi_modal_projector.linear_1.weight)
    for name, parameter in model.model.vision_tower.named_parameters():
        assert torch.equal(vision_before[name], parameter), name
