"""`llava-hf convert` streams: one source shard in memory at a time, padded vocabularies kept, vocabulary mismatches
explained the right way round. The real-size memory figures are in benchmarks/RESULTS_real_size.md."""

import gc
import json
import shutil
import sys
import weakref
from pathlib import Path

import pytest

pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")
import torch
from safetensors.torch import load_file, save_file

from llava_hf.conversion import (
    ConversionError,
    ConvertArguments,
    convert_checkpoint,
    convert_original_checkpoint,
    sources,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "assets"))
import make_original_checkpoints  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory):
    out = tmp_path_factory.mktemp("original")
    tower = make_original_checkpoints.make_vision_tower(out / "clip-tiny")
    base = make_original_checkpoints.make_base_llm(out / "vicuna-tiny")
    return {
        "tower": tower,
        "base": base,
        "v15": make_original_checkpoints.make_original(out / "llava-v1.5-tiny", tower, base, seed=10),
        "linear": make_original_checkpoints.make_original(
            out / "llava-v1-linear-tiny", tower, base, seed=11, projector_type="linear", file_format="safetensors"
        ),
    }


def rewrite_vocabulary(source: Path, rows: int, config_vocab: int, seed: int = 5):
    """Give the checkpoint `rows` embedding / lm_head rows (random extra rows, or the first `rows`) and set
    config.json's vocab_size to `config_vocab`, keeping the shard layout."""
    generator = torch.Generator().manual_seed(seed)
    for path in sorted(source.glob("pytorch_model-*.bin")):
        shard = torch.load(path, weights_only=True)
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            if name in shard:
                matrix = shard[name]
                extra = torch.randn(max(0, rows - len(matrix)), matrix.shape[1], generator=generator)
                shard[name] = torch.cat([matrix, extra.to(matrix.dtype)])[:rows].contiguous()
        torch.save(shard, path)
    config = json.loads((source / "config.json").read_text())
    config["vocab_size"] = config_vocab
    (source / "config.json").write_text(json.dumps(config, indent=2))


def test_conversion_holds_one_source_shard_at_a_time(tiny_sources, tmp_path, monkeypatch):
    """Every tensor of a `.bin` shard is released before the next shard is read (with nothing carried over)."""
    monkeypatch.setattr(convert_original_checkpoint, "CARRY_BYTES", 0)
    loaded, alive_at_load = [], []
    real_load = torch.load

    def tracking_load(*args, **kwargs):
        gc.collect()
        alive_at_load.append(sorted(name for name, ref in loaded if ref() is not None))
        shard = real_load(*args, **kwargs)
        loaded.extend((name, weakref.ref(tensor)) for name, tensor in shard.items())
        return shard

    monkeypatch.setattr(sources.torch, "load", tracking_load)
    result = convert_checkpoint(tiny_sources["v15"], tmp_path / "out", ConvertArguments())
    # the projector (a few small tensors) is kept until the end; every other tensor is gone
    held = [[name for name in alive if "mm_projector" not in name] for alive in alive_at_load]
    assert len(held) >= 3 and held == [[]] * len(held)
    files = sorted(path.name for path in result.destination.glob("*.safetensors"))
    assert len(files) >= 3 and (result.destination / "model.safetensors.index.json").is_file()


def test_safetensors_source_is_read_one_tensor_at_a_time(tiny_sources):
    pieces = sources.iter_state_dict_files(tiny_sources["linear"])
    path, name, tensor = next(pieces)
    assert path.name == "model.safetensors" and isinstance(tensor, torch.Tensor)
    rest = list(pieces)
    assert rest[-1][1:] == (None, None)  # the end-of-file mark
    assert len(rest) == len(sources.state_dict_names(tiny_sources["linear"]))


def test_padded_vocabulary_converts_with_every_row_kept(tiny_sources, tmp_path):
    source = shutil.copytree(tiny_sources["v15"], tmp_path / "padded")
    rewrite_vocabulary(source, rows=416, config_vocab=416)  # 400 SentencePiece pieces, 416 rows
    before = sources.load_state_dict_files(source)
    result = convert_checkpoint(source, tmp_path / "out", ConvertArguments(verify=True))
    assert result.verification["greedy_agree"] and result.verification["max_abs_logit_diff"] <= 1e-3
    after = {}
    for path in result.destination.glob("*.safetensors"):
        after.update(load_file(path))
    for ours, theirs in (("model.embed_tokens.weight", "embed_tokens"), ("lm_head.weight", "lm_head")):
        matrix = next(tensor for name, tensor in after.items() if name.endswith(ours))
        assert torch.equal(matrix, before[ours]), theirs  # all 416 rows, as the source has them
    config = json.loads((result.destination / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == 416
    assert result.provenance["new_tokens"] == {"<image>": 400, "<pad>": 401}
    assert "padded vocabulary" in result.provenance["new_token_init"]


def test_vocabulary_mismatches_say_which_side_is_short(tiny_sources, tmp_path):
    fewer_rows = shutil.copytree(tiny_sources["v15"], tmp_path / "fewer")
    rewrite_vocabulary(fewer_rows, rows=300, config_vocab=300)
    message = r"embedding has 300 rows .* but the tokenizer in .* uses 400 ids: ids 300\.\.399 have no embedding"
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(fewer_rows, tmp_path / "out" / "a")

    config_disagrees = shutil.copytree(tiny_sources["v15"], tmp_path / "disagrees")
    rewrite_vocabulary(config_disagrees, rows=416, config_vocab=400)
    with pytest.raises(ConversionError, match="has 416 rows but config.json says vocab_size=400"):
        convert_checkpoint(config_disagrees, tmp_path / "out" / "b")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_verify_that_cannot_fit_says_so_before_loading(tiny_sources, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAVA_HF_AVAILABLE_MEMORY", "10KiB")
    with pytest.raises(ConversionError, match=r"--verify needs .* but 0.0 GiB of memory is available; convert without"):
        convert_checkpoint(tiny_sources["v15"], tmp_path / "out", ConvertArguments(verify=True))
    assert not (tmp_path / "out").exists()


def test_a_full_clip_folder_as_tower_converts_without_a_load_report(tiny_sources, tmp_path, capfd):
    """The released towers are full CLIPModel folders: their text half is left out quietly; a tower folder without
    the vision weights is an error."""
    convert_checkpoint(tiny_sources["v15"], tmp_path / "out")
    assert "UNEXPECTED" not in capfd.readouterr().err

    text_only = tmp_path / "clip-text-only"
    shutil.copytree(tiny_sources["tower"], text_only)
    weights = load_file(text_only / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("vision_model.")}, text_only / "model.safetensors")
    with pytest.raises(ConversionError, match="vision tower .* is incomplete"):
        convert_original_checkpoint.load_vision_tower(text_only)
