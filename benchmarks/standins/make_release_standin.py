# flock /work/locks/bigmem python benchmarks/standins/make_release_standin.py --size 7b --out /work/standins
"""LLaVA-1.5-7B / -13B-shaped checkpoints in the original release layout, random fp16 weights, built shard by shard.

The layout of `liuhaotian/llava-v1.5-7b` / `-13b` (haotian-liu/LLaVA, saved by transformers 4.31 with 10 GB shards):
`config.json` (model_type "llava", `LlavaLlamaForCausalLM`, mlp2x_gelu, `mm_vision_tower` naming the CLIP folder),
`generation_config.json`, `pytorch_model-0000k-of-0000n.bin` + `pytorch_model.bin.index.json` (7B: 2 shards,
13B: 3), the rotary `inv_freq` buffers, no vision tower weights (they come from `mm_vision_tower`), and the slow
SentencePiece tokenizer files (32000 pieces, pad = `<unk>`). Beside it, `clip-vit-large-patch14-336`: a full
`CLIPModel` folder shaped like openai/clip-vit-large-patch14-336 (ViT-L/14 at 336 px, fp32, + preprocessor config).

Memory: one shard (at most 10 GB) is in RAM at a time, so the 13B build peaks near 10 GB. Values are drawn per tensor
from a generator seeded with the tensor's index, so a rebuild gives the same bytes. The tiny layouts of the test suite
come from tests/assets/make_original_checkpoints.py, whose config and tokenizer helpers this script reuses.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "assets"))
import make_original_checkpoints as tiny  # noqa: E402

# Vicuna-v1.5 / Llama-2 shapes (the LLM of LLaVA-1.5), vocabulary 32000.
LLAMA_SHAPES = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32},
    "13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40},
}
VOCAB_SIZE = 32000
CLIP_VISION = {  # openai/clip-vit-large-patch14-336
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
}
CLIP_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "projection_dim": 768,
}
SHARD_BYTES = 10 * 10**9  # transformers 4.31's max_shard_size="10GB", which the release used
WEIGHT_STD = 0.02  # Llama's initializer_range: activations stay in fp16 range through 40 layers


def llama_fields(size: str) -> dict:
    fields = tiny.llama_config_fields()
    shape = LLAMA_SHAPES[size]
    fields.update(shape, num_key_value_heads=shape["num_attention_heads"], vocab_size=VOCAB_SIZE)
    fields["max_position_embeddings"] = 4096
    return fields


def release_tensor_shapes(size: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) in the order `LlavaLlamaForCausalLM.state_dict()` lists them (which decides the shards)."""
    fields = llama_fields(size)
    hidden, inner = fields["hidden_size"], fields["intermediate_size"]
    head_dim = hidden // fields["num_attention_heads"]
    shapes = [("model.embed_tokens.weight", (VOCAB_SIZE, hidden))]
    for layer in range(fields["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        shapes += [(f"{prefix}.self_attn.{name}.weight", (hidden, hidden)) for name in ("q_proj", "k_proj", "v_proj")]
        shapes.append((f"{prefix}.self_attn.o_proj.weight", (hidden, hidden)))
        shapes.append((f"{prefix}.self_attn.rotary_emb.inv_freq", (head_dim // 2,)))
        shapes += [(f"{prefix}.mlp.{name}.weight", (inner, hidden)) for name in ("gate_proj", "up_proj")]
        shapes.append((f"{prefix}.mlp.down_proj.weight", (hidden, inner)))
        shapes += [(f"{prefix}.{name}.weight", (hidden,)) for name in ("input_layernorm", "post_attention_layernorm")]
    shapes.append(("model.norm.weight", (hidden,)))
    vision = CLIP_VISION["hidden_size"]
    shapes += [
        ("model.mm_projector.0.weight", (hidden, vision)),
        ("model.mm_projector.0.bias", (hidden,)),
        ("model.mm_projector.2.weight", (hidden, hidden)),
        ("model.mm_projector.2.bias", (hidden,)),
    ]
    shapes.append(("lm_head.weight", (VOCAB_SIZE, hidden)))
    return shapes


def random_tensor(name: str, shape: tuple[int, ...], index: int, head_dim: int) -> torch.Tensor:
    if name.endswith("inv_freq"):  # a float32 buffer derived from rope_theta, as transformers 4.31 saved it
        return 1.0 / (10000.0 ** (torch.arange(0, 2 * shape[0], 2).float() / head_dim))
    generator = torch.Generator().manual_seed(1000 + index)
    tensor = torch.empty(shape, dtype=torch.float16)
    if name.endswith("norm.weight"):
        return tensor.normal_(1.0, 0.05, generator=generator)
    return tensor.normal_(0.0, 1.0 if name == "model.embed_tokens.weight" else WEIGHT_STD, generator=generator)


def write_release_weights(folder: Path, size: str) -> int:
    """The sharded `.bin` files + index, one shard in memory at a time; returns the number of shards."""
    shapes = release_tensor_shapes(size)
    head_dim = llama_fields(size)["hidden_size"] // llama_fields(size)["num_attention_heads"]
    sizes = [(2 if not name.endswith("inv_freq") else 4) * torch.Size(shape).numel() for name, shape in shapes]
    groups, current, current_bytes = [], [], 0
    for index, nbytes in enumerate(sizes):  # greedy in state_dict order, like transformers 4.31's shard_checkpoint
        if current and current_bytes + nbytes > SHARD_BYTES:
            groups.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += nbytes
    groups.append(current)
    weight_map = {}
    for number, group in enumerate(groups, start=1):
        filename = f"pytorch_model-{number:05d}-of-{len(groups):05d}.bin"
        shard = {shapes[i][0]: random_tensor(*shapes[i], i, head_dim) for i in group}
        torch.save(shard, folder / filename)
        del shard
        weight_map.update({shapes[i][0]: filename for i in group})
        print(f"  {filename}: {len(group)} tensors, {sum(sizes[i] for i in group) / 1e9:.2f} GB", flush=True)
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    return len(groups)


def write_llama_sentencepiece(path: Path, vocab_size: int = VOCAB_SIZE):
    """A Llama-layout SentencePiece BPE model with `vocab_size` pieces: unk/bos/eos, the 256 byte pieces, then merged
    pieces. The suite's tiny model supplies the first pieces; the rest are concatenations of two existing pieces (so
    every one is reachable by BPE merges), with falling scores, until the vocabulary has Llama's 32000 entries."""
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((tiny.SENTENCEPIECE_DIR / "tokenizer.model").read_bytes())
    normal = [p.piece for p in model.pieces if p.type == sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL]
    known = {p.piece for p in model.pieces}
    score = min(p.score for p in model.pieces) - 1.0
    lefts, rights = list(normal), [piece for piece in normal if "▁" not in piece]
    position = 0
    while len(model.pieces) < vocab_size:  # left grows with the pieces just added: pairs, then triples, ...
        left = lefts[position]
        position += 1
        for right in rights:
            piece = left + right
            if piece in known:
                continue
            new = model.pieces.add()
            new.piece, new.score, new.type = piece, score, sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL
            known.add(piece)
            lefts.append(piece)
            score -= 1e-3
            if len(model.pieces) == vocab_size:
                break
    if len(model.pieces) != vocab_size:
        raise RuntimeError(f"could only build {len(model.pieces)} pieces")
    model.trainer_spec.vocab_size = vocab_size
    path.write_bytes(model.SerializeToString())


def make_clip_folder(folder: Path, seed: int = 1) -> Path:
    """openai/clip-vit-large-patch14-336's shape: a full CLIPModel (fp32 safetensors) + its preprocessor config."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    if (folder / "model.safetensors").is_file():
        return folder
    torch.manual_seed(seed)
    vision = {k: v for k, v in CLIP_VISION.items() if k != "projection_dim"}
    text = {k: v for k, v in CLIP_TEXT.items() if k != "projection_dim"}
    config = CLIPConfig(
        vision_config=dict(vision, hidden_act="quick_gelu"),
        text_config=dict(text, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
        projection_dim=768,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_convert_rgb=True
    ).save_pretrained(folder)
    return folder


def make_release(out_dir: Path, size: str) -> Path:
    out_dir = Path(out_dir)
    clip = make_clip_folder(out_dir / "clip-vit-large-patch14-336")
    folder = out_dir / f"llava-1.5-{size}-release"
    folder.mkdir(parents=True, exist_ok=True)
    fields = llama_fields(size)
    config = tiny.original_config(
        clip, f"lmsys/vicuna-{size}-v1.5", mm_hidden_size=CLIP_VISION["hidden_size"], **fields
    )
    config["architectures"] = ["LlavaLlamaForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tiny.write_generation_config(folder)
    tiny.write_slow_llama_tokenizer(folder)
    write_llama_sentencepiece(folder / "tokenizer.model")
    write_release_weights(folder, size)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(LLAMA_SHAPES), required=True)
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/llava-1.5-SIZE-release and the CLIP folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    folder = make_release(args.out, args.size)
    print(f"{folder} built in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
