"""The LLaVA-1.5-7B recipes, run through the `llava-hf` console script from parts shaped like the real ones
(tests/assets/real_shaped: a Vicuna-style SentencePiece tokenizer with no `<image>` and no pad, a full CLIPModel
folder with an old-format preprocessor config): stage 1 -> stage 2 -> `llava-hf generate` -> `llava-hf evaluate` on
the ScienceQA fixture in its original layout; and stage 2 LoRA, whose adapter names its base so the base can be
rebuilt for `PeftModel.from_pretrained`. Only the paths and the CPU settings are overridden in the recipes."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from PIL import Image

from helpers.paths import REAL_SHAPED
from helpers.processes import run_to_exit
from llava_hf import LlavaHfForConditionalGeneration, LlavaHfProcessor
from llava_hf.testing import make_tiny_data
from llava_hf.training import load_lora_base

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "examples" / "configs"
SCIENCEQA = REPO / "tests" / "assets" / "evaluation" / "scienceqa"
LLAVA_HF = [sys.executable, "-c", "import sys; from llava_hf.cli import main; sys.exit(main())"]

pytestmark = pytest.mark.slow  # four to six `llava-hf` processes, each importing torch: minutes on 2 loaded cores

# On a CPU: no bf16/tf32 (the recipes' GPU settings), float32 weights, no dataloader workers, two steps.
CPU = ["--use_cpu", "true", "--bf16", "false", "--tf32", "false", "--dtype", "float32"]
CPU += ["--dataloader_num_workers", "0", "--max_steps", "2", "--disable_tqdm", "true", "--report_to", "none"]


def llava_hf(*arguments: str, cwd: Path) -> str:
    """Run `llava-hf ARGUMENTS` (the console script's entry point) in its own process group; returns stdout."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = run_to_exit([*LLAVA_HF, *arguments], cwd=cwd, env=environment)
    assert result.returncode == 0, (
        f"llava-hf {' '.join(arguments)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Stage 1 with the 7B pretrain recipe from the real-shaped parts; returns (work folder, common overrides)."""
    work = tmp_path_factory.mktemp("real_parts")
    json_path, image_folder = make_tiny_data(work / "data", num_rows=16)
    parts = ["--vision_tower", str(REAL_SHAPED / "clip-vit-large-patch14-336")]
    parts += ["--language_model", str(REAL_SHAPED / "vicuna-7b-v1.5")]
    common = [*parts, "--data_path", str(json_path), "--image_folder", str(image_folder), *CPU]
    config = CONFIGS / "llava_v1.5_7b_stage1_pretrain.yaml"
    out = llava_hf("train", "--config", str(config), *common, "--output_dir", "stage1", cwd=work)
    assert "trained 2 steps" in out
    assert (work / "stage1" / "projector.safetensors").is_file()
    return work, common


def test_stage1_stage2_generate_evaluate(stage1):
    work, common = stage1
    config = CONFIGS / "llava_v1.5_7b_stage2_finetune.yaml"
    stage2 = ["--projector_path", "stage1", "--output_dir", "stage2", "--per_device_train_batch_size", "4"]
    assert "trained 2 steps" in llava_hf("train", "--config", str(config), *common, *stage2, cwd=work)
    processor = LlavaHfProcessor.from_pretrained(work / "stage2")
    # <image> was added to Vicuna's 400 pieces, and the tokenizer pads with unk, as LLaVA-1.5 did
    assert processor.image_token_id == 400 and processor.tokenizer.pad_token == "<unk>"
    model = LlavaHfForConditionalGeneration.from_pretrained(work / "stage2")
    assert model.config.image_token_id == 400 and model.get_input_embeddings().weight.shape[0] == 401

    image = SCIENCEQA / "test" / "1" / "image.png"
    answer = llava_hf(
        "generate", "--model", "stage2", "--image", str(image), "--prompt", "What is in the image?",
        "--max_new_tokens", "4", cwd=work,
    )  # fmt: skip
    assert answer.strip("\n")  # greedy tokens from a 2-step model: any text, but an answer was produced

    llava_hf(
        "evaluate", "--task", "scienceqa", "--data", str(SCIENCEQA), "--model", "stage2", "--output_dir", "eval",
        "--max_new_tokens", "4", "--device", "cpu", "--no_progress", cwd=work,
    )  # fmt: skip
    results = json.loads((work / "eval" / "results.json").read_text())
    predictions = [json.loads(line) for line in (work / "eval" / "predictions.jsonl").read_text().splitlines()]
    test_ids = json.loads((SCIENCEQA / "pid_splits.json").read_text())["test"]
    assert results["num_examples"] == results["num_answered"] == len(test_ids) == len(predictions)
    assert sorted(str(prediction["question_id"]) for prediction in predictions) == sorted(map(str, test_ids))
    assert 0.0 <= results["metrics"]["Avg"] <= 100.0


def test_stage2_lora_adapter_names_its_base(stage1):
    work, common = stage1
    config = CONFIGS / "llava_v1.5_7b_stage2_lora.yaml"
    lora = ["--projector_path", str(work / "stage1"), "--output_dir", "lora", "--per_device_train_batch_size", "4"]
    lora += ["--merge_lora", "true"]
    assert "trained 2 steps" in llava_hf("train", "--config", str(config), *common, *lora, cwd=work)
    adapter = work / "lora"
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(work / "stage1")  # the stage-1 result: it names the parts

    # The base rebuilt from that name + the adapter is the merged model the run saved.
    peft_model = PeftModel.from_pretrained(load_lora_base(adapter), adapter).eval()
    merged = LlavaHfForConditionalGeneration.from_pretrained(adapter / "merged").eval()
    processor = LlavaHfProcessor.from_pretrained(adapter)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=Image.open(SCIENCEQA / "test" / "1" / "image.png"), text=prompt, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).logits, merged(**inputs).logits, atol=1e-4, rtol=1e-4)

    # A LoRA run that starts from a llava_hf checkpoint names that checkpoint.
    from_checkpoint = ["--model_name_or_path", str(adapter / "merged"), "--projector_path", "", "--output_dir", "lora2"]
    from_checkpoint += ["--per_device_train_batch_size", "4"]
    data = common[common.index("--data_path") :]
    assert "trained 2 steps" in llava_hf("train", "--config", str(config), *data, *from_checkpoint, cwd=work)
    name = json.loads((work / "lora2" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert name == str(adapter / "merged")
    base = LlavaHfForConditionalGeneration.from_pretrained(name)
    assert isinstance(PeftModel.from_pretrained(base, work / "lora2"), PeftModel)
