"""`llava-hf convert --verify` for original-format sources: the original computation (reference.py) against the
converted checkpoint on one image + prompt, in float32."""

from pathlib import Path

import torch

from .common import VERIFY_QUESTION, ConversionError, verification_image


def check_verification_memory(converted: Path):
    """The verification holds the converted model and the reference computation side by side in float32; raise
    before loading either when that cannot fit, instead of being killed halfway."""
    from llava_hf.utils.memory import available_memory, gib, read_weights_size

    weights = read_weights_size(str(converted))
    available = available_memory("cpu")
    if weights is None or available is None:
        return
    needed = 2 * weights.bytes_at("float32")
    if needed > available:
        raise ConversionError(
            f"--verify needs {gib(needed)} (the converted model and the original computation, both in float32) but "
            f"{gib(available)} of memory is available; convert without --verify on this machine (nothing was "
            "written), and verify on one with more memory."
        )


@torch.no_grad()
def verify_conversion(converted: Path, reference: dict, tolerance: float) -> dict:
    """Original computation (reference.py) vs the converted checkpoint on one image + prompt, in float32.

    Returns {"max_abs_logit_diff", "greedy_agree", "token_ids_identical", "positions", "tolerance"}; raises
    ConversionError when the token ids differ or the logits differ by more than `tolerance`.
    """
    from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from llava_hf.modeling import LlavaHfForConditionalGeneration, LlavaHfNextForConditionalGeneration
    from llava_hf.processing import LlavaHfNextProcessor, LlavaHfProcessor

    from .reference import (
        IMAGE_PLACEHOLDER_ID,
        OriginalSentencePieceTokenizer,
        original_anyres_merge,
        original_anyres_pixel_values,
        original_forward,
        original_pixel_values,
        original_tokenizer_image_token,
    )

    check_verification_memory(converted)
    settings = reference["settings"]
    anyres = settings["image_aspect_ratio"] == "anyres"
    processor = (LlavaHfNextProcessor if anyres else LlavaHfProcessor).from_pretrained(converted)
    model_class = LlavaHfNextForConditionalGeneration if anyres else LlavaHfForConditionalGeneration
    model = model_class.from_pretrained(converted, dtype=torch.float32).eval()
    image = verification_image()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": VERIFY_QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    ours = processor(images=image, text=prompt, return_tensors="pt")

    image_size = reference["vision_config"].image_size
    if anyres:  # the original's tiles and their merge
        pinpoints = settings["image_grid_pinpoints"]
        pixel_values = original_anyres_pixel_values(
            image, image_size, pinpoints, reference["image_mean"], reference["image_std"]
        )
        newline = reference["image_newline"]

        def merge(features):
            merge_type = settings["mm_patch_merge_type"]
            return original_anyres_merge(features, image.size, image_size, pinpoints, merge_type, newline)

    else:
        pixel_values = original_pixel_values(
            image, image_size, reference["image_mean"], reference["image_std"], settings["image_aspect_ratio"]
        )
        merge = None
    if reference["sentencepiece_model"].is_file():
        tokenizer = OriginalSentencePieceTokenizer(reference["sentencepiece_model"], legacy=reference["source_legacy"])
        bos = processor.tokenizer.bos_token
        original_ids = original_tokenizer_image_token(tokenizer, prompt.removeprefix(bos))
    else:  # no SentencePiece model to tokenize with independently: compare the computation on our ids
        ids = ours.input_ids[0].tolist()
        first, last = ids.index(model.config.image_token_id), len(ids) - ids[::-1].index(model.config.image_token_id)
        original_ids = ids[:first] + [IMAGE_PLACEHOLDER_ID] + ids[last:]

    llm_state, projector_state, tower_state = reference["read_weights"]()
    projector_state.pop("model.image_newline", None)  # LLaVA-1.6's newline: reference["image_newline"] below
    text_class = (
        (MistralConfig, MistralForCausalLM) if reference["text_model"] == "mistral" else (LlamaConfig, LlamaForCausalLM)
    )
    language_model = text_class[1](text_class[0](**reference["text_config_fields"])).eval()
    language_model.load_state_dict({k: v.float() for k, v in llm_state.items()})
    del llm_state
    tower = CLIPVisionModel(reference["vision_config"]).eval()
    tower.load_state_dict(tower_state)
    reference_logits = original_forward(
        language_model,
        tower,
        {k: v.float() for k, v in projector_state.items()},
        settings["projector_type"],
        settings["vision_feature_layer"],
        "patch" if settings["vision_feature_select_strategy"] == "default" else "cls_patch",
        original_ids,
        pixel_values,
        merge,
    )[0]
    # the image's token count is the original's: the positions its features took in the sequence
    image_tokens = reference_logits.shape[0] - (len(original_ids) - 1)
    expanded = []
    for token in original_ids:
        expanded.extend([model.config.image_token_id] * image_tokens if token == IMAGE_PLACEHOLDER_ID else [token])
    token_ids_identical = expanded == ours.input_ids[0].tolist()
    result = {"token_ids_identical": token_ids_identical, "tolerance": tolerance}
    if not token_ids_identical:
        raise ConversionError(
            f"verification failed: the converted processor's token ids differ from the original tokenization "
            f"({len(expanded)} vs {ours.input_ids.shape[1]} ids); the converted model would see other inputs."
        )
    logits = model(**ours).logits[0]
    old_vocab = reference_logits.shape[-1]
    result["max_abs_logit_diff"] = (logits[:, :old_vocab] - reference_logits).abs().max().item()
    result["pixel_values_max_abs_diff"] = (
        (ours.pixel_values.reshape(pixel_values.shape) - pixel_values).abs().max().item()
    )
    result["greedy_agree"] = bool(torch.equal(logits.argmax(-1), reference_logits.argmax(-1)))
    result["positions"] = logits.shape[0]
    if result["max_abs_logit_diff"] > tolerance or not result["greedy_agree"]:
        raise ConversionError(
            f"verification failed: max |Δlogit| = {result['max_abs_logit_diff']:.3g} (tolerance {tolerance}), greedy "
            f"tokens agree: {result['greedy_agree']}."
        )
    return result
