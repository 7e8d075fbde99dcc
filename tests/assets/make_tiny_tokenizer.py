"""Regenerate src/llava_hf/testing_assets/tiny_tokenizer/: python tests/assets/make_tiny_tokenizer.py

A 512-token byte-level BPE trained on LLaVA-style prompts, with `<image>` (and the chat-template markers) registered
as special tokens the way a real LLaVA tokenizer has them. Deterministic: the same files every run.
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import TokenizersBackend

OUTPUT_DIR = Path(__file__).resolve().parents[2] / "src" / "llava_hf" / "testing_assets" / "tiny_tokenizer"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed,"
    " and polite answers to the user's questions. USER: What is in the image? ASSISTANT: A red square.",
    "A chat between a curious human and an artificial intelligence assistant.",
    "[INST] <<SYS>>\nYou are a helpful language and vision assistant.\n<</SYS>>\n\n [/INST]",
    "system\nAnswer the questions. user\n assistant\n",
    "What color is the circle? It is blue. How many shapes are there? There are three shapes.",
    "Describe the image in detail. The picture shows a green triangle in the top left corner and a small yellow star.",
    "Answer with the option's letter from the given choices directly. A. red B. green C. blue D. yellow",
    "Is there a cat in the image? Yes, there is. No, there is not. left right top bottom center large small",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 . , ? ! : ; ' \" ( ) [ ] { }",
]


def build_tokenizer() -> TokenizersBackend:
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 10, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    return TokenizersBackend(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


if __name__ == "__main__":
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(OUTPUT_DIR)
    print(f"wrote {OUTPUT_DIR} ({len(tokenizer)} tokens)")
