# python tests/assets/make_original_checkpoints.py OUT_DIR        (tiny checkpoints in every source layout)
# python tests/assets/make_original_checkpoints.py --sentencepiece  (regenerate tests/assets/sentencepiece/)
"""Tiny checkpoints in every layout `llava-hf convert` reads, built from random weights with fixed seeds.

Layouts (the original `llava/model/builder.py` and `llava/train/train.py`), each a folder under OUT_DIR:
- `clip-tiny`: a CLIP repo like openai/clip-vit-large-patch14-336 (a full `CLIPModel` + preprocessor config): what
  `mm_vision_tower` names. Released LLaVA checkpoints do not contain the tower.
- `vicuna-tiny`: the base LLM (`LlamaForCausalLM`, safetensors, SentencePiece tokenizer) stage 1 and LoRA runs build on.
- `llava-v1.5-tiny`: original release layout, model_type "llava", mlp2x_gelu, fp16, sharded `.bin` with index, the
  rotary `inv_freq` buffers old transformers saved, legacy slow tokenizer with pad = `<unk>`.
- `llava-v1-linear-tiny`: model_type "llava_llama", linear projector, "square" images, one `model.safetensors`.
- `llava-deepspeed-tiny`: a self-trained checkpoint that also holds `model.vision_tower.vision_tower.vision_model.*`
  (different values from `clip-tiny`, so tests can tell which tower was used).
- `llava-stage1-tiny`: `config.json` + `mm_projector.bin` only (stage 1 output).
- `llava-lora-tiny`: a PEFT adapter over `vicuna-tiny` + `non_lora_trainables.bin` (the projector).
- `llava-hf-tiny`: transformers' built-in llava layout (`LlavaForConditionalGeneration` + `LlavaProcessor`).
- `llava-v1.6-vicuna-tiny`, `llava-v1.6-mistral-tiny`, `llava-v1.6-34b-tiny` (`make_original_next`): the LLaVA-1.6
  release layouts (liuhaotian/llava-v1.6-vicuna-7b, -mistral-7b, -34b): `image_aspect_ratio: "anyres"`,
  `image_grid_pinpoints` as (width, height) pairs (the release's five, scaled to 32 px tiles),
  `mm_patch_merge_type: "spatial_unpad"`, `model.image_newline`, the trained tower in the checkpoint
  (`unfreeze_mm_vision_tower: true`), bf16; the Mistral one as `LlavaMistralForCausalLM` / "llava_mistral" with
  Mistral's config fields; the 34b one is Llama-shaped (Yi) and converts with `--chat_template chatml_direct`.

Tiny sizes: CLIP 32 px / patch 8 / hidden 32 / 3 layers (16 patches), Llama hidden 32 / 2 layers / vocab 400.
"""

import io
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

SENTENCEPIECE_DIR = Path(__file__).parent / "sentencepiece"
VISION_HIDDEN = 32
TEXT_HIDDEN = 32
IMAGE_SIZE = 32
PATCH_SIZE = 8
VOCAB_SIZE = 400  # SentencePiece pieces; the converter adds <image> and <pad> after them

SENTENCEPIECE_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed,"
    " and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed,"
    " and polite answers to the human's questions.",
    "USER: What is in the image? ASSISTANT: A red square. USER: What color is the circle? ASSISTANT: It is blue.",
    "How many shapes are there? There are three shapes. Describe the image in detail.",
    "The picture shows a green triangle in the top left corner and a small yellow star.",
    "Answer the question using a single word or phrase. Answer with the option's letter from the given choices.",
    "Is there a cat in the image? Yes, there is. No, there is not. left right top bottom center large small",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9",
]


def make_sentencepiece_model(output_dir: Path = SENTENCEPIECE_DIR) -> Path:
    """Train the tiny Llama-style SentencePiece BPE (byte fallback, unk 0 / bos 1 / eos 2, dummy prefix). Deterministic."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCEPIECE_CORPUS * 20),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        num_threads=1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


def write_slow_llama_tokenizer(folder: Path, legacy: bool | None = True, pad_token: str | None = "<unk>"):
    """The files of a slow `LlamaTokenizer` as LLaVA saved them: tokenizer.model + tokenizer_config + special map."""
    shutil.copyfile(SENTENCEPIECE_DIR / "tokenizer.model", folder / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": pad_token,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "padding_side": "right",
        "sp_model_kwargs": {},
    }
    if legacy is not None:
        config["legacy"] = legacy
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if pad_token:
        special["pad_token"] = pad_token
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def llama_config_fields() -> dict:
    return {
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 4,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "vocab_size": VOCAB_SIZE,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "pretraining_tp": 1,
        "use_cache": True,
    }


def random_llama_state(seed: int, with_inv_freq: bool = False) -> dict[str, torch.Tensor]:
    """`LlamaForCausalLM` keys (model.*, lm_head.weight) with random values, scaled so logits are not all ~0."""
    generator = torch.Generator().manual_seed(seed)
    fields = llama_config_fields()
    hidden, inner, vocab = fields["hidden_size"], fields["intermediate_size"], fields["vocab_size"]

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=generator) * scale

    state = {"model.embed_tokens.weight": rand(vocab, hidden, scale=1.0)}
    for layer in range(fields["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[f"{prefix}.self_attn.{name}.weight"] = rand(hidden, hidden)
        state[f"{prefix}.mlp.gate_proj.weight"] = rand(inner, hidden)
        state[f"{prefix}.mlp.up_proj.weight"] = rand(inner, hidden)
        state[f"{prefix}.mlp.down_proj.weight"] = rand(hidden, inner)
        state[f"{prefix}.input_layernorm.weight"] = 1 + rand(hidden, scale=0.1)
        state[f"{prefix}.post_attention_layernorm.weight"] = 1 + rand(hidden, scale=0.1)
        if with_inv_freq:  # transformers 4.31 saved this buffer; it is derived from rope_theta and head size
            head_dim = hidden // fields["num_attention_heads"]
            state[f"{prefix}.self_attn.rotary_emb.inv_freq"] = 1.0 / (
                10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
            )
    state["model.norm.weight"] = 1 + rand(hidden, scale=0.1)
    state["lm_head.weight"] = rand(vocab, hidden, scale=1.0)
    return state


def random_projector_state(seed: int, projector_type: str, prefix: str = "model.mm_projector") -> dict:
    generator = torch.Generator().manual_seed(seed)
    if projector_type == "linear":
        return {
            f"{prefix}.weight": torch.randn(TEXT_HIDDEN, VISION_HIDDEN, generator=generator) * 0.3,
            f"{prefix}.bias": torch.randn(TEXT_HIDDEN, generator=generator) * 0.1,
        }
    depth = int(projector_type[len("mlp") : -len("x_gelu")])
    state = {}
    for index in range(depth):  # nn.Sequential(Linear, GELU, Linear, ...): Linear layers sit at even indices
        in_features = VISION_HIDDEN if index == 0 else TEXT_HIDDEN
        state[f"{prefix}.{2 * index}.weight"] = torch.randn(TEXT_HIDDEN, in_features, generator=generator) * 0.3
        state[f"{prefix}.{2 * index}.bias"] = torch.randn(TEXT_HIDDEN, generator=generator) * 0.1
    return state


def make_vision_tower(folder: Path, seed: int = 1) -> Path:
    """A CLIP repo like openai/clip-vit-large-patch14-336: full CLIPModel weights and a CLIP preprocessor config."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        vision_config=dict(
            hidden_size=VISION_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        ),
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            vocab_size=64,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        projection_dim=32,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return folder


def make_base_llm(folder: Path, seed: int = 2) -> Path:
    """The base LLM (vicuna-7b-v1.5's layout): LlamaForCausalLM in safetensors + the slow SentencePiece tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32"}
    config.update(llama_config_fields())
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(random_llama_state(seed), folder / "model.safetensors", metadata={"format": "pt"})
    write_slow_llama_tokenizer(folder)
    return folder


def original_config(
    vision_tower: Path | str,
    base_model: Path | str,
    projector_type: str = "mlp2x_gelu",
    model_type: str = "llava",
    image_aspect_ratio: str | None = "pad",
    dtype: str = "float16",
    **overrides,
) -> dict:
    config = {
        "_name_or_path": str(base_model),
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": model_type,
        "torch_dtype": dtype,
        "transformers_version": "4.31.0",
        "mm_vision_tower": str(vision_tower),
        "mm_hidden_size": VISION_HIDDEN,
        "mm_projector_type": projector_type,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat",
        "mm_projector_lr": None,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "use_mm_proj": True,
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
    }
    if image_aspect_ratio is not None:
        config["image_aspect_ratio"] = image_aspect_ratio
    config.update(llama_config_fields())
    config.update(overrides)
    return config


def write_generation_config(folder: Path):
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "max_length": 4096, "temperature": 0.9}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))


def save_sharded_bin(state: dict, folder: Path, num_shards: int):
    """`pytorch_model-0000k-of-0000n.bin` + `pytorch_model.bin.index.json`, like transformers 4.31 sharded saves."""
    names = sorted(state)
    weight_map = {}
    for shard in range(num_shards):
        filename = f"pytorch_model-{shard + 1:05d}-of-{num_shards:05d}.bin"
        shard_names = names[shard::num_shards]
        torch.save({name: state[name].contiguous() for name in shard_names}, folder / filename)
        weight_map.update({name: filename for name in shard_names})
    total = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def make_original(
    folder: Path,
    vision_tower: Path,
    base_model: Path,
    seed: int,
    projector_type: str = "mlp2x_gelu",
    model_type: str = "llava",
    image_aspect_ratio: str | None = "pad",
    dtype: torch.dtype = torch.float16,
    file_format: str = "bin",
    num_shards: int = 3,
    tower_state: dict | None = None,
    legacy: bool | None = True,
) -> Path:
    """A full original LLaVA checkpoint (LlavaLlamaForCausalLM keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype_name = str(dtype).removeprefix("torch.")
    config = original_config(vision_tower, base_model, projector_type, model_type, image_aspect_ratio, dtype_name)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = random_llama_state(seed, with_inv_freq=file_format == "bin")
    state.update(random_projector_state(seed + 100, projector_type))
    if tower_state is not None:
        state.update({f"model.vision_tower.vision_tower.{name}": value for name, value in tower_state.items()})
    state = {name: value.to(dtype) if value.is_floating_point() else value for name, value in state.items()}
    if file_format == "bin":
        save_sharded_bin(state, folder, num_shards)
    else:
        save_file(
            {name: value.contiguous() for name, value in state.items()}, folder / "model.safetensors", {"format": "pt"}
        )
    write_generation_config(folder)
    write_slow_llama_tokenizer(folder, legacy=legacy)
    return folder


def make_original_next(folder: Path, vision_tower: Path, base_model: Path, seed: int, language_model: str = "llama"):
    """A LLaVA-1.6 release checkpoint (see the module docstring); `language_model` "llama" or "mistral"."""
    folder.mkdir(parents=True, exist_ok=True)
    scale = IMAGE_SIZE / 336
    pinpoints = [
        [int(w * scale), int(h * scale)] for w, h in [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    ]
    anyres = {
        "image_grid_pinpoints": pinpoints,
        "mm_patch_merge_type": "spatial_unpad",
        "unfreeze_mm_vision_tower": True,
        "mm_vision_tower_lr": 2e-6,
        "mm_projector_lr": None,
        "mm_resampler_type": None,
        "image_crop_resolution": 224,
        "image_split_resolution": 224,
        "tokenizer_model_max_length": 4096,
    }
    if language_model == "mistral":
        anyres.update(architectures=["LlavaMistralForCausalLM"], sliding_window=None, rope_theta=1000000.0)
    model_type = "llava_mistral" if language_model == "mistral" else "llava"
    config = original_config(vision_tower, base_model, "mlp2x_gelu", model_type, "anyres", "bfloat16", **anyres)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = random_llama_state(seed)
    state.update(random_projector_state(seed + 100, "mlp2x_gelu"))
    generator = torch.Generator().manual_seed(seed + 200)
    state["model.image_newline"] = torch.randn(TEXT_HIDDEN, generator=generator) / TEXT_HIDDEN**0.5
    tower = deepspeed_tower_state(seed + 300)
    state.update({f"model.vision_tower.vision_tower.{name}": value for name, value in tower.items()})
    state = {name: value.to(torch.bfloat16) for name, value in state.items()}
    save_file(
        {name: value.contiguous() for name, value in state.items()}, folder / "model.safetensors", {"format": "pt"}
    )
    write_generation_config(folder)
    write_slow_llama_tokenizer(folder)
    return folder


def build_next(out_dir: Path, vision_tower: Path, base_model: Path) -> dict[str, Path]:
    """The LLaVA-1.6 layouts under `out_dir`."""
    return {
        "llava-v1.6-vicuna-tiny": make_original_next(out_dir / "llava-v1.6-vicuna-tiny", vision_tower, base_model, 60),
        "llava-v1.6-mistral-tiny": make_original_next(
            out_dir / "llava-v1.6-mistral-tiny", vision_tower, base_model, 61, language_model="mistral"
        ),
        "llava-v1.6-34b-tiny": make_original_next(out_dir / "llava-v1.6-34b-tiny", vision_tower, base_model, 62),
    }


def deepspeed_tower_state(seed: int) -> dict[str, torch.Tensor]:
    """CLIPVisionModel weights under the old `vision_model.` prefix, as a DeepSpeed run saved the unfrozen tower."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    tower = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=VISION_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        )
    )
    state = {}
    for name, value in tower.state_dict().items():
        name = name.removeprefix("vision_model.")
        state[f"vision_model.{name}"] = value.clone()
    return state


def make_stage1(folder: Path, vision_tower: Path, base_model: Path, seed: int = 30) -> Path:
    """Stage-1 output: the run's config.json and `mm_projector.bin` (keys model.mm_projector.*), nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    config = original_config(vision_tower, base_model, dtype="float32", tune_mm_mlp_adapter=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(random_projector_state(seed, "mlp2x_gelu"), folder / "mm_projector.bin")
    return folder


def make_lora_run(folder: Path, vision_tower: Path, base_model: Path, seed: int = 40) -> Path:
    """A LoRA stage-2 run: PEFT adapter over the base LLM + `non_lora_trainables.bin` (projector) + config.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    fields = llama_config_fields()
    base = LlamaForCausalLM(LlamaConfig(**fields))
    base.load_state_dict(random_llama_state(2))
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, lora)
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in peft_model.named_parameters():
        if "lora_" in name:  # lora_B starts at zero, which would make the merge a no-op: train it "for real"
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.2
    peft_model.save_pretrained(folder)
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(base_model)
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    projector = random_projector_state(seed + 1, "mlp2x_gelu", prefix="base_model.model.model.mm_projector")
    torch.save(projector, folder / "non_lora_trainables.bin")
    config = original_config(vision_tower, base_model, dtype="float32")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_slow_llama_tokenizer(folder)
    return folder


def make_builtin_llava(folder: Path, seed: int = 50) -> Path:
    """transformers' built-in llava layout (llava-hf/llava-1.5-7b-hf style) with the tiny byte-level tokenizer."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers import LlavaProcessor as BuiltinLlavaProcessor

    from llava_hf import build_image_processor
    from llava_hf.testing import load_tiny_tokenizer

    tokenizer = load_tiny_tokenizer()
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=VISION_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.image_token_id,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor = BuiltinLlavaProcessor(
        image_processor=build_image_processor(IMAGE_SIZE, "pad"),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=(
            Path(__file__).parents[2] / "src/llava_hf/processing/chat_templates/vicuna_v1.jinja"
        ).read_text(),
    )
    processor.save_pretrained(folder)
    return folder


def build_all(out_dir: Path) -> dict[str, Path]:
    """Build every layout under `out_dir`; returns {layout name: folder}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tower = make_vision_tower(out_dir / "clip-tiny")
    base = make_base_llm(out_dir / "vicuna-tiny")
    return {
        "clip-tiny": tower,
        "vicuna-tiny": base,
        "llava-v1.5-tiny": make_original(out_dir / "llava-v1.5-tiny", tower, base, seed=10),
        "llava-v1-linear-tiny": make_original(
            out_dir / "llava-v1-linear-tiny",
            tower,
            base,
            seed=11,
            projector_type="linear",
            model_type="llava_llama",
            image_aspect_ratio=None,  # v1 configs predate the field; the original default is "square"
            dtype=torch.float32,
            file_format="safetensors",
        ),
        "llava-deepspeed-tiny": make_original(
            out_dir / "llava-deepspeed-tiny",
            tower,
            base,
            seed=12,
            dtype=torch.bfloat16,
            num_shards=1,
            tower_state=deepspeed_tower_state(seed=13),
        ),
        "llava-stage1-tiny": make_stage1(out_dir / "llava-stage1-tiny", tower, base),
        "llava-lora-tiny": make_lora_run(out_dir / "llava-lora-tiny", tower, base),
        "llava-hf-tiny": make_builtin_llava(out_dir / "llava-hf-tiny"),
        **build_next(out_dir, tower, base),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--sentencepiece":
        print(make_sentencepiece_model())
    else:
        for name, path in build_all(Path(sys.argv[1])).items():
            print(f"{name}: {path}")
