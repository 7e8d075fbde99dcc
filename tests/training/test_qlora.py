"""QLoRA on CPU (bitsandbytes runs NF4 there): the tiny QLoRA recipe trains from the command line on a 4-bit language
model with the vision tower, projector and lm_head left unquantized, finishes, and its merged checkpoint is the
unquantized base plus the adapter (what `PeftModel` computes on that base)."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

from helpers.paths import REAL_SHAPED
from llava_hf.cli import main as llava_hf
from llava_hf.testing import make_image, make_tiny_data, make_tiny_parts
from llava_hf.training import LlavaRunArguments, load_lora_base, load_model_and_processor, merge_lora_adapter

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.slow  # two training runs through the CLI: ~20 s on 2 cores

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory):
    """Tiny stage 1, then the tiny QLoRA recipe (2 steps) with its merge; returns (work folder, common overrides)."""
    work = tmp_path_factory.mktemp("qlora")
    vision_dir, language_dir = make_tiny_parts(work / "parts", REAL_SHAPED)
    json_path, image_folder = make_tiny_data(work / "data", num_rows=16)
    common = ["--vision_tower", str(vision_dir), "--language_model", str(language_dir), "--data_path", str(json_path)]
    common += ["--image_folder", str(image_folder), "--disable_tqdm", "true", "--max_steps", "2"]
    recipe = str(CONFIGS / "tiny_stage1_pretrain.yaml")
    assert llava_hf(["train", "--config", recipe, *common, "--output_dir", str(work / "stage1")]) == 0
    recipe = str(CONFIGS / "tiny_stage2_qlora.yaml")
    overrides = ["--projector_path", str(work / "stage1"), "--output_dir", str(work / "qlora")]
    assert llava_hf(["train", "--config", recipe, *common, *overrides]) == 0
    return work, common


def inputs_for(processor):
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
        add_generation_prompt=True,
    )
    return processor(images=make_image(seed=3), text=prompt, return_tensors="pt")


def test_the_qlora_recipe_loads_only_the_language_model_in_4bit(qlora_run):
    work, _ = qlora_run
    run = LlavaRunArguments(**json.loads((work / "qlora" / "llava_run_arguments.json").read_text()))
    assert run.stage == "qlora"
    model, _ = load_model_and_processor(run)
    assert type(model.model.language_model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert type(model.model.vision_tower.encoder.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert type(model.model.multi_modal_projector.linear_1) is torch.nn.Linear
    assert type(model.lm_head) is torch.nn.Linear


def test_the_merged_checkpoint_is_the_unquantized_base_plus_the_adapter(qlora_run):
    work, _ = qlora_run
    adapter = work / "qlora"
    processor = AutoProcessor.from_pretrained(adapter)
    inputs = inputs_for(processor)
    base = load_lora_base(adapter)  # float32, as the recipe's dtype
    base_q_proj = base.model.language_model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    merged = AutoModelForImageTextToText.from_pretrained(adapter / "merged").eval()
    assert not any("lora" in name or "absmax" in name for name in merged.state_dict())
    # the adapter moved the weights: the comparison below is not base against base
    assert not torch.equal(merged.model.language_model.layers[0].self_attn.q_proj.weight, base_q_proj)
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, peft_model(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_merge_lora_adapter_writes_the_same_merged_checkpoint_later(qlora_run, tmp_path):
    work, _ = qlora_run
    merge_lora_adapter(work / "qlora", tmp_path / "merged")
    again = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
    saved = AutoModelForImageTextToText.from_pretrained(work / "qlora" / "merged").eval()
    for (name, tensor), (_, expected) in zip(again.state_dict().items(), saved.state_dict().items(), strict=True):
        assert torch.equal(tensor, expected), name
