"""LLaVA-1.6 stage 2 on CPU: a tiny 1.6 release checkpoint converted by `llava-hf convert` trains with its tower
unfrozen at its own learning rate, on rows with several images of different sizes per turn; the output is the
built-in llava_next format and loads back through `load_checkpoint` (what evaluate / serve / chat use). Also the
same model built from parts (`build_from_parts(image_aspect_ratio="anyres")`)."""

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset

from llava_hf.conversion.arguments import ConvertArguments
from llava_hf.conversion.convert import convert_checkpoint
from llava_hf.data import ROW_FEATURES
from llava_hf.modeling import LlavaHfNextForConditionalGeneration
from llava_hf.processing import LlavaHfNextProcessor
from llava_hf.testing import make_image
from llava_hf.training import LlavaRunArguments, build_from_parts, train
from llava_hf.utils.loading import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "assets"))
import make_original_checkpoints  # noqa: E402
from test_stages import sft_config  # noqa: E402

SIZES = [(44, 30), (20, 90), (64, 64), (97, 31), (1, 40), (70, 50)]


def rows(count: int) -> Dataset:
    """Rows with one or two images (different sizes, so different token counts) in the first user turn."""
    data = []
    for index in range(count):
        sizes = [SIZES[index % len(SIZES)]] + ([SIZES[(index + 2) % len(SIZES)]] if index % 2 else [])
        content = [{"type": "image", "text": None} for _ in sizes] + [{"type": "text", "text": "What is shown?"}]
        data.append(
            {
                "id": str(index),
                "images": [make_image(index * 3 + number, size) for number, size in enumerate(sizes)],
                "messages": [
                    {"role": "user", "content": content},
                    {"role": "assistant", "content": [{"type": "text", "text": f"Noise number {index}."}]},
                ],
            }
        )
    return Dataset.from_list(data, features=ROW_FEATURES)


def test_stage2_trains_a_converted_llava_next_with_its_tower_at_its_own_lr(tmp_path):
    tower = make_original_checkpoints.make_vision_tower(tmp_path / "clip-tiny")
    base = make_original_checkpoints.make_base_llm(tmp_path / "vicuna-tiny")
    source = make_original_checkpoints.make_original_next(tmp_path / "llava-v1.6-tiny", tower, base, seed=60)
    converted = convert_checkpoint(source, tmp_path / "converted", ConvertArguments(chat_template="vicuna_v1"))
    run = LlavaRunArguments(
        stage="finetune",
        model_name_or_path=str(converted.destination),
        train_vision_tower=True,
        vision_tower_learning_rate=1e-3,
    )
    before = LlavaHfNextForConditionalGeneration.from_pretrained(converted.destination, dtype=torch.float32)
    trainer = train(
        run, sft_config(tmp_path / "out", steps=4, learning_rate=1e-2, max_length=1024), train_dataset=rows(8)
    )
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and all(loss == loss and loss > 0 for loss in losses)
    rates = {group["lr"] for group in trainer.optimizer.param_groups if group["params"]}
    assert rates == {1e-3, 1e-2}  # the tower's own LR, everything else at learning_rate (constant schedule)
    model = trainer.model
    trained = dict(model.named_parameters())

    def moved(name: str) -> bool:
        return not torch.equal(dict(before.named_parameters())[name], trained[name].detach())

    assert moved("model.vision_tower.encoder.layers.0.mlp.fc1.weight")
    assert moved("model.multi_modal_projector.linear_1.weight") and moved("model.image_newline")

    saved = Path(trainer.args.output_dir)
    assert json.loads((saved / "config.json").read_text())["model_type"] == "llava_next"
    reloaded, processor = load_checkpoint(str(saved), dtype="float32", device="cpu")
    assert type(reloaded) is LlavaHfNextForConditionalGeneration and type(processor) is LlavaHfNextProcessor
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[make_image(1, (44, 30)), make_image(2, (20, 90))], return_tensors="pt")
    output = reloaded.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 3


def test_build_from_parts_makes_llava_next(tmp_path):
    tower = make_original_checkpoints.make_vision_tower(tmp_path / "clip-tiny")
    base = make_original_checkpoints.make_base_llm(tmp_path / "vicuna-tiny")
    model, processor = build_from_parts(str(tower), str(base), image_aspect_ratio="anyres", chat_template="vicuna_v1")
    assert type(model) is LlavaHfNextForConditionalGeneration and type(processor) is LlavaHfNextProcessor
    assert model.config.image_grid_pinpoints == [[64, 32], [32, 64], [64, 64], [32, 96], [96, 32]]
    assert model.model.image_newline.std().item() > 0
    batch = processor(text="<image> hi", images=[make_image(0, (97, 31))], return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape[1] == batch["input_ids"].shape[1]
