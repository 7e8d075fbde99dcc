"""Per-sample SDPA for padding-free batches: same loss and gradients as padded batches, runs once per sample, and a
model switched to it stays exact on padded batches and in generation."""

import torch
from trl import SFTConfig

from llava_hf.data import LlavaCollator
from llava_hf.data import packed_attention as packed_attention_module
from llava_hf.data.packed_attention import PACKED_SDPA, use_packed_attention
from llava_hf.data.synthetic import make_shape_rows
from llava_hf.testing import make_image, make_tiny_model
from llava_hf.training import LlavaRunArguments, build_trainer


def loss_and_gradients(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_packed_row_attends_per_sample_with_the_padded_loss_and_gradients(processor, monkeypatch):
    rows = make_shape_rows(5, seed=3, image_size=32, lengths="realistic")
    padded = LlavaCollator(processor)(rows)
    packed = LlavaCollator(processor, padding_free=True)(rows)
    model = make_tiny_model()
    expected_loss, expected_gradients = loss_and_gradients(model, {**padded, "use_cache": False})

    calls = []
    original = packed_attention_module.sdpa_attention_forward

    def counting(module, query, *args, **kwargs):
        calls.append(query.shape[2])
        return original(module, query, *args, **kwargs)

    monkeypatch.setattr(packed_attention_module, "sdpa_attention_forward", counting)
    assert use_packed_attention(model) and model.config.text_config._attn_implementation == PACKED_SDPA
    assert model.config.vision_config._attn_implementation == "sdpa"  # the vision tower is not packed
    loss, gradients = loss_and_gradients(model, packed)

    lengths = padded["attention_mask"].sum(1).tolist()
    layers = model.config.text_config.num_hidden_layers
    assert calls == lengths * layers  # one SDPA call per sample and layer, each over that sample only
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert gradients.keys() == expected_gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected_gradients[name], atol=1e-5, rtol=1e-4, msg=name)


def test_switched_model_is_unchanged_on_padded_batches_and_generation(processor):
    rows = make_shape_rows(4, seed=4, image_size=32, lengths="realistic")
    padded = LlavaCollator(processor)(rows)
    reference, switched = make_tiny_model(), make_tiny_model()
    use_packed_attention(switched)
    processor.tokenizer.padding_side = "left"  # a batched prompt as generation sees it
    left_padded = processor(
        images=[make_image(1), make_image(2)],
        text=["<image>hi", "<image>a longer prompt"],
        padding=True,
        return_tensors="pt",
    )
    assert (left_padded["attention_mask"] == 0).any() and (padded["attention_mask"] == 0).any()
    with torch.no_grad():
        torch.testing.assert_close(switched(**padded).loss, reference(**padded).loss, atol=1e-6, rtol=1e-6)
        generate = dict(max_new_tokens=6, do_sample=False)
        assert torch.equal(switched.generate(**left_padded, **generate), reference.generate(**left_padded, **generate))


def test_build_trainer_switches_sdpa_for_padding_free_runs_only(processor, tmp_path):
    rows = make_shape_rows(8, seed=0, image_size=32)
    for pack, expected in ((True, PACKED_SDPA), (False, "sdpa")):
        model = make_tiny_model()
        args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=1)
        build_trainer(LlavaRunArguments(stage="finetune", pack_batches=pack), args, model, processor, rows)
        assert model.config.text_config._attn_implementation == expected


def test_batch_one_row_with_restarting_positions_and_a_2d_mask_is_not_packed(processor):
    """transformers reads restarting `position_ids` as packing only when no 2D mask is given; with one (here all ones)
    the row is one sequence under SDPA, and the switched model must attend the same way, not per sample."""
    rows = make_shape_rows(2, seed=5, image_size=32, lengths="realistic")
    packed = LlavaCollator(processor, padding_free=True)(rows)
    assert (packed["position_ids"][0] == 0).sum() == 2
    with_mask = {**packed, "attention_mask": torch.ones_like(packed["input_ids"])}
    reference, switched = make_tiny_model(), make_tiny_model()
    use_packed_attention(switched)
    with torch.no_grad():
        expected = reference(**with_mask).logits
        torch.testing.assert_close(switched(**with_mask).logits, expected, atol=1e-6, rtol=1e-6)
        # and without the 2D mask the row is packed in both (transformers' block-diagonal mask vs per-sample SDPA)
        torch.testing.assert_close(switched(**packed).logits, reference(**packed).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(reference(**packed).logits, expected, atol=1e-3)
