"""Padding-free batches without a varlen kernel: SDPA run once per packed sample instead of over the whole row.

A padding-free batch is one row `[1, sum(T_i)]` whose `position_ids` restart at 0 for each sample. Flash-attention
reads the restarts as varlen boundaries and computes sum(T_i^2) scores. SDPA and eager cannot: transformers gives them
a block-diagonal `[1, 1, sum T, sum T]` mask, and every score of the row is computed and then masked, (sum T_i)^2 in
all. With LLaVA's length mix at batch 8 that is 1.7x the B x max(T_i)^2 scores of the padded batch, so packing was
slower than padding on CPU although it removes half the positions (benchmarks/RESULTS_training.md).

`llava_packed_sdpa` is transformers' SDPA attention called per sample (`is_causal`, no mask) on packed rows, and
plain SDPA with the usual mask on everything else (padded batches, generation with a cache), so a model switched to
it stays correct for any input. `use_packed_attention(model)` switches the language model when it uses SDPA;
`build_trainer` does that for `pack_batches=True`.
"""

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PACKED_SDPA = "llava_packed_sdpa"


def packed_sdpa_attention(module, query, key, value, attention_mask, position_ids=None, **kwargs):
    """SDPA per packed sample when this is a packed row, plain SDPA otherwise.

    A packed row is what transformers itself treats as one: batch 1, no cache, `position_ids` restarting at 0, and the
    block-diagonal causal mask transformers builds for it (it does so only when no 2D `attention_mask` was given). A
    batch-1 row whose positions restart but that came with a 2D mask gets that mask's attention, as under SDPA.
    """
    # query [B, H, T, D], key/value [B, H_kv, S, D]; transformers' attention functions return ([B, T, H, D], weights)
    length = query.shape[2]
    packed_row = (
        position_ids is not None
        and attention_mask is not None
        and query.shape[0] == 1
        and length == key.shape[2] == position_ids.shape[-1]  # no cache: the row attends to itself only
    )
    starts = torch.nonzero(position_ids[0] == 0).flatten().tolist() if packed_row else []
    if len(starts) < 2 or starts[0] != 0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    bounds = [*starts, length]
    if not _is_block_causal(attention_mask, bounds):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = [
        sdpa_attention_forward(
            module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], None, **kwargs
        )[0]
        for start, end in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(outputs, dim=1), None


def _is_block_causal(attention_mask: torch.Tensor, bounds: list[int]) -> bool:
    """Whether a [1, 1, T, T] mask (bool: True attends; float: 0 attends) is causal within each sample of `bounds`
    and blocks attention across samples."""
    length = bounds[-1]
    if attention_mask.shape[-2:] != (length, length) or attention_mask.numel() != length * length:
        return False
    allowed = attention_mask.reshape(length, length)
    allowed = allowed if allowed.dtype == torch.bool else allowed == 0
    sizes = torch.tensor(bounds, device=allowed.device).diff()
    sample = torch.repeat_interleave(torch.arange(len(sizes), device=allowed.device), sizes)  # [T] sample index
    expected = (sample[:, None] == sample[None, :]).tril()
    return torch.equal(allowed, expected)


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
# The mask is SDPA's: padded batches and cached generation keep their masks (the packed row's mask goes unused).
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)


def use_packed_attention(model) -> bool:
    """Switch the language model from SDPA to `llava_packed_sdpa`; True if switched (flash/eager are left alone)."""
    if model.config.text_config._attn_implementation != "sdpa":
        return False
    model.set_attn_implementation({"text_config": PACKED_SDPA})
    return True


__all__ = ["PACKED_SDPA", "packed_sdpa_attention", "use_packed_attention"]
