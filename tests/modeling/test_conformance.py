"""The contract transformers' common model tests check, run on our classes (ours, table-driven; none copied).

transformers tests every built-in model with `tests/test_modeling_common.py` (ModelTesterMixin),
`tests/generation/test_utils.py` (GenerationTesterMixin) and `tests/test_processing_common.py`. A drop-in model must
pass the same checks, so each test below takes one of them, over `LlavaHfModel` and `LlavaHfForConditionalGeneration`
and over CLIP/SigLIP x Llama/Mistral/Qwen2 tiny configs: both cache argument names, `return_dict` on and off, output
types and fields, `get_image_features`, hidden states/attentions, save -> load in both key layouts, missing-weight
init, `resize_token_embeddings`, gradient checkpointing, static cache + `torch.compile`, the pipeline, the processor.

Deliberate differences from the built-in Llava are tested as such in `test_deliberate_differences_from_builtin`.
Checks that cannot apply to LLaVA are skipped with the reason.
"""

import copy
import json
import re
import warnings
from unittest.mock import patch

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedModel,
    Qwen2Config,
    SiglipVisionConfig,
    pipeline,
)
from transformers import LlavaConfig as BuiltinLlavaConfig
from transformers import LlavaForConditionalGeneration as BuiltinLlava
from transformers.cache_utils import Cache
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.utils.generic import ModelOutput

from llava_hf import LlavaHfForConditionalGeneration, LlavaHfModel, LlavaHfProcessor
from llava_hf.testing import (
    TINY_VISION,
    builtin_llava_config,
    builtin_llava_twin,
    make_image,
    make_tiny_config,
    make_tiny_processor,
    make_tiny_text_config,
)

# Both towers at 32 px, patch 8, 2 layers of width 32. SigLIP has no CLS token, so it must use "full" feature
# selection (see the deliberate differences); CLIP uses LLaVA's "default" (CLS dropped).
TOWER = {**TINY_VISION, "num_hidden_layers": 2}
VISION_CONFIGS = {
    "clip": (lambda: CLIPVisionConfig(**TOWER, projection_dim=32), "default"),
    "siglip": (lambda: SiglipVisionConfig(**TOWER), "full"),
}
TEXT_CONFIGS = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}
CASES = [(vision, text) for vision in VISION_CONFIGS for text in TEXT_CONFIGS]
# Heavier checks (disk round trips, init, compile) run on two cases that between them cover both towers and two LMs.
FEW_CASES = [("clip", "llama"), ("siglip", "qwen2")]
MODEL_CLASSES = [LlavaHfModel, LlavaHfForConditionalGeneration]
NUM_TEXT_LAYERS = 2
NUM_VISION_LAYERS = 2


def case_config(tokenizer, vision: str, text: str):
    vision_config, strategy = VISION_CONFIGS[vision]
    return make_tiny_config(
        tokenizer,
        vision_config=vision_config(),
        text_config=make_tiny_text_config(tokenizer, TEXT_CONFIGS[text]),
        vision_feature_select_strategy=strategy,
    )


def build(model_class, config, seed: int = 0):
    torch.manual_seed(seed)
    return model_class(copy.deepcopy(config)).eval()


def case_inputs(processor, config, questions=("what is this?", "and this?")):
    """A batch of chat prompts, one image each, built by our processor (left padding, as for generation)."""
    processor.image_seq_length = config.image_seq_length
    processor.tokenizer.padding_side = "left"
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
        )
        for question in questions
    ]
    images = [make_image(seed) for seed in range(len(questions))]
    return processor(images=images, text=texts, padding=True, return_tensors="pt")


def main_output(outputs):
    """What the common tests compare: logits for the head model, the last hidden state for the base model."""
    return outputs.logits if hasattr(outputs, "logits") else outputs.last_hidden_state


def assert_same_structure(expected, actual):
    """`return_dict=False` must give exactly `to_tuple()` of the dataclass output, nested outputs included."""
    if isinstance(expected, ModelOutput):
        expected = expected.to_tuple()
    if isinstance(actual, ModelOutput):
        actual = actual.to_tuple()
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected)
        for expected_item, actual_item in zip(expected, actual):
            assert_same_structure(expected_item, actual_item)
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, atol=0, rtol=0)
    elif isinstance(expected, Cache):
        assert type(actual) is type(expected)
    else:
        assert actual == expected


@pytest.fixture(params=CASES, ids=["-".join(case) for case in CASES])
def case(request, tokenizer):
    return case_config(tokenizer, *request.param)


@pytest.fixture(params=FEW_CASES, ids=["-".join(case) for case in FEW_CASES])
def few_case(request, tokenizer):
    return case_config(tokenizer, *request.param)


# --- forward contract -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_both_cache_argument_names_decode_like_a_full_forward(model_class, case, processor):
    """transformers 5 renamed `past_key_values` to `cache`; the old name must keep working (GenerationTesterMixin's
    backward-compatibility check): a decode step fed the prefill's cache under either name equals a full forward."""
    model = build(model_class, case)
    inputs = case_inputs(processor, case)
    next_tokens = torch.tensor([[11], [12]])
    full_ids = torch.cat([inputs.input_ids, next_tokens], dim=1)
    full_mask = torch.cat([inputs.attention_mask, torch.ones_like(next_tokens)], dim=1)
    with torch.no_grad():
        full = main_output(model(input_ids=full_ids, attention_mask=full_mask, pixel_values=inputs.pixel_values))
        steps = {}
        for name in ("cache", "past_key_values"):
            prefill = model(**inputs, use_cache=True)  # a fresh cache per name: a decode step extends it in place
            assert isinstance(prefill.cache, Cache)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # the old name warns, exactly as in the built-in
                steps[name] = main_output(
                    model(input_ids=next_tokens, attention_mask=full_mask, **{name: prefill.cache})
                )
    torch.testing.assert_close(steps["cache"], full[:, -1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steps["past_key_values"], steps["cache"], atol=0, rtol=0)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_return_dict_false_gives_the_tuple_of_the_dataclass(model_class, case, processor):
    model = build(model_class, case)
    inputs = case_inputs(processor, case)
    extra = {"labels": inputs.input_ids} if model_class is LlavaHfForConditionalGeneration else {}
    with torch.no_grad():
        as_dataclass = model(**inputs, **extra, output_hidden_states=True)
        as_tuple = model(**inputs, **extra, output_hidden_states=True, return_dict=False)
        model.config.return_dict = False  # the config flag is the default when the argument is absent
        from_config = model(**inputs, **extra, output_hidden_states=True)
    assert type(as_tuple) is tuple and type(from_config) is tuple
    assert_same_structure(as_dataclass, as_tuple)
    assert_same_structure(as_dataclass, from_config)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_output_dataclasses_and_fields(model_class, case, processor):
    model = build(model_class, case)
    inputs = case_inputs(processor, case)
    batch, length = inputs.input_ids.shape
    is_head = model_class is LlavaHfForConditionalGeneration
    with torch.no_grad():
        outputs = model(**inputs, **({"labels": inputs.input_ids} if is_head else {}))
        text_only = model(input_ids=inputs.input_ids[:, -3:])
    if is_head:
        assert isinstance(outputs, MultimodalCausalLMOutputWithPast)
        assert outputs.logits.shape == (batch, length, case.text_config.vocab_size)
        assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
        assert text_only.loss is None
    else:
        assert isinstance(outputs, MultimodalBaseModelOutputWithPast)
        assert outputs.last_hidden_state.shape == (batch, length, case.text_config.hidden_size)
    assert isinstance(outputs.cache, Cache) and outputs.cache.get_seq_length() == length
    assert outputs.hidden_states is None and outputs.attentions is None  # only when asked for
    # The image features travel with the outputs (transformers 5: `image_outputs`; 4: `image_hidden_states`).
    assert isinstance(outputs.image_outputs, BaseModelOutputWithPooling)
    assert len(outputs.image_outputs.pooler_output) == inputs.pixel_values.shape[0]
    assert outputs.image_hidden_states is outputs.image_outputs.pooler_output
    assert text_only.image_outputs is None and text_only.image_hidden_states is None


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_output_hidden_states_and_attentions(model_class, few_case, processor):
    model = build(model_class, few_case)
    model.set_attn_implementation("eager")  # attention weights exist only outside the fused SDPA kernel
    inputs = case_inputs(processor, few_case)
    batch, length = inputs.input_ids.shape
    with torch.no_grad():
        by_argument = model(**inputs, output_hidden_states=True, output_attentions=True)
        model.config.output_hidden_states = model.config.output_attentions = True
        by_config = model(**inputs)
    for outputs in (by_argument, by_config):
        assert len(outputs.hidden_states) == NUM_TEXT_LAYERS + 1  # the embeddings + each layer
        assert all(
            hidden.shape == (batch, length, few_case.text_config.hidden_size) for hidden in outputs.hidden_states
        )
        assert len(outputs.attentions) == NUM_TEXT_LAYERS
        heads = few_case.text_config.num_attention_heads
        assert all(attention.shape == (batch, heads, length, length) for attention in outputs.attentions)
        assert len(outputs.image_outputs.hidden_states) == NUM_VISION_LAYERS + 1
        assert len(outputs.image_outputs.attentions) == NUM_VISION_LAYERS
    torch.testing.assert_close(main_output(by_argument), main_output(by_config))


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_precomputed_image_features_equal_pixel_values(model_class, few_case, processor):
    """`mm_encoder_outputs` (what generate() passes after encoding images once) gives the pixel_values result."""
    model = build(model_class, few_case)
    inputs = case_inputs(processor, few_case)
    with torch.no_grad():
        from_pixels = main_output(model(**inputs))
        features = model.get_image_features(inputs.pixel_values)
        precomputed = main_output(
            model(
                input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, mm_encoder_outputs={"image": features}
            )
        )
    torch.testing.assert_close(precomputed, from_pixels, atol=0, rtol=0)
    with pytest.raises(ValueError, match="not both"):
        model(**inputs, mm_encoder_outputs={"image": features})


# --- get_image_features -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("return_dict", [True, False, None])
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_get_image_features_output(model_class, return_dict, few_case, processor):
    model = build(model_class, few_case)
    if return_dict is not None:
        model.config.return_dict = return_dict
    pixel_values = case_inputs(processor, few_case).pixel_values
    with torch.no_grad():
        outputs = model.get_image_features(pixel_values)
    if return_dict is False:
        assert type(outputs) is tuple
        return
    assert isinstance(outputs, BaseModelOutputWithPooling)
    num_images = pixel_values.shape[0]
    tower_tokens = (32 // 8) ** 2 + (1 if few_case.vision_config.model_type == "clip_vision_model" else 0)
    assert outputs.last_hidden_state.shape == (num_images, tower_tokens, few_case.vision_config.hidden_size)
    assert len(outputs.pooler_output) == num_images  # one projected [image_seq_length, D] block per image
    for features in outputs.pooler_output:
        assert features.shape == (few_case.image_seq_length, few_case.text_config.hidden_size)
    assert outputs.hidden_states is None and outputs.attentions is None


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_get_image_features_hidden_states_and_attentions(model_class, few_case, processor):
    model = build(model_class, few_case)
    model.set_attn_implementation("eager")
    pixel_values = case_inputs(processor, few_case).pixel_values
    with torch.no_grad():
        outputs = model.get_image_features(pixel_values, output_hidden_states=True, output_attentions=True)
        model.config.output_hidden_states = True
        by_config = model.get_image_features(pixel_values)
    tokens = outputs.last_hidden_state.shape[1]
    assert len(outputs.hidden_states) == NUM_VISION_LAYERS + 1
    assert all(hidden.shape == outputs.last_hidden_state.shape for hidden in outputs.hidden_states)
    assert len(outputs.attentions) == NUM_VISION_LAYERS
    heads = few_case.vision_config.num_attention_heads
    assert all(attention.shape == (pixel_values.shape[0], heads, tokens, tokens) for attention in outputs.attentions)
    assert len(by_config.hidden_states) == NUM_VISION_LAYERS + 1


@pytest.mark.parametrize("vision", list(VISION_CONFIGS))
def test_get_image_features_equal_the_builtin(vision, tokenizer, processor):
    """Same weights, same `pooler_output` as transformers' built-in Llava (its layout: a list, one tensor per image)."""
    config = case_config(tokenizer, vision, "llama")
    model = build(LlavaHfForConditionalGeneration, config)
    builtin = builtin_llava_twin(model)
    pixel_values = case_inputs(processor, config).pixel_values
    with torch.no_grad():
        ours, theirs = model.get_image_features(pixel_values), builtin.get_image_features(pixel_values)
    assert type(ours.pooler_output) is type(theirs.pooler_output) is list
    for ours_features, their_features in zip(ours.pooler_output, theirs.pooler_output, strict=True):
        torch.testing.assert_close(ours_features, their_features, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-6, rtol=0)


def test_image_sizes_argument_does_not_apply():
    pytest.skip(
        "Not applicable: LLaVA-1.5 pads or resizes every image to one square, so each image yields image_seq_length "
        "features; `image_sizes` (LLaVA-NeXT's any-resolution tiling, accepted by the built-in get_image_features) "
        "has nothing to split."
    )


# --- save / load, key layouts, missing weights --------------------------------------------------------------------------


def saved_keys(folder) -> set[str]:
    return set(load_file(folder / "model.safetensors"))


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_saved_keys_reverse_the_loading_mapping(model_class, few_case, tmp_path):
    """The keys written are the legacy (built-in llava) layout, every renaming we register fires on them, and a model
    loaded from them saves the very same file (transformers' `test_reverse_loading_mapping`)."""
    model = build(model_class, few_case)
    model.save_pretrained(tmp_path / "first")
    on_disk = saved_keys(tmp_path / "first")
    assert on_disk != set(model.state_dict())
    assert {key.split(".")[0] for key in on_disk} == {"language_model", "vision_tower", "multi_modal_projector"}
    assert any(key.startswith("language_model.model.") for key in on_disk)
    for conversion in get_model_conversion_mapping(model, add_legacy=False):
        if not isinstance(conversion, WeightRenaming) or conversion.scope_prefix == "vision_tower":
            continue  # the towers' own prefix rules (CLIPVisionModel's `vision_model.`) only fire on their own files
        for pattern in conversion.source_patterns:
            if "lm_head" in pattern and model_class is LlavaHfModel:
                continue
            assert any(re.search(pattern, key) for key in on_disk), (pattern, sorted(on_disk)[:5])

    reloaded, info = model_class.from_pretrained(tmp_path / "first", output_loading_info=True)
    assert not any(info.values()), info
    reloaded.save_pretrained(tmp_path / "second")
    first, second = (
        load_file(tmp_path / "first" / "model.safetensors"),
        load_file(tmp_path / "second" / "model.safetensors"),
    )
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def write_in_memory_layout(model, folder):
    """A checkpoint holding the in-memory (transformers 5) names, as a raw `state_dict()` dump would."""
    folder.mkdir()
    model.config.save_pretrained(folder)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, folder / "model.safetensors")


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize("layout", ["on_disk", "in_memory"])
def test_save_load_gives_identical_outputs(model_class, layout, few_case, processor, tmp_path):
    model = build(model_class, few_case)
    folder = tmp_path / "checkpoint"
    if layout == "on_disk":
        model.save_pretrained(folder)
    else:
        write_in_memory_layout(model, folder)
    reloaded, info = model_class.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    inputs = case_inputs(processor, few_case)
    with torch.no_grad():
        torch.testing.assert_close(main_output(reloaded.eval()(**inputs)), main_output(model(**inputs)), atol=0, rtol=0)


@pytest.mark.parametrize("layout", ["on_disk", "in_memory"])
def test_base_and_head_checkpoints_load_into_each_other(layout, few_case, processor, tmp_path):
    head = build(LlavaHfForConditionalGeneration, few_case)
    base = build(LlavaHfModel, few_case, seed=1)
    for model, name in ((head, "head"), (base, "base")):
        if layout == "on_disk":
            model.save_pretrained(tmp_path / name)
        else:
            write_in_memory_layout(model, tmp_path / name)
    inputs = case_inputs(processor, few_case)

    base_from_head, info = LlavaHfModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert not info["missing_keys"] and {key.rsplit(".", 1)[0] for key in info["unexpected_keys"]} <= {
        "language_model.lm_head",
        "lm_head",
    }
    head_from_base, info = LlavaHfForConditionalGeneration.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] == {"lm_head.weight"} and not info["unexpected_keys"]
    with torch.no_grad():
        expected_base = head.model(**inputs).last_hidden_state
        torch.testing.assert_close(base_from_head.eval()(**inputs).last_hidden_state, expected_base, atol=0, rtol=0)
        expected_head_body = base(**inputs).last_hidden_state
        got = head_from_base.eval().model(**inputs).last_hidden_state
        torch.testing.assert_close(got, expected_head_body, atol=0, rtol=0)


def seeded_initialisation():
    """Re-seed before every module's init, so the weights depend only on which init function ran, not on order
    (the idea behind transformers' `test_can_init_all_missing_weights`)."""
    original = PreTrainedModel._initialize_weights

    def seeded(self, module, *args, **kwargs):
        torch.default_generator.manual_seed(0)  # the CPU generator only: torch.manual_seed also formats a stack trace
        return original(self, module, *args, **kwargs)

    return patch.object(PreTrainedModel, "_initialize_weights", seeded)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_missing_weights_are_initialised_like_a_fresh_model(model_class, few_case):
    """Weights absent from a checkpoint get each sub-model's own init (CLIP's scaled attention/MLP init, SigLIP's),
    exactly as when the model is built from its config, and as the built-in Llava does."""
    with seeded_initialisation():
        from_config = model_class(copy.deepcopy(few_case))
        from_nothing = model_class.from_pretrained(None, config=copy.deepcopy(few_case), state_dict={})
    expected, got = from_config.state_dict(), from_nothing.state_dict()
    assert expected.keys() == got.keys()
    different = sorted(key for key in expected if not torch.equal(expected[key], got[key]))
    assert not different, different

    with seeded_initialisation():
        builtin = BuiltinLlava.from_pretrained(None, config=builtin_llava_config(few_case), state_dict={})
    prefix = "model." if model_class is LlavaHfForConditionalGeneration else ""
    for name, tensor in builtin.model.vision_tower.state_dict().items():
        assert torch.equal(got[f"{prefix}vision_tower.{name}"], tensor), name


# --- embeddings, training ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_resize_token_embeddings(model_class, few_case, processor):
    model = build(model_class, few_case)
    old_size = few_case.text_config.vocab_size
    old_rows = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(old_size + 5, pad_to_multiple_of=8)
    new_size = model.get_input_embeddings().weight.shape[0]
    assert new_size % 8 == 0 and new_size >= old_size + 5
    assert model.config.text_config.vocab_size == new_size
    torch.testing.assert_close(model.get_input_embeddings().weight[:old_size], old_rows, atol=0, rtol=0)
    if model_class is LlavaHfForConditionalGeneration:
        assert model.get_output_embeddings().weight.shape[0] == new_size
    inputs = case_inputs(processor, few_case)
    with torch.no_grad():
        output = main_output(model(**inputs))
    assert output.shape[-1] == (new_size if model_class is LlavaHfForConditionalGeneration else 32)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_activation_checkpointing_gives_the_same_gradients(model_class, few_case, processor):
    inputs = case_inputs(processor, few_case)
    gradients = []
    for checkpointing in (False, True):
        model = build(model_class, few_case).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert model.is_activation_checkpointing
        outputs = model(**inputs, use_cache=False)
        main_output(outputs).float().pow(2).mean().backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-6, rtol=1e-5, msg=name)


# --- generation -------------------------------------------------------------------------------------------------------


def test_static_cache_equals_dynamic_cache(case, processor):
    model = build(LlavaHfForConditionalGeneration, case)
    inputs = case_inputs(processor, case, questions=("what is this?", "a longer question, padded on the left?"))
    dynamic = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    static = model.generate(**inputs, max_new_tokens=6, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic, static)


def test_generate_returns_scores_hidden_states_and_attentions(few_case, processor):
    """GenerationTesterMixin's dict outputs: per-step scores, LM hidden states and attentions, same tokens."""
    model = build(LlavaHfForConditionalGeneration, few_case)
    model.set_attn_implementation("eager")
    inputs = case_inputs(processor, few_case)
    plain = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    outputs = model.generate(
        **inputs,
        max_new_tokens=3,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        output_hidden_states=True,
        output_attentions=True,
    )
    assert torch.equal(outputs.sequences, plain)
    assert len(outputs.scores) == len(outputs.hidden_states) == len(outputs.attentions) == 3
    for step in range(3):
        assert len(outputs.hidden_states[step]) == NUM_TEXT_LAYERS + 1
        assert len(outputs.attentions[step]) == NUM_TEXT_LAYERS
        assert outputs.scores[step].shape == (2, few_case.text_config.vocab_size)
    prompt_length = inputs.input_ids.shape[1]
    assert outputs.attentions[0][0].shape[-2:] == (prompt_length, prompt_length)  # prefill: the whole prompt
    assert outputs.attentions[1][0].shape[-2:] == (1, prompt_length + 1)  # then one new token against the cache


@pytest.mark.slow
def test_static_cache_with_compiled_forward_equals_eager(few_case, processor):
    """`_can_compile_fullgraph = True` is a promise: the decode step compiles as one graph and changes nothing."""
    from transformers import CompileConfig

    model = build(LlavaHfForConditionalGeneration, few_case)
    inputs = case_inputs(processor, few_case)
    eager = model.generate(**inputs, max_new_tokens=5, do_sample=False, cache_implementation="static")
    compile_config = CompileConfig(fullgraph=True, dynamic=False)
    compile_config._compile_all_devices = True  # transformers only auto-compiles on accelerators; CPU is asked for here
    torch._dynamo.reset()
    compiled = model.generate(
        **inputs, max_new_tokens=5, do_sample=False, cache_implementation="static", compile_config=compile_config
    )
    assert hasattr(model, "_compiled_call"), "generate() did not compile the forward pass"
    assert torch.equal(eager, compiled)


def test_generation_does_not_apply_to_the_base_model():
    pytest.skip(
        "Not applicable: LlavaHfModel has no LM head, so generate()/caches at generation time are checked on "
        "LlavaHfForConditionalGeneration only (as transformers' all_generative_model_classes does)."
    )


@pytest.mark.parametrize("projector_type", ["mlp2x_gelu", "linear"])
def test_pipeline_round_trip(tokenizer, tmp_path, projector_type):
    """Saved model + processor -> `pipeline("image-text-to-text")` -> the same text as generate() on the originals.

    A model transformers' built-in llava expresses is saved in its format and runs as transformers' own classes; one
    it cannot express (a linear projector) keeps the llava_hf type, which `import llava_hf` registers."""
    from transformers import LlavaForConditionalGeneration as BuiltinLlava
    from transformers import LlavaProcessor as BuiltinLlavaProcessor

    config = case_config(tokenizer, "siglip", "qwen2")
    config.projector_type = projector_type
    model = build(LlavaHfForConditionalGeneration, config)
    processor = make_tiny_processor(tokenizer)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    image = make_image(5)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}]
    pipe = pipeline("image-text-to-text", model=str(tmp_path))
    expected = (
        (BuiltinLlava, BuiltinLlavaProcessor)
        if projector_type == "mlp2x_gelu"
        else (
            LlavaHfForConditionalGeneration,
            BuiltinLlavaProcessor,
        )
    )
    assert (type(pipe.model), type(pipe.processor)) == expected
    generated = pipe(text=messages, max_new_tokens=4, do_sample=False, return_full_text=False)[0]["generated_text"]

    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated == processor.decode(output[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)


# --- processor --------------------------------------------------------------------------------------------------------

IMAGE_SIZES = [(100, 100), (300, 100), (500, 30)]  # (height, width)


@pytest.mark.parametrize("image_aspect_ratio", ["pad", "square"])
def test_processor_save_load_and_multimodal_token_counts(image_aspect_ratio, tokenizer, tmp_path):
    """`_get_num_multimodal_tokens` (the hook vLLM's Transformers backend sizes image placeholders with) predicts the
    tokens the processor really emits, before and after save -> `AutoProcessor.from_pretrained`."""
    from transformers import LlavaProcessor as BuiltinLlavaProcessor

    processor = make_tiny_processor(tokenizer, image_aspect_ratio=image_aspect_ratio)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "LlavaProcessor"  # transformers' own: loads without llava_hf
    builtin = AutoProcessor.from_pretrained(tmp_path)
    assert type(builtin) is BuiltinLlavaProcessor and builtin.chat_template == processor.chat_template
    loaded = LlavaHfProcessor.from_pretrained(tmp_path)
    assert loaded.image_seq_length == processor.image_seq_length and loaded.chat_template == processor.chat_template

    images = [make_image(index, size=(width, height)) for index, (height, width) in enumerate(IMAGE_SIZES)]
    text = [f"{processor.image_token}\nwhat is in picture {index}?" for index in range(len(images))]
    for candidate in (processor, loaded, builtin):
        counts = candidate._get_num_multimodal_tokens(image_sizes=IMAGE_SIZES)
        assert "num_image_tokens" in counts and "num_image_patches" in counts
        assert counts["num_image_patches"] == [1, 1, 1]
        batch = candidate(images=[[image] for image in images], text=text, padding=True, return_tensors="pt")
        emitted = (batch.input_ids == candidate.image_token_id).sum(-1).tolist()
        assert counts["num_image_tokens"] == emitted
        assert batch.pixel_values.shape[0] == sum(counts["num_image_patches"])
    assert "num_image_tokens" not in processor._get_num_multimodal_tokens()
    before = processor(images=images[0], text=text[0], return_tensors="pt")
    after = loaded(images=images[0], text=text[0], return_tensors="pt")
    from_builtin = builtin(images=images[0], text=text[0], return_tensors="pt")
    for reloaded in (after, from_builtin):
        assert torch.equal(before.input_ids, reloaded.input_ids)
        torch.testing.assert_close(before.pixel_values, reloaded.pixel_values, atol=0, rtol=0)


# --- deliberate differences -------------------------------------------------------------------------------------------


def test_deliberate_differences_from_builtin(tokenizer, processor):
    """Where we differ from transformers' built-in Llava on purpose (so the common tests' expectations differ too):

    1. `vision_feature_select_strategy="default"` drops the first token as CLS. A SigLIP tower has no CLS, so the
       built-in silently drops a real image patch; our config refuses and names the fix ("full").
    2. The image-token/feature count error: the built-in reports totals ("tokens: X, features: Y"); ours names the
       sample whose count is wrong and how to build inputs that match.
    """
    siglip, _ = VISION_CONFIGS["siglip"]
    with pytest.raises(ValueError, match="has none; use vision_feature_select_strategy='full'"):
        make_tiny_config(tokenizer, vision_config=siglip(), vision_feature_select_strategy="default")
    BuiltinLlavaConfig(vision_config=siglip().to_dict(), vision_feature_select_strategy="default")  # accepted there

    config = case_config(tokenizer, "clip", "llama")
    model = build(LlavaHfForConditionalGeneration, config)
    builtin = builtin_llava_twin(model)
    inputs = case_inputs(processor, config)
    input_ids = inputs.input_ids.clone()
    input_ids[1, (input_ids[1] == config.image_token_id).nonzero()[0]] = tokenizer.unk_token_id
    broken = dict(input_ids=input_ids, attention_mask=inputs.attention_mask, pixel_values=inputs.pixel_values)
    with pytest.raises(ValueError, match="sample 1 has 15 image tokens"):
        model(**broken)
    with pytest.raises(ValueError, match="tokens: 31, features:"):
        builtin(**broken)


def test_checkpoint_exported_to_the_builtin_layout_answers_the_token_hook(tokenizer, tmp_path):
    """`llava-hf export --to transformers` writes the built-in LlavaProcessor (what vLLM loads for `llava`): its own
    `_get_num_multimodal_tokens` must agree with ours and with the tokens it really emits."""
    from llava_hf.conversion.convert_transformers_checkpoint import export_to_transformers

    config = case_config(tokenizer, "clip", "llama")
    processor = make_tiny_processor(tokenizer)
    build(LlavaHfForConditionalGeneration, config).save_pretrained(tmp_path / "ours")
    processor.save_pretrained(tmp_path / "ours")
    export_to_transformers(tmp_path / "ours", tmp_path / "exported")
    exported = AutoProcessor.from_pretrained(tmp_path / "exported")
    assert type(exported).__name__ == "LlavaProcessor" and type(exported) is not LlavaHfProcessor

    counts = exported._get_num_multimodal_tokens(image_sizes=IMAGE_SIZES)
    assert (
        counts["num_image_tokens"] == processor._get_num_multimodal_tokens(image_sizes=IMAGE_SIZES)["num_image_tokens"]
    )
    images = [make_image(index, size=(width, height)) for index, (height, width) in enumerate(IMAGE_SIZES)]
    text = [f"{exported.image_token}\nwhat is in picture {index}?" for index in range(len(images))]
    batch = exported(images=images, text=text, padding=True, return_tensors="pt")
    assert (batch.input_ids == config.image_token_id).sum(-1).tolist() == counts["num_image_tokens"]
