"""`llava-hf train --config recipe.yaml [overrides]` runs the tiny recipes end to end from pretrained parts: stage 1
from a vision tower + LLM, stage 2 from stage 1's projector; the result loads with transformers' Auto classes."""

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM

from helpers.paths import REAL_SHAPED
from llava_hf import LlavaHfForConditionalGeneration, LlavaHfProcessor
from llava_hf.cli import main as llava_hf
from llava_hf.testing import make_tiny_data, make_tiny_parts
from llava_hf.training import build_from_parts, build_processor_from_parts

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "examples" / "configs"


def test_build_from_parts_keeps_the_pretrained_weights(tmp_path):
    # real-shaped: a full CLIPModel, a Vicuna tokenizer without <image>
    vision_dir, language_dir = make_tiny_parts(tmp_path, REAL_SHAPED)
    model, processor = build_from_parts(str(vision_dir), str(language_dir), projector_type="mlp2x_gelu")
    vision, language = AutoModel.from_pretrained(vision_dir), AutoModelForCausalLM.from_pretrained(language_dir)
    for name, tensor in vision.vision_model.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], tensor), name
    known_rows = language.config.vocab_size
    for name, tensor in language.model.state_dict().items():
        kept = model.model.language_model.state_dict()[name]
        assert torch.equal(kept[:known_rows] if name == "embed_tokens.weight" else kept, tensor.float()), name
    assert torch.equal(model.lm_head.weight[:known_rows], language.lm_head.weight.float())
    # <image> got the next id and a row at the mean of the others; the vision tower is frozen
    assert model.config.image_token_id == processor.image_token_id == known_rows
    torch.testing.assert_close(model.lm_head.weight[known_rows], language.lm_head.weight.float().mean(dim=0))
    assert not any(parameter.requires_grad for parameter in model.model.vision_tower.parameters())
    assert processor.image_seq_length == 16
    # The processor alone (what training checks its data with, before loading the weights) is the same processor.
    alone = build_processor_from_parts(str(vision_dir), str(language_dir), projector_type="mlp2x_gelu")
    assert alone.to_dict() == processor.to_dict() and alone.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert (alone.image_token_id, alone.tokenizer.pad_token_id) == (processor.image_token_id, 0)


def test_tiny_recipes_run_from_the_command_line(tmp_path, capsys):
    vision_dir, language_dir = make_tiny_parts(tmp_path / "parts", REAL_SHAPED)
    json_path, image_folder = make_tiny_data(tmp_path / "data", num_rows=16)
    common = ["--vision_tower", str(vision_dir), "--language_model", str(language_dir), "--data_path", str(json_path)]
    common += ["--image_folder", str(image_folder), "--disable_tqdm", "true"]
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    for recipe in ("tiny_stage1_pretrain.yaml", "tiny_stage2_finetune.yaml"):
        settings = yaml.safe_load((CONFIGS / recipe).read_text())
        assert settings["use_cpu"] is True and settings["stage"] in ("pretrain", "finetune")

    status = llava_hf(
        [
            "train",
            "--config",
            str(CONFIGS / "tiny_stage1_pretrain.yaml"),
            *common,
            "--output_dir",
            str(stage1),
            "--max_steps",
            "3",
        ]
    )
    assert status == 0 and "trained 3 steps" in capsys.readouterr().out
    projector = load_file(str(stage1 / "projector.safetensors"))

    overrides = [
        "--projector_path",
        str(stage1),
        "--output_dir",
        str(stage2),
        "--max_steps",
        "4",
        "--learning_rate",
        "1e-3",
    ]
    status = llava_hf(["train", "--config", str(CONFIGS / "tiny_stage2_finetune.yaml"), *common, *overrides])
    assert status == 0 and "trained 4 steps" in capsys.readouterr().out
    model = LlavaHfForConditionalGeneration.from_pretrained(stage2)
    processor = LlavaHfProcessor.from_pretrained(stage2)
    assert type(model).__name__ == "LlavaHfForConditionalGeneration" and type(processor).__name__ == "LlavaHfProcessor"
    # stage 2 started from stage 1's projector and moved away from it
    assert not torch.equal(
        model.model.multi_modal_projector.linear_1.weight, projector["multi_modal_projector.linear_1.weight"]
    )
    assert (
        model.model.multi_modal_projector.linear_1.weight - projector["multi_modal_projector.linear_1.weight"]
    ).abs().max() < 0.05


def test_build_from_parts_normalises_with_the_towers_own_statistics(tmp_path):
    from transformers import SiglipImageProcessor

    vision_dir, language_dir = make_tiny_parts(tmp_path, REAL_SHAPED)
    _, clip_processor = build_from_parts(str(vision_dir), str(language_dir))  # the old-format CLIP config's values
    assert list(clip_processor.image_processor.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    (vision_dir / "preprocessor_config.json").unlink()
    _, fallback = build_from_parts(str(vision_dir), str(language_dir))  # none at all: CLIP's values
    assert list(fallback.image_processor.image_std) == [0.26862954, 0.26130258, 0.27577711]
    SiglipImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(vision_dir)
    _, processor = build_from_parts(str(vision_dir), str(language_dir))
    assert list(processor.image_processor.image_mean) == list(processor.image_processor.image_std) == [0.5, 0.5, 0.5]


def test_refused_data_exits_2_with_the_report_and_one_error_line(tmp_path, capsys, monkeypatch):
    """Data the preflight check refuses is bad input: the report on stdout, one line on stderr naming the fix, exit 2
    (no traceback), and nothing trained or written; the check runs before the model is loaded."""
    import json

    import llava_hf.training.trainer as trainer_module

    def refuse(run):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(trainer_module, "load_model_and_processor", refuse)

    record = {"id": "lost", "image": "missing.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps([record]))
    status = llava_hf([
        "train", "--stage", "finetune", "--vision_tower", str(REAL_SHAPED / "clip-vit-large-patch14-336"),
        "--language_model", str(REAL_SHAPED / "vicuna-7b-v1.5"), "--data_path", str(tmp_path / "data.json"),
        "--image_folder", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--bf16", "false",
        "--max_steps", "1", "--report_to", "none",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 2
    assert "missing_image               1" in captured.out and "[lost]" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("llava-hf train")]
    assert errors == [errors[0]] and "missing_image 1" in errors[0] and "--skip_bad_rows" in errors[0]
    assert "Traceback" not in captured.err and not (tmp_path / "out" / "config.json").exists()
