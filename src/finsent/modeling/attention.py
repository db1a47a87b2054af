"""Attention in float32 inside bf16 training, on CPUs whose bf16 comes from AVX512-BF16 alone.

Why: on such a CPU (an AMD EPYC with AVX512-BF16, no AMX) PyTorch's CPU flash-attention kernel runs
bf16 rows slower than float32 ones, so casting q, k and v up for the attention and the result back down
made the demo's bf16 training step faster: 8.81-8.84 against 6.96-7.89 samples/s (`python -m
bench.step_profile --attention`), `make demo`'s training 404 against 420 s (docs/results.md, "Where the
bf16 step's time goes", which also says what of that gain is not understood). It is also the more exact
arithmetic. Not chosen on AMX CPUs, whose bf16 kernels were not measured against it,
nor on GPUs; weights, matmuls and everything but the attention stay as they were.

transformers looks the attention function up by the model config's `_attn_implementation` at every
forward and does not save that name in config.json, so a saved model loads with its usual attention.
"""

from __future__ import annotations

NAME = "finsent_float32_sdpa"


def float32_sdpa(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention on float32 copies of q, k, v with autocast off, the output in v's
    dtype. Under bf16 autocast RoPE leaves q and k float32 and v bf16, and SDPA's autocast would run all
    three in bf16."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(value.dtype), weights


def wants_float32_attention(device: str, bf16_training: bool, units: str) -> bool:
    """Float32 attention only where it was measured faster: bf16 training on a CPU with AVX512-BF16 and
    no AMX (`units`: modeling.device.cpu_bf16_units())."""
    return device == "cpu" and bf16_training and units == "AVX512-BF16"


def use_float32_attention(model) -> None:
    """Run `model`'s attention through float32_sdpa from now on, with SDPA's own masks: transformers
    builds no mask at all for an attention name it has no mask function for (padding would be seen)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, float32_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
