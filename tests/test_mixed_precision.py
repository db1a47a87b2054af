"""bf16 mixed precision reaches the fast loss: with train.bf16 every linear-layer matmul of a training step
(forward and backward) runs in bf16 while the weights stay float32, as on the stock loss path. (Attention
runs in its own SDPA kernel, not counted here; its inputs come from these matmuls.)

The stock path (train.fast=false: the model's own forward, which accelerate wraps in autocast) is the
reference; the fast loss calls the decoder directly and once ran every matmul in float32 under bf16,
so a bf16 CPU trained at float32's speed. Counted with a dispatch mode: the dtype each aten matmul sees."""

from collections import Counter

import pytest
import torch
from test_fast_accumulation import ROWS
from test_train import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

from finsent.data.dataset import Example

MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.bmm.default, torch.ops.aten.addmm.default}


class MatmulDtypes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:  # addmm(bias, input, weight): the input's dtype, not the bias's
            self.seen[args[1 if func == torch.ops.aten.addmm.default else 0].dtype] += 1
        return func(*args, **(kwargs or {}))


def one_step(model_dir, out, fast: bool, bf16: bool, method: str = "full", loss: str = "answer"):
    """The matmul dtypes of one optimizer step through the real Trainer (trainer.train(), where accelerate
    prepares the model), and the trainer."""
    from finsent.training.train import build_trainer

    cfg = tiny_config(
        model_dir, out, method=method, fast=fast, bf16=bf16, loss=loss, max_steps=1, evaluation_strategy="no"
    )
    cfg = cfg.validate()
    splits = {"train": [Example(i, t, lab) for i, (t, lab) in enumerate(ROWS)], "eval": [], "test": []}
    trainer, _, _ = build_trainer(cfg, splits)
    with MatmulDtypes() as count:
        trainer.train()
    assert trainer.state.global_step == 1
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(0 < x < float("inf") for x in losses), losses
    return count.seen, trainer


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("fast", [True, False])
def test_bf16_training_runs_every_matmul_in_bf16(tiny_model_dir, tmp_path, fast, method):
    seen, trainer = one_step(tiny_model_dir, tmp_path, fast=fast, bf16=True, method=method)
    assert seen and set(seen) == {torch.bfloat16}, seen
    trained = [p for p in trainer.model.parameters() if p.requires_grad]
    # float32 master weights: the optimizer's updates are as exact as float32 training's
    assert trained and all(p.dtype == torch.float32 for p in trained)


def test_bf16_reaches_the_label_loss_too(tiny_model_dir, tmp_path):
    """train.loss=label (the loss over the label words only) is the other fast loss."""
    seen, _ = one_step(tiny_model_dir, tmp_path, fast=True, bf16=True, loss="label")
    assert seen and set(seen) == {torch.bfloat16}, seen


def test_float32_training_stays_float32(tiny_model_dir, tmp_path):
    seen, _ = one_step(tiny_model_dir, tmp_path, fast=True, bf16=False)
    assert seen and set(seen) == {torch.float32}, seen


@pytest.mark.parametrize(
    "flags, units",
    [("fpu avx512f amx_bf16 amx_tile avx512_bf16", "AMX"), ("fpu avx512f avx512_bf16", "AVX512-BF16"),
     ("fpu avx2 avx512f", "")],
)  # fmt: skip
def test_the_cpu_is_named_by_its_bf16_units(monkeypatch, tmp_path, flags, units):
    """The figures name the CPU's bf16 units: an AMD EPYC with AVX512-BF16 was once labelled AMX."""
    from pathlib import Path

    import finsent.modeling.device as device

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real = Path

    monkeypatch.setattr(device, "Path", lambda p: real(info) if p == "/proc/cpuinfo" else real(p))
    assert device.cpu_bf16_units() == units
    assert device.cpu_has_bf16() == bool(units)
