"""Model behaviour on tiny real models: parity with transformers' built-in Llava, generation, batching, training hooks."""

import pytest
import torch
from transformers import LlavaForConditionalGeneration as BuiltinLlava

from llava_hf import LlavaForConditionalGeneration, LlavaHfForConditionalGeneration
from llava_hf.testing import (
    TINY_IMAGE_TOKENS,
    TINY_TEXT,
    TINY_VISION,
    builtin_llava_twin,
    make_image,
    make_tiny_config,
    make_tiny_model,
)


def chat_inputs(processor, questions, images, padding_side="left"):
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}] * len(sample_images) + [{"type": "text", "text": q}]}],
            add_generation_prompt=True,
        )
        for q, sample_images in zip(questions, images)
    ]
    processor.tokenizer.padding_side = padding_side
    flat = [image for sample_images in images for image in sample_images]
    return processor(images=flat or None, text=texts, padding=True, return_tensors="pt")


def test_public_name_is_ours_and_distinct_from_builtin():
    assert LlavaForConditionalGeneration is LlavaHfForConditionalGeneration
    assert LlavaHfForConditionalGeneration.__name__ != BuiltinLlava.__name__


@pytest.mark.parametrize("strategy, layer", [("default", -2), ("full", -1), ("default", [-3, -2])])
def test_logits_match_builtin_llava(processor, strategy, layer):
    config = make_tiny_config(vision_feature_select_strategy=strategy, vision_feature_layer=layer)
    model = make_tiny_model(config)
    builtin = builtin_llava_twin(model)
    processor.image_seq_length = config.image_seq_length
    inputs = chat_inputs(
        processor, ["what is it?", "and this one, twice?"], [[make_image(1)], [make_image(2), make_image(3)]]
    )
    with torch.no_grad():
        ours, theirs = model(**inputs).logits, builtin(**inputs).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_greedy_generation_matches_builtin_single_and_batched(model, processor):
    builtin = builtin_llava_twin(model)
    single = chat_inputs(processor, ["describe"], [[make_image(4)]])
    batch = chat_inputs(
        processor, ["describe", "a much longer question about colours"], [[make_image(4)], [make_image(5)]]
    )
    for inputs in (single, batch):
        ours = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        theirs = builtin.generate(**inputs, max_new_tokens=8, do_sample=False)
        assert torch.equal(ours, theirs)


def test_static_cache_equals_dynamic_cache(model, processor):
    inputs = chat_inputs(processor, ["describe", "what else is there?"], [[make_image(6)], [make_image(7)]])
    dynamic = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    static = model.generate(**inputs, max_new_tokens=8, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic, static)


def test_left_padded_batch_equals_unbatched(model, processor):
    questions = ["hi", "a longer question that needs padding on the other row"]
    images = [[make_image(8)], [make_image(9)]]
    batch = chat_inputs(processor, questions, images)
    batched = model.generate(**batch, max_new_tokens=8, do_sample=False)[:, batch.input_ids.shape[1] :]
    for row, (question, sample_images) in enumerate(zip(questions, images)):
        alone = chat_inputs(processor, [question], [sample_images])
        unbatched = model.generate(**alone, max_new_tokens=8, do_sample=False)[:, alone.input_ids.shape[1] :]
        assert torch.equal(batched[row], unbatched[0])


def test_samples_without_images_mix_with_image_samples(model, processor):
    inputs = chat_inputs(processor, ["text only", "with two images"], [[], [make_image(1), make_image(2)]])
    assert inputs.pixel_values.shape[0] == 2
    text_only = chat_inputs(processor, ["text only"], [[]])
    with torch.no_grad():
        mixed = model(**inputs).logits[0, -1]
        alone = model(**text_only).logits[0, -1]
    torch.testing.assert_close(mixed, alone, atol=1e-5, rtol=0)


def test_image_token_mismatch_names_the_sample(model, processor):
    inputs = chat_inputs(processor, ["a", "b"], [[make_image(1)], [make_image(2)]], padding_side="right")
    input_ids = inputs.input_ids.clone()
    image_positions = (input_ids[1] == model.config.image_token_id).nonzero().flatten()
    input_ids[1, image_positions[:3]] = processor.tokenizer.unk_token_id  # sample 1 keeps 13 of its 16 tokens
    with pytest.raises(ValueError, match=rf"sample 1 has {TINY_IMAGE_TOKENS - 3} image tokens.*2 image\(s\) x 16 = 32"):
        model(input_ids=input_ids, attention_mask=inputs.attention_mask, pixel_values=inputs.pixel_values)
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, pixel_values=inputs.pixel_values[:1])


def test_inputs_embeds_path_matches_input_ids(model, processor):
    inputs = chat_inputs(processor, ["what?"], [[make_image(3)]])
    embeds = model.get_input_embeddings()(inputs.input_ids)
    with torch.no_grad():
        from_ids = model(**inputs).logits
        from_embeds = model(
            inputs_embeds=embeds, attention_mask=inputs.attention_mask, pixel_values=inputs.pixel_values
        ).logits
    torch.testing.assert_close(from_ids, from_embeds)


def test_loss_ignores_minus_100_and_matches_manual_cross_entropy(model, processor):
    inputs = chat_inputs(processor, ["what?"], [[make_image(3)]], padding_side="right")
    labels = inputs.input_ids.clone()
    labels[:, : labels.shape[1] // 2] = -100
    labels[labels == model.config.image_token_id] = -100
    output = model(**inputs, labels=labels)
    shifted_logits, shifted_labels = output.logits[0, :-1], labels[0, 1:]
    expected = torch.nn.functional.cross_entropy(shifted_logits, shifted_labels, ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)


def test_vision_tower_gets_no_gradient_unless_unfrozen(model, processor):
    inputs = chat_inputs(processor, ["what?"], [[make_image(3)]], padding_side="right")
    model.train()
    model(**inputs, labels=inputs.input_ids).loss.backward()
    assert all(p.grad is None for p in model.model.vision_tower.parameters())
    assert model.model.multi_modal_projector.linear_1.weight.grad is not None
    model.zero_grad()
    model.model.vision_tower.requires_grad_(True)
    model(**inputs, labels=inputs.input_ids).loss.backward()
    assert model.model.vision_tower.embeddings.patch_embedding.weight.grad is not None


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_activation_checkpointing_gives_the_same_gradients(processor, use_reentrant):
    inputs = chat_inputs(processor, ["what?"], [[make_image(3)]], padding_side="right")
    gradients = []
    for checkpointing in (False, True):
        model = make_tiny_model().train()
        model.config.text_config.attention_dropout = 0.0
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
            model.enable_input_require_grads()
        model(**inputs, labels=inputs.input_ids).loss.backward()
        gradients.append(model.model.multi_modal_projector.linear_1.weight.grad.clone())
    torch.testing.assert_close(gradients[0], gradients[1])


def test_resize_token_embeddings(model, processor):
    model.resize_token_embeddings(520, pad_to_multiple_of=8)
    assert model.config.text_config.vocab_size == 520
    inputs = chat_inputs(processor, ["what?"], [[make_image(3)]])
    assert model(**inputs).logits.shape[-1] == 520


@pytest.mark.parametrize("projector_type", ["linear", "mlp3x_gelu", "identity"])
def test_projector_variants_train_and_generate(processor, projector_type):
    model = make_tiny_model(make_tiny_config(projector_type=projector_type))
    depth = model.config.projector_depth
    linear_names = sorted(
        name for name, _ in model.model.multi_modal_projector.named_children() if name.startswith("linear")
    )
    assert linear_names == [f"linear_{index}" for index in range(1, depth + 1)]
    inputs = chat_inputs(processor, ["what?"], [[make_image(3)]])
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] == inputs.input_ids.shape[1] + 3


def test_sdpa_is_the_default_and_eager_agrees(processor):
    model = make_tiny_model()
    assert model.config._attn_implementation == "sdpa"
    inputs = chat_inputs(processor, ["what?"], [[make_image(3)]])
    with torch.no_grad():
        sdpa = model(**inputs).logits
        model.set_attn_implementation("eager")
        eager = model(**inputs).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=0)


def test_peft_lora_on_language_model_only(model, processor):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)", modules_to_save=["multi_modal_projector"]
    )
    peft_model = get_peft_model(model, lora)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or "multi_modal_projector" in name for name in trainable)
    assert not any("vision_tower" in name for name in trainable)
    inputs = chat_inputs(processor, ["what?"], [[make_image(3)]], padding_side="right")
    peft_model(**inputs, labels=inputs.input_ids).loss.backward()
    assert peft_model.generate(**chat_inputs(processor, ["q"], [[make_image(1)]]), max_new_tokens=2).shape[0] == 1


def test_other_language_models_and_siglip(processor):
    from transformers import MistralConfig, Qwen2Config, SiglipVisionConfig

    tokenizer = processor.tokenizer
    common = dict(
        vocab_size=len(tokenizer),
        **{**TINY_TEXT, "num_hidden_layers": 1},
        pad_token_id=tokenizer.pad_token_id,
    )
    siglip = SiglipVisionConfig(**{**TINY_VISION, "num_hidden_layers": 2})
    for text_config, vision_config, strategy in [
        (MistralConfig(**common), None, "default"),
        (Qwen2Config(**common), siglip, "full"),
    ]:
        overrides = dict(text_config=text_config, vision_feature_select_strategy=strategy)
        if vision_config is not None:
            overrides["vision_config"] = vision_config
        model = make_tiny_model(make_tiny_config(tokenizer, **overrides))
        processor.image_seq_length = model.config.image_seq_length
        inputs = chat_inputs(processor, ["what?"], [[make_image(3)]])
        assert model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] == inputs.input_ids.shape[1] + 2


def test_device_map_auto_loads(tmp_path, model):
    model.save_pretrained(tmp_path)
    reloaded = LlavaHfForConditionalGeneration.from_pretrained(tmp_path, device_map="auto")
    assert next(reloaded.parameters()).device.type in ("cpu", "cuda")


def test_raw_state_dict_from_a_checkpoint_file_loads_strictly(tmp_path, model):
    """Trainer's resume reads model.safetensors and calls load_state_dict: the on-disk names must map back."""
    from safetensors.torch import load_file

    model.save_pretrained(tmp_path)
    on_disk = load_file(tmp_path / "model.safetensors")
    assert "language_model.model.embed_tokens.weight" in on_disk
    fresh = make_tiny_model(model.config, seed=1)
    fresh.load_state_dict(on_disk, strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
