"""The preflight check runs once per data + settings: a resumed run reads its report back instead of checking again,
and `group_by_modality_length` batches by the check's exact lengths instead of estimating them."""

import logging
import sys

import pytest
from test_group_by_modality import sft_config

from llava_hf.data import check as check_module
from llava_hf.testing import make_tiny_data, make_tiny_model, make_tiny_processor
from llava_hf.training import LlavaRunArguments, build_trainer, train


def test_a_resumed_run_reuses_the_preflight(tmp_path, monkeypatch, caplog):
    json_path, image_folder = make_tiny_data(tmp_path / "data", num_rows=12)
    run = LlavaRunArguments(stage="finetune", data_path=str(json_path), image_folder=str(image_folder))
    output = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="llava_hf.data.check"):
        first = train(
            run,
            sft_config(output, max_steps=2, save_strategy="steps", save_steps=1),
            make_tiny_model(),
            make_tiny_processor(),
        )
    assert first.state.global_step == 2 and "preflight: checked 12 rows" in caplog.text

    def refuse(*args, **kwargs):
        raise AssertionError("the preflight check ran again")

    monkeypatch.setattr(check_module, "check_rows", refuse)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llava_hf.data.check"):
        resumed = train(
            run,
            sft_config(output, max_steps=3, save_strategy="steps", save_steps=1, resume_from_checkpoint="true"),
            make_tiny_model(),
            make_tiny_processor(),
        )
    assert resumed.state.global_step == 3 and "preflight: reusing" in caplog.text


def test_group_by_modality_length_uses_the_preflight_lengths(tmp_path, monkeypatch):
    json_path, image_folder = make_tiny_data(tmp_path / "data", num_rows=12)
    run = LlavaRunArguments(
        stage="finetune", data_path=str(json_path), image_folder=str(image_folder), group_by_modality_length=True
    )
    trainer = build_trainer(run, sft_config(tmp_path / "run"), make_tiny_model(), make_tiny_processor())

    def refuse(*args, **kwargs):
        raise AssertionError("lengths were estimated although the preflight measured them")

    train_module = sys.modules["llava_hf.training.trainer"]
    monkeypatch.setattr(train_module, "estimate_lengths", refuse)
    sampler = trainer.get_train_dataloader().batch_sampler.sampler
    lengths, has_image = trainer.modality_lengths
    assert sampler.lengths == lengths and sampler.has_image == has_image
    assert min(lengths) > 0 and 0 < sum(has_image) < len(has_image)
    collator = trainer.data_collator
    assert lengths == [len(collator.encode(row).input_ids) for row in trainer.train_dataset]


def test_the_run_arguments_refuse_an_unknown_image_check():
    from llava_hf.data.check import check_rows

    with pytest.raises(ValueError, match="image_check must be one of header, decode, none"):
        check_rows([], image_check="pixels")
