"""Float32 attention inside bf16 training (modeling/attention.py): the same attention as PyTorch's own
SDPA on float32 copies, chosen only on a CPU with AVX512-BF16 and no AMX, and never saved with a model."""

import json
from types import SimpleNamespace

import pytest
import torch
from test_mixed_precision import one_step
from torch.utils._python_dispatch import TorchDispatchMode

from finsent.modeling.attention import NAME, float32_sdpa


def reference(q, k, v, mask, groups: int):
    """Grouped-query attention written out with torch's SDPA on float32 copies (heads repeated by hand),
    as (batch, length, heads, dim): not transformers' code path."""
    k = k.float().repeat_interleave(groups, dim=1)
    v = v.float().repeat_interleave(groups, dim=1)
    return torch.nn.functional.scaled_dot_product_attention(q.float(), k, v, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("autocast", [False, True])
def test_float32_attention_is_sdpa_on_float32_copies(autocast):
    torch.manual_seed(0)
    # as under bf16 autocast: RoPE leaves q and k float32, v comes from a bf16 matmul
    q = torch.randn(3, 4, 7, 8)
    k = torch.randn(3, 2, 11, 8)
    v = torch.randn(3, 2, 11, 8, dtype=torch.bfloat16)
    mask = torch.ones(3, 1, 7, 11, dtype=torch.bool).tril(4)  # a shared prefix of 4, then causal
    module = SimpleNamespace(num_key_value_groups=2, is_causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, _ = float32_sdpa(module, q, k, v, mask)
    assert out.dtype == torch.bfloat16
    exact = reference(q, k, v, mask, 2)
    torch.testing.assert_close(out, exact.to(torch.bfloat16), rtol=0, atol=1e-2)
    # and closer to it than SDPA's own bf16 kernel, which autocast would have picked
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = torch.nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), attn_mask=mask
        ).transpose(1, 2)
    assert bf16.dtype == torch.bfloat16
    assert (out.float() - exact).abs().max() <= (bf16.float() - exact).abs().max()


class AttentionDtypes(TorchDispatchMode):
    """The dtypes of (q, k, v) every SDPA kernel sees."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in func.__name__ and "backward" not in func.__name__:
            self.seen.add(tuple(a.dtype for a in args[:3]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("units, float32", [("AVX512-BF16", True), ("AMX", False), ("", False)])
def test_bf16_training_takes_float32_attention_only_on_avx512_bf16(
    monkeypatch, tiny_model_dir, tmp_path, units, float32
):
    import finsent.modeling.device as device

    monkeypatch.setattr(device, "cpu_bf16_units", lambda: units)
    with AttentionDtypes() as attention:
        _, trainer = one_step(tiny_model_dir, tmp_path, fast=True, bf16=True)
    assert (trainer.model.config._attn_implementation == NAME) == float32
    want = torch.float32 if float32 else torch.bfloat16
    assert attention.seen == {(want, want, want)}, attention.seen
    # the choice is this process's: a saved model loads with transformers' own attention anywhere
    trainer.save_model(str(tmp_path / "saved"))
    assert NAME not in (tmp_path / "saved" / "config.json").read_text()
    json.loads((tmp_path / "saved" / "config.json").read_text())


def test_the_loss_is_plain_sdpa_s_within_bf16_rounding(monkeypatch, tiny_model_dir, tmp_path):
    """The same first-step loss as with transformers' SDPA (masks and GQA included), to bf16's rounding."""
    import finsent.modeling.device as device

    losses = {}
    for units in ("AVX512-BF16", "AMX"):
        monkeypatch.setattr(device, "cpu_bf16_units", lambda units=units: units)
        _, trainer = one_step(tiny_model_dir, tmp_path / units, fast=True, bf16=True)
        losses[units] = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    assert losses["AVX512-BF16"] == pytest.approx(losses["AMX"], rel=2e-2)


def test_float32_training_keeps_its_attention(monkeypatch, tiny_model_dir, tmp_path):
    import finsent.modeling.device as device

    monkeypatch.setattr(device, "cpu_bf16_units", lambda: "AVX512-BF16")
    _, trainer = one_step(tiny_model_dir, tmp_path, fast=True, bf16=False)
    assert trainer.model.config._attn_implementation != NAME


def test_a_padded_batch_gets_sdpa_s_masks(tiny):
    """A left-padded batch through the model's own forward: float32 attention gives float32 SDPA's logits
    on the real tokens, so the padding mask reached it (transformers drops masks for unknown names)."""
    from finsent.modeling.attention import use_float32_attention

    model, _ = tiny
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        use_float32_attention(model)
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[:, 2:], want[:, 2:], rtol=1e-5, atol=1e-5)
