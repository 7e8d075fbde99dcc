# python tests/assets/real_shaped/make_real_shaped.py
"""Tiny stand-ins shaped like the real artefacts a user starts LLaVA from (random weights, fixed seeds):

- `vicuna-7b-v1.5/`: like lmsys/vicuna-7b-v1.5: `LlamaForCausalLM` (fp16 safetensors, config + generation config) and
  a SentencePiece tokenizer as `tokenizer.model` + `tokenizer_config.json` only (slow `LlamaTokenizer`, legacy,
  `pad_token: null`, special tokens as `AddedToken` dicts, no `<image>`, no tokenizer.json, no special_tokens_map).
- `clip-vit-large-patch14-336/`: like openai/clip-vit-large-patch14-336: a full `CLIPModel` (vision + text towers,
  `vision_model.*` / `text_model.*` / projection keys) with the old-format `preprocessor_config.json`
  (`CLIPFeatureExtractor`, integer `size` and `crop_size`, `do_center_crop`), at 32 px / patch 8 (16 patches).
- `mistral-7b-instruct-v0.2/`: like mistralai/Mistral-7B-Instruct-v0.2: `MistralForCausalLM` + a SentencePiece
  tokenizer with tokenizer.json, `[INST]` chat template, no pad, no `<image>`.
- `qwen2-7b-instruct/`: like Qwen/Qwen2-7B-Instruct: `Qwen2ForCausalLM` + a byte-level BPE (vocab.json, merges.txt,
  tokenizer.json) with no BOS and no unk, pad `<|endoftext|>`, eos `<|im_end|>`, ChatML template, no `<image>`.

Vocabularies of a few hundred tokens and widths of 16-32 keep every folder in the tens of KB. Deterministic: the same
files every run (the SentencePiece model is tests/assets/sentencepiece/tokenizer.model, made by
make_original_checkpoints.py).
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
SENTENCEPIECE_MODEL = HERE.parent / "sentencepiece" / "tokenizer.model"
VICUNA, CLIP, MISTRAL, QWEN2 = (
    HERE / "vicuna-7b-v1.5",
    HERE / "clip-vit-large-patch14-336",
    HERE / "mistral-7b-instruct-v0.2",
    HERE / "qwen2-7b-instruct",
)
SENTENCEPIECE_VOCAB = 400
IMAGE_SIZE, PATCH_SIZE = 32, 8
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def added_token(content: str) -> dict:
    """A special token as the slow tokenizers of 2023 wrote it into tokenizer_config.json."""
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def save_weights(model, folder: Path, dtype: torch.dtype) -> None:
    """model.safetensors in `dtype` (a plain save: no tied-weight or sharding machinery)."""
    state = {name: tensor.detach().to(dtype).contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def save_causal_lm(folder: Path, model_class, config, dtype: torch.dtype) -> None:
    """config.json (with the architecture and dtype the Hub repos name) and random weights in `dtype`."""
    model = model_class(config)
    config.architectures = [model_class.__name__]
    config.dtype = str(dtype).removeprefix("torch.")
    config.save_pretrained(folder)
    save_weights(model, folder, dtype)


def fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def make_vicuna(folder: Path = VICUNA, seed: int = 11) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    fresh(folder)
    shutil.copyfile(SENTENCEPIECE_MODEL, folder / "tokenizer.model")
    write_json(
        folder / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": added_token("<s>"),
            "clean_up_tokenization_spaces": False,
            "eos_token": added_token("</s>"),
            "legacy": True,
            "model_max_length": 4096,
            "pad_token": None,
            "padding_side": "right",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": added_token("<unk>"),
        },
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=SENTENCEPIECE_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    save_causal_lm(folder, LlamaForCausalLM, config, torch.float16)
    write_json(
        folder / "generation_config.json",
        {"bos_token_id": 1, "do_sample": True, "eos_token_id": 2, "max_length": 4096, "pad_token_id": 0,
         "temperature": 0.9, "top_p": 0.6},
    )  # fmt: skip
    return folder


def make_clip(folder: Path = CLIP, seed: int = 12) -> Path:
    from transformers import CLIPConfig, CLIPModel

    fresh(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
            projection_dim=16,
        ),
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=64,
            max_position_embeddings=77,
            projection_dim=16,
            bos_token_id=62,  # the last two ids, as CLIP's <|startoftext|> / <|endoftext|> are
            eos_token_id=63,
            pad_token_id=1,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config)
    config.architectures = ["CLIPModel"]
    config.save_pretrained(folder)
    save_weights(model, folder, torch.float32)
    write_json(
        folder / "preprocessor_config.json",
        {
            "crop_size": IMAGE_SIZE,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
            "resample": 3,
            "size": IMAGE_SIZE,
        },
    )
    return folder


MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def make_mistral(folder: Path = MISTRAL, seed: int = 13) -> Path:
    from tokenizers import processors
    from transformers import LlamaTokenizer, MistralConfig, MistralForCausalLM

    fresh(folder)
    shutil.copyfile(SENTENCEPIECE_MODEL, folder / "tokenizer.model")
    # tokenizer.json: the fast tokenizer converted from tokenizer.model, with the BOS post-processor the Hub file has.
    backend = LlamaTokenizer.from_pretrained(str(folder), legacy=True).backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    backend.save(str(folder / "tokenizer.json"))
    write_json(
        folder / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": {
                str(index): {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
                for index, content in enumerate(["<unk>", "<s>", "</s>"])
            },
            "additional_special_tokens": [],
            "bos_token": "<s>",
            "chat_template": MISTRAL_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "</s>",
            "legacy": True,
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": None,
            "sp_model_kwargs": {},
            "spaces_between_special_tokens": False,
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": "<unk>",
            "use_default_system_prompt": False,
        },
    )  # fmt: skip
    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=SENTENCEPIECE_VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    save_causal_lm(folder, MistralForCausalLM, config, torch.bfloat16)
    return folder


QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN2_CORPUS = [
    "You are a helpful assistant. What is in the image? A red square in the top left corner.",
    "How many shapes are there? There are three shapes: a circle, a star and a triangle.",
    "Answer with the option's letter from the given choices directly. (A) red (B) green (C) blue",
    "Context: N/A Question: Which color is the circle? Options: Is there a cat? Yes. No.",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 . , ? ! : ; ' \" ( )",
]


def make_qwen2(folder: Path = QWEN2, seed: int = 14) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    fresh(folder)
    backend = Tokenizer(models.BPE())
    # Qwen2's pre-tokenizer: its split regex, then byte-level without a prefix space.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                    r"|\s+(?!\S)|\s+"
                ),
                behavior="isolated",
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(QWEN2_CORPUS * 10, trainer=trainer)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend.add_special_tokens(specials)
    backend.save(str(folder / "tokenizer.json"))
    vocab = json.loads(backend.to_str())["model"]["vocab"]
    merges = json.loads(backend.to_str())["model"]["merges"]
    write_json(folder / "vocab.json", vocab)
    merge_lines = [" ".join(merge) if isinstance(merge, list) else merge for merge in merges]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merge_lines) + "\n")
    first_special = backend.token_to_id(specials[0])
    write_json(
        folder / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(first_special + offset): {
                    "content": content, "lstrip": False, "normalized": False, "rstrip": False,
                    "single_word": False, "special": True,
                }
                for offset, content in enumerate(specials)
            },
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": None,
            "chat_template": QWEN2_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 32768,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )  # fmt: skip
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=backend.get_vocab_size(),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        bos_token_id=first_special,
        eos_token_id=first_special + 2,
        tie_word_embeddings=False,
    )
    save_causal_lm(folder, Qwen2ForCausalLM, config, torch.bfloat16)
    return folder


if __name__ == "__main__":
    for make in (make_vicuna, make_clip, make_mistral, make_qwen2):
        folder = make()
        size = sum(path.stat().st_size for path in folder.iterdir())
        print(f"wrote {folder.relative_to(HERE.parent.parent.parent)} ({size // 1024} KiB)")
