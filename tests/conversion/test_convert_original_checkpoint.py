"""`llava-hf convert`: every source layout built by tests/assets/make_original_checkpoints.py, verified against the
original computation (llava_hf/conversion/reference.py), prompt fidelity on a SentencePiece tokenizer, bad sources."""

import json
import shutil
import sys
from pathlib import Path

import pytest

# SentencePiece tokenizers (tokenizer.model) need the `conversion` extra: sentencepiece + protobuf.
pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")
import torch
from safetensors.torch import load_file

from llava_hf import LlavaHfForConditionalGeneration, LlavaHfProcessor
from llava_hf.cli import main as cli_main
from llava_hf.conversion import ConversionError, ConvertArguments, convert_checkpoint, detect_source_format
from llava_hf.conversion.reference import OriginalSentencePieceTokenizer, original_tokenizer_image_token

sys.path.insert(0, str(Path(__file__).parents[1] / "assets"))
import make_original_checkpoints  # noqa: E402

SENTENCEPIECE_MODEL = make_original_checkpoints.SENTENCEPIECE_DIR / "tokenizer.model"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_original_checkpoints.build_all(tmp_path_factory.mktemp("original"))


@pytest.fixture(scope="module")
def converted_v15(sources, tmp_path_factory):
    destination = tmp_path_factory.mktemp("converted") / "llava-v1.5-tiny"
    result = convert_checkpoint(sources["llava-v1.5-tiny"], destination, ConvertArguments(verify=True))
    return result


def test_formats_are_detected_from_files(sources):
    expected = {
        "llava-v1.5-tiny": "original",
        "llava-v1-linear-tiny": "original",
        "llava-deepspeed-tiny": "original",
        "llava-stage1-tiny": "stage1",
        "llava-lora-tiny": "lora",
        "llava-hf-tiny": "transformers",
    }
    assert {name: detect_source_format(sources[name]) for name in expected} == expected


def test_v15_sharded_fp16_bin_converts_to_a_complete_verified_checkpoint(converted_v15, sources):
    folder = converted_v15.destination
    for name in (
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
        "README.md",
    ):
        assert (folder / name).is_file(), name
    check = converted_v15.verification
    assert check["token_ids_identical"] and check["greedy_agree"] and check["max_abs_logit_diff"] <= 1e-3

    model, info = LlavaHfForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.dtype == torch.float16
    config = model.config
    assert (config.projector_type, config.vision_feature_layer, config.image_aspect_ratio) == ("mlp2x_gelu", -2, "pad")
    processor = LlavaHfProcessor.from_pretrained(folder)
    assert processor.tokenizer.convert_ids_to_tokens([400, 401]) == ["<image>", "<pad>"]
    assert (config.image_token_id, config.text_config.pad_token_id, config.text_config.vocab_size) == (400, 401, 402)
    assert processor.chat_template.startswith("{#- LLaVA-1.5's `vicuna_v1`")
    assert json.loads((folder / "generation_config.json").read_text())["pad_token_id"] == 401

    # New rows are the mean of the old ones; the old rows are the source's fp16 values untouched.
    weights = load_file(folder / "model.safetensors")
    original = make_original_checkpoints.random_llama_state(10)
    for disk_name, source_name in (
        ("language_model.model.embed_tokens.weight", "model.embed_tokens.weight"),
        ("language_model.lm_head.weight", "lm_head.weight"),
    ):
        rows = weights[disk_name]
        assert torch.equal(rows[:400], original[source_name].half())
        torch.testing.assert_close(rows[400:].float(), rows[:400].float().mean(0).expand(2, -1), atol=1e-3, rtol=0)
    card = (folder / "README.md").read_text()
    assert "initialised to the mean of the existing rows" in card and "max |Δlogit|" in card


@pytest.mark.parametrize(
    "name, projector_type, aspect, dtype",
    [
        ("llava-v1-linear-tiny", "linear", "square", torch.float32),
        ("llava-stage1-tiny", "mlp2x_gelu", "pad", torch.float32),
        ("llava-lora-tiny", "mlp2x_gelu", "pad", torch.float32),
    ],
)
def test_other_layouts_convert_and_match_the_original_computation(
    sources, tmp_path, name, projector_type, aspect, dtype
):
    result = convert_checkpoint(sources[name], tmp_path / name, ConvertArguments(verify=True))
    assert result.verification["max_abs_logit_diff"] <= 1e-3 and result.verification["greedy_agree"]
    model = LlavaHfForConditionalGeneration.from_pretrained(tmp_path / name)
    assert (model.config.projector_type, model.config.image_aspect_ratio, model.dtype) == (
        projector_type,
        aspect,
        dtype,
    )


def test_lora_run_is_merged_with_the_lora_formula(sources, tmp_path):
    convert_checkpoint(sources["llava-lora-tiny"], tmp_path / "merged")
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    adapter = load_file(sources["llava-lora-tiny"] / "adapter_model.safetensors")
    base = make_original_checkpoints.random_llama_state(2)
    prefix = "base_model.model.model.layers.1.self_attn.q_proj"
    scale = 8 / 4  # lora_alpha / r
    expected = base["model.layers.1.self_attn.q_proj.weight"] + scale * (
        adapter[f"{prefix}.lora_B.weight"] @ adapter[f"{prefix}.lora_A.weight"]
    )
    torch.testing.assert_close(merged["language_model.model.layers.1.self_attn.q_proj.weight"], expected)
    projector = torch.load(sources["llava-lora-tiny"] / "non_lora_trainables.bin", weights_only=True)
    assert torch.equal(
        merged["multi_modal_projector.linear_2.weight"], projector["base_model.model.model.mm_projector.2.weight"]
    )


def test_deepspeed_tower_weights_are_used_only_when_asked(sources, tmp_path):
    saved_tower = make_original_checkpoints.deepspeed_tower_state(seed=13)
    name = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
    disk_name = "vision_tower.encoder.layers.0.self_attn.q_proj.weight"
    with_tower = convert_checkpoint(
        sources["llava-deepspeed-tiny"], tmp_path / "a", ConvertArguments(use_checkpoint_vision_tower=True, verify=True)
    )
    assert "checkpoint's model.vision_tower" in with_tower.provenance["vision_tower"]
    assert torch.equal(load_file(tmp_path / "a" / "model.safetensors")[disk_name], saved_tower[name].bfloat16())
    convert_checkpoint(sources["llava-deepspeed-tiny"], tmp_path / "b")
    assert not torch.equal(load_file(tmp_path / "b" / "model.safetensors")[disk_name], saved_tower[name].bfloat16())


def expand(ids: list[int], image_token_id: int, length: int) -> list[int]:
    return [x for token in ids for x in ([image_token_id] * length if token == -200 else [token])]


CONVERSATIONS = {
    "single turn": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]},
    ],
    "multi turn": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
        {"role": "user", "content": [{"type": "text", "text": "How many shapes are there?"}]},
    ],
}


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_prompt_ids_around_the_image_match_the_original_tokenizer_image_token(converted_v15, conversation):
    """the original `llava/train/train.py` `preprocess_v1` and `llava/mm_utils.py` `tokenizer_image_token`: split on <image>, tokenize each chunk with SentencePiece (dummy prefix after the image)."""
    processor = LlavaHfProcessor.from_pretrained(converted_v15.destination)
    prompt = processor.apply_chat_template(CONVERSATIONS[conversation], add_generation_prompt=True)
    ours = processor(images=make_original_checkpoints_image(), text=prompt).input_ids[0]

    original = OriginalSentencePieceTokenizer(SENTENCEPIECE_MODEL, legacy=True)
    reference = original_tokenizer_image_token(original, prompt.removeprefix("<s>"))
    after_image = reference[reference.index(-200) + 1]
    assert original.processor.id_to_piece(after_image) == "▁"  # the dummy prefix the model was trained with
    assert list(ours) == expand(reference, 400, 16)


def test_legacy_false_source_matches_in_single_turn_prompts(converted_v15):
    """A legacy=False slow tokenizer drops the prefix after </s> only; single-turn prompts are identical."""
    processor = LlavaHfProcessor.from_pretrained(converted_v15.destination)
    prompt = processor.apply_chat_template(CONVERSATIONS["single turn"], add_generation_prompt=True)
    ours = processor(images=make_original_checkpoints_image(), text=prompt).input_ids[0]
    original = OriginalSentencePieceTokenizer(SENTENCEPIECE_MODEL, legacy=False)
    assert list(ours) == expand(original_tokenizer_image_token(original, prompt.removeprefix("<s>")), 400, 16)


def make_original_checkpoints_image():
    from llava_hf.conversion.common import verification_image

    return verification_image()


def edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(mm_projector_type="qformer"), "mm_projector_type='qformer' is unknown"),
        (dict(image_aspect_ratio="anyres"), "anyres"),
        (dict(mm_use_im_start_end=True), "mm_use_im_start_end=True"),
        (dict(mm_vision_tower="/nonexistent/clip"), "pass --vision_tower"),
        (dict(mm_hidden_size=64), "mm_hidden_size=64"),
        (dict(mm_projector_type="mlp3x_gelu"), "projector weight model.mm_projector.4.weight is missing"),
        (dict(mm_new_feature=1), "mm_new_feature=1 is unknown"),
    ],
)
def test_bad_sources_fail_clearly_and_leave_no_destination(sources, tmp_path, change, message):
    source = shutil.copytree(
        sources["llava-v1-linear-tiny" if "qformer" in str(change) else "llava-v1.5-tiny"], tmp_path / "src"
    )
    edit_config(source, **change)
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace("[", r"\[")):
        convert_checkpoint(source, tmp_path / "out" / "dst")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_projector_weights_shapes_and_shards_fail_clearly(sources, tmp_path):
    stage1 = shutil.copytree(sources["llava-stage1-tiny"], tmp_path / "stage1")
    projector = torch.load(stage1 / "mm_projector.bin", weights_only=True)
    torch.save({k: v for k, v in projector.items() if ".2." not in k}, stage1 / "mm_projector.bin")
    with pytest.raises(ConversionError, match="model.mm_projector.2.weight is missing"):
        convert_checkpoint(stage1, tmp_path / "out" / "a")
    projector["model.mm_projector.2.weight"] = torch.zeros(32, 16)
    torch.save(projector, stage1 / "mm_projector.bin")
    with pytest.raises(ConversionError, match=r"has shape \(32, 16\), expected \(32, 32\)"):
        convert_checkpoint(stage1, tmp_path / "out" / "b")

    sharded = shutil.copytree(sources["llava-v1.5-tiny"], tmp_path / "sharded")
    (sharded / "pytorch_model-00002-of-00003.bin").unlink()
    with pytest.raises(ConversionError, match="missing shard"):
        convert_checkpoint(sharded, tmp_path / "out" / "c")
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_convert_verify_and_error_exit_codes(sources, tmp_path, capsys):
    assert cli_main(["convert", str(sources["llava-stage1-tiny"]), str(tmp_path / "ok"), "--verify"]) == 0
    assert "max |Δlogit| = 0" in capsys.readouterr().out
    assert cli_main(["convert", str(sources["vicuna-tiny"]), str(tmp_path / "bad")]) == 1
    assert "not a LLaVA checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_releases_rope_scaling_null_raises_no_deprecation_warning(sources):
    """The releases' config.json carries `"rope_scaling": null`; loading their tokenizer must not print transformers'
    deprecation warning for it at every conversion."""
    import warnings

    from llava_hf.conversion.convert_original_checkpoint import build_tokenizer

    folder = sources["llava-v1.5-tiny"]
    assert json.loads((folder / "config.json").read_text())["rope_scaling"] is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_tokenizer(folder, {})
    assert not [warning for warning in caught if "rope_scaling" in str(warning.message)]
