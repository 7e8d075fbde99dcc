"""TRL's own CLI fine-tunes what llava_hf writes, in an environment without llava_hf: `trl sft` with
examples/configs/trl_sft_llava.yaml on the folder `push_to_hub` uploads and a dataset `llava-hf data convert` wrote,
a few steps on CPU; the result loads back into llava_hf.

The loss is LLaVA's where TRL's vision path allows it: the batch TRL's SFTTrainer builds (captured from its own
collator, with the same config, folder and dataset) supervises exactly the tokens llava_hf's LlavaCollator supervises
(each answer and its end token, never the system prompt, the questions or the image placeholders). The one difference
is BOS: TRL tokenizes the rendered conversation with `add_special_tokens=False` and LLaVA's templates render no BOS, so
TRL's sequences are LlavaCollator's without their leading BOS (docs/consumers.md)."""

import pytest
import torch
from datasets import Image, List, load_dataset

from helpers.consumers import consumer_python, push_checkpoint, run_client, run_consumer_command, write_checkpoint
from llava_hf.cli import main as cli_main
from llava_hf.data import LlavaCollator
from llava_hf.data.formats import load_rows
from llava_hf.modeling import LlavaHfForConditionalGeneration
from llava_hf.testing import make_tiny_data
from llava_hf.utils.loading import load_checkpoint

pytestmark = pytest.mark.slow

CONFIG = "examples/configs/trl_sft_llava.yaml"


@pytest.fixture(scope="module")
def sft_inputs(tmp_path_factory):
    """The pushed folder, the converted dataset, and that dataset as TRL loads it (`images` decoded to PIL)."""
    consumer_python()  # skip or fail before writing anything
    root = tmp_path_factory.mktemp("trl")
    write_checkpoint(root / "saved")
    folder = push_checkpoint(root / "saved", root / "pushed")
    json_path, image_folder = make_tiny_data(root / "llava", num_rows=8)
    converted = root / "converted"
    arguments = ["--json_path", str(json_path), "--image_folder", str(image_folder), "--output_dir", str(converted)]
    assert cli_main(["data", "convert", *arguments]) == 0
    images = load_dataset(str(converted), split="train").features["images"]
    dataset = converted
    if not images.feature.decode:  # converted datasets store decodable Image() features; older ones raw bytes
        dataset = root / "decodable"
        recast = load_dataset(str(converted), split="train").cast_column("images", List(Image()))
        recast.to_parquet(str(dataset / "data" / "train.parquet"))
    return root, folder, converted, dataset


def test_trl_collator_supervises_what_llava_collator_supervises(sft_inputs, request):
    root, folder, converted, dataset = sft_inputs
    config = request.config.rootpath / CONFIG
    captured = run_client("trl_collator", config, folder, dataset, root / "trl_batch.pt", cwd=root)
    assert not captured["llava_hf_imported"]
    assert (captured["collator"], captured["processor"]) == ("DataCollatorForVisionLanguageModeling", "LlavaProcessor")
    assert captured["image_type"] != "dict"  # TRL's collator gets PIL images
    trl = torch.load(root / "trl_batch.pt")

    _, processor = load_checkpoint(str(root / "saved"), device="cpu", dtype="float32", for_inference=False)
    rows = load_rows(str(converted))
    ours = LlavaCollator(processor)([rows[0], rows[1]])
    bos = processor.tokenizer.bos_token_id
    assert (ours["input_ids"][:, 0] == bos).all() and not (trl["input_ids"][:, 0] == bos).any()
    length = trl["input_ids"].shape[1]
    assert ours["input_ids"].shape[1] == length + 1
    for key in ("input_ids", "attention_mask", "labels"):  # right-padded: dropping BOS shifts every row by one
        assert torch.equal(trl[key], ours[key][:, 1:]), key
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    images = sum(len(rows[row]["images"]) for row in range(2))
    assert images >= 1 and (trl["input_ids"] == image_token).sum() == images * processor.image_seq_length
    assert not (trl["labels"] == image_token).any()
    for row in range(2):
        supervised = processor.tokenizer.decode(trl["labels"][row][trl["labels"][row] != -100])
        answers = [turn["content"][0]["text"] for turn in rows[row]["messages"] if turn["role"] == "assistant"]
        assert supervised == "".join(f" {answer}</s>" for answer in answers).lstrip()


def test_trl_sft_cli_trains_and_the_result_loads_in_llava_hf(sft_inputs, request):
    root, folder, _, dataset = sft_inputs
    output = root / "sft"
    command = ["trl", "sft", "--config", str(request.config.rootpath / CONFIG), "--model_name_or_path", str(folder)]
    command += ["--dataset_name", str(dataset), "--output_dir", str(output), "--max_steps", "2"]
    command += ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--learning_rate", "1e-2"]
    command += ["--use_cpu", "true", "--bf16", "false", "--save_strategy", "no", "--disable_tqdm", "true"]
    result = run_consumer_command(command, cwd=root)
    assert result.returncode == 0, result.stderr[-6000:]
    assert "'train_loss'" in result.stdout

    trained, info = LlavaHfForConditionalGeneration.from_pretrained(output, output_loading_info=True)
    assert not any(info.values()), info
    original = LlavaHfForConditionalGeneration.from_pretrained(root / "saved")
    before, after = original.state_dict(), trained.state_dict()
    assert before.keys() == after.keys()
    changed = {
        name.removeprefix("model.").split(".")[0] for name in before if not torch.equal(before[name], after[name])
    }
    # Stock LlavaForConditionalGeneration trains every parameter, the CLIP tower too (LLaVA freezes it).
    assert changed == {"multi_modal_projector", "language_model", "vision_tower", "lm_head"}
    assert (output / "chat_template.jinja").read_text() == (root / "saved" / "chat_template.jinja").read_text()
