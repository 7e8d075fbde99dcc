"""Each stage trains exactly the parameters it should (and no others) with its own learning rates, the loss goes
down, the stage-1 projector loads into stage 2, LoRA adapters save/load/merge, and bad data stops training."""

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from trl import SFTConfig

from llava_hf import LlavaHfForConditionalGeneration, get_chat_template
from llava_hf.data import ROW_FEATURES, LlavaCollator
from llava_hf.data.check import DataCheckError
from llava_hf.data.synthetic import make_shape_rows
from llava_hf.testing import make_tiny_model, make_tiny_processor
from llava_hf.training import (
    QLORA_SKIP_MODULES,
    LlavaRunArguments,
    build_trainer,
    load_projector,
    qlora_quantization_config,
    save_projector,
    train,
)


def sft_config(tmp_path, steps: int = 3, **overrides) -> SFTConfig:
    settings = dict(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
        max_length=256,
        seed=0,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return SFTConfig(**settings)


@pytest.fixture(scope="module")
def rows():
    return Dataset.from_list(make_shape_rows(16, seed=0, image_size=32), features=ROW_FEATURES)


def changed_parameters(model, before: dict) -> set[str]:
    return {name for name, parameter in model.named_parameters() if not torch.equal(before[name], parameter.detach())}


EXPECTED_CHANGES = {
    # stage -> predicate on parameter names that must change (every other parameter must stay identical)
    "pretrain": lambda name: "multi_modal_projector" in name,
    "finetune": lambda name: "multi_modal_projector" in name or "language_model" in name or name.startswith("lm_head"),
    "lora": lambda name: "lora_" in name or "modules_to_save" in name,
    # stage 1 + the last vision layer feeding hidden state -2 (layer index 1 of 3); layer 2's output is never used
    "pretrain+vision": lambda name: "multi_modal_projector" in name or "vision_tower.encoder.layers.1." in name,
}


@pytest.mark.parametrize("case", list(EXPECTED_CHANGES))
def test_each_stage_changes_exactly_its_parameters(tmp_path, rows, case):
    stage = case.split("+")[0]
    run = LlavaRunArguments(
        stage=stage,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        projector_learning_rate=3e-2,
        vision_tower_learning_rate=1e-3,
        unfreeze_vision_layers=1 if case.endswith("vision") else 0,
    )
    model, processor = make_tiny_model(), make_tiny_processor()
    trainer = build_trainer(run, sft_config(tmp_path), model, processor, rows)
    before = {name: parameter.detach().clone() for name, parameter in trainer.model.named_parameters()}
    trainer.train()
    changed = changed_parameters(trainer.model, before)
    expected = {name for name in before if EXPECTED_CHANGES[case](name)}
    assert changed == expected, (sorted(changed ^ expected))[:10]

    # stage 1 renders LLaVA's `plain` format by default, the other stages the processor's template
    expected_template = get_chat_template("plain") if stage == "pretrain" else processor.chat_template
    assert trainer.data_collator.chat_template == expected_template

    groups = {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert {name.split("/")[0] for name in groups} == {
        "pretrain": {"multi_modal_projector"},
        "finetune": {"multi_modal_projector", "language_model"},
        "lora": {"multi_modal_projector", "language_model"},
        "pretrain+vision": {"multi_modal_projector", "vision_tower"},
    }[case]
    for name, lr in groups.items():
        component = name.split("/")[0]
        assert lr == {"multi_modal_projector": 3e-2, "vision_tower": 1e-3, "language_model": 1e-2}[component]
    # no weight decay on biases and norms
    assert all(group["weight_decay"] == 0.0 for group in trainer.optimizer.param_groups if "no_decay" in group["name"])


def test_loss_decreases_over_a_few_dozen_steps(tmp_path):
    rows = make_shape_rows(32, seed=1, image_size=32)
    trainer = train(
        LlavaRunArguments(stage="finetune"),
        sft_config(tmp_path, steps=24, per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=4),
        make_tiny_model(),
        make_tiny_processor(),
        rows,
    )
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < 0.5 * losses[0]
    reloaded = LlavaHfForConditionalGeneration.from_pretrained(tmp_path)
    for name, parameter in trainer.model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], parameter, msg=name)


def test_padding_free_training_matches_padded_training(tmp_path, rows):
    losses = {}
    for pack in (False, True):
        trainer = build_trainer(
            LlavaRunArguments(stage="finetune", pack_batches=pack),
            sft_config(tmp_path / str(pack), steps=3),
            make_tiny_model(),
            make_tiny_processor(),
            rows,
        )
        assert trainer.data_collator.padding_free is pack
        trainer.train()
        losses[pack] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), atol=1e-4, rtol=1e-4)


def test_stage1_projector_loads_into_stage2(tmp_path, rows):
    stage1 = train(
        LlavaRunArguments(stage="pretrain"),
        sft_config(tmp_path / "stage1"),
        make_tiny_model(),
        make_tiny_processor(),
        rows,
    )
    saved = load_file(str(tmp_path / "stage1" / "projector.safetensors"))
    assert sorted(saved) == [
        "multi_modal_projector.linear_1.bias",
        "multi_modal_projector.linear_1.weight",
        "multi_modal_projector.linear_2.bias",
        "multi_modal_projector.linear_2.weight",
    ]
    trained = stage1.model.model.multi_modal_projector
    # Stage 2 from a different initialisation, loading the projector by folder path.
    stage2 = build_trainer(
        LlavaRunArguments(stage="finetune", projector_path=str(tmp_path / "stage1")),
        sft_config(tmp_path / "stage2"),
        make_tiny_model(seed=1),
        make_tiny_processor(),
        rows,
    )
    for name, parameter in stage2.model.model.multi_modal_projector.state_dict().items():
        assert torch.equal(parameter, trained.state_dict()[name]), name

    # The original LLaVA stage-1 file (mm_projector.bin, Sequential indices 0 and 2) loads too.
    original = {
        "model.mm_projector.0.weight": trained.linear_1.weight.detach(),
        "model.mm_projector.0.bias": trained.linear_1.bias.detach(),
        "model.mm_projector.2.weight": trained.linear_2.weight.detach(),
        "model.mm_projector.2.bias": trained.linear_2.bias.detach(),
    }
    torch.save(original, tmp_path / "mm_projector.bin")
    fresh = make_tiny_model(seed=2)
    load_projector(fresh, tmp_path / "mm_projector.bin")
    assert torch.equal(fresh.model.multi_modal_projector.linear_2.weight, trained.linear_2.weight)

    from llava_hf.testing import make_tiny_config

    linear = make_tiny_model(make_tiny_config(projector_type="linear"))
    save_projector(linear, tmp_path / "linear")
    with pytest.raises(ValueError, match="does not fit this model"):
        load_projector(fresh, tmp_path / "linear")


def test_lora_adapter_saves_loads_and_merges(tmp_path, rows):
    from peft import PeftModel

    run = LlavaRunArguments(stage="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0, merge_lora=True)
    trainer = train(run, sft_config(tmp_path), make_tiny_model(), make_tiny_processor(), rows)
    batch = LlavaCollator(make_tiny_processor())(list(rows.select(range(2))))
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits
        loaded = PeftModel.from_pretrained(make_tiny_model(), tmp_path).eval()
        torch.testing.assert_close(loaded(**batch).logits, expected)
        merged_in_memory = loaded.merge_and_unload()
        torch.testing.assert_close(merged_in_memory(**batch).logits, expected, atol=1e-5, rtol=1e-5)
        merged = LlavaHfForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=1e-5)
        assert not any("lora" in name for name in merged.state_dict())


def test_training_refuses_bad_data_unless_told_to_skip(tmp_path, rows):
    bad = make_shape_rows(2, seed=9, image_size=32)
    bad[0]["messages"] = bad[0]["messages"][:1]  # a question without an answer
    bad[1]["images"] = []  # a placeholder without its image
    data = Dataset.from_list(list(rows.select(range(4))) + bad, features=ROW_FEATURES)
    with pytest.raises(DataCheckError, match="role_order.*shape-9-0"):
        build_trainer(
            LlavaRunArguments(stage="finetune"), sft_config(tmp_path), make_tiny_model(), make_tiny_processor(), data
        )
    trainer = build_trainer(
        LlavaRunArguments(stage="finetune", skip_bad_rows=True),
        sft_config(tmp_path),
        make_tiny_model(),
        make_tiny_processor(),
        data,
    )
    assert len(trainer.train_dataset) == 4


def test_qlora_keeps_vision_tower_projector_and_head_out_of_quantization():
    config = qlora_quantization_config()
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert config.llm_int8_skip_modules == QLORA_SKIP_MODULES == ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


@pytest.mark.gpu
def test_qlora_trains_on_gpu(tmp_path, rows):
    """Needs CUDA and bitsandbytes: a 4-bit tiny checkpoint trains LoRA + projector; the vision tower stays float."""
    model = make_tiny_model()
    model.save_pretrained(tmp_path / "base")
    make_tiny_processor().save_pretrained(tmp_path / "base")
    run = LlavaRunArguments(
        stage="qlora", model_name_or_path=str(tmp_path / "base"), lora_r=4, lora_alpha=8, dtype="bfloat16"
    )
    trainer = build_trainer(run, sft_config(tmp_path / "out", use_cpu=False, bf16=True), train_dataset=rows)
    base = trainer.model.get_base_model()
    assert base.model.vision_tower.encoder.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert "Linear4bit" in type(base.model.language_model.layers[0].mlp.down_proj.base_layer).__name__
    trainer.train()
