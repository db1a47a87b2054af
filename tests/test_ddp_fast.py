"""train.fast on many processes: 2 CPU processes (gloo) train the adapter that 1 process trains with the
same global batch, under DDP (through `finsent train`) and under FSDP1 (through torch's wrapper); the fast
loss equals the model's own loss; FSDP2 is refused in one line (see parallel.check_fast_loss)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_ddp import train_args, write_data

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")


def _set(args: list[str], key: str, value: str) -> list[str]:
    args = list(args)
    if key in args:
        args[args.index(key) + 1] = value
    else:
        args += [key, value]
    return args


def test_fast_ddp_two_processes_train_the_one_process_adapter(tiny_model_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m finsent train` with train.fast: 2 x 2 rows per step against
    1 x 4, file order: the same adapter (the loss runs inside DDP's forward, so gradients are averaged),
    with an evaluation each epoch (the fast evaluator on the bare model beside DDP)."""
    data = tmp_path / "d.csv"
    write_data(data)

    def args(out, per_device):
        a = train_args(tiny_model_dir, data, out)
        a = _set(a, "--train.fast", "true")
        a = _set(a, "--train.per_device_train_batch_size", str(per_device))
        return _set(a, "--train.evaluation_strategy", "epoch")

    two = subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "finsent.cli",
            *args(tmp_path / "ddp", 2),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "train.fast is single-process" not in two.stderr  # the fast path was not switched off
    one = subprocess.run(
        [sys.executable, "-m", "finsent.cli", *args(tmp_path / "one", 4)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    import torch
    from safetensors.torch import load_file

    a = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    moved = max(float(t.abs().max()) for k, t in b.items() if "lora_B" in k)  # lora_B starts at zero
    assert moved > 1e-3, "the adapter did not train: the comparison would prove nothing"
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    logs = [json.loads((tmp_path / d / "train_log.json").read_text()) for d in ("ddp", "one")]
    assert logs[0]["global_step"] == logs[1]["global_step"]
    evals = [[h["eval_accuracy"] for h in log["log_history"] if "eval_accuracy" in h] for log in logs]
    assert evals[0] == evals[1] and len(evals[0]) == 2  # one evaluation per epoch, the same accuracy


def launch_worker(model_dir, out: Path, kinds: list[str] | None = None) -> dict:
    """tests/fast_parallel_worker.py under torchrun (2 CPU processes, gloo): its results by kind (the
    default kinds when `kinds` is None)."""
    run = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(ROOT / "tests" / "fast_parallel_worker.py"),
         str(model_dir), str(out), *([",".join(kinds)] if kinds else [])],
        capture_output=True, text=True, env=ENV, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def wrappers(tiny_model_dir, tmp_path_factory) -> dict:
    """tests/fast_parallel_worker.py under torchrun: every wrapper against one process, in one launch."""
    return launch_worker(tiny_model_dir, tmp_path_factory.mktemp("wrappers") / "out.json")


@pytest.mark.parametrize("kind", ["ddp", "fsdp1", "fsdp1-flat"])
def test_fast_loss_inside_the_wrapper_matches_one_process(wrappers, kind):
    """fsdp1: original parameters (accelerate's default); fsdp1-flat: fsdp_use_orig_params false (the
    FSDP + QLoRA recipe). 3 AdamW steps of 2 x 2 rows, an evaluation between steps 2 and 3."""
    r = wrappers[kind]
    assert "error" not in r, r.get("error")
    assert r["same_keys"] and r["ref_moved"] > 1e-3
    assert r["lora_allclose"], f"LoRA weights differ by up to {r['max_lora_diff']:.3g}"
    assert r["losses"] == pytest.approx(r["ref_losses"], rel=1e-5)
    assert r["max_prob_diff"] < 1e-5  # the evaluation through the wrapper
    assert (
        r["fast_vs_standard"] < 1e-5 and r["ref_fast_vs_standard"] < 1e-5
    )  # fast loss = model(**batch).loss


def test_the_bypassed_wrapper_is_caught(wrappers):
    """The control: the fast loss computed beside DDP's forward (the reason fast used to be switched off
    under DDP) syncs no gradient, and the comparison above sees it."""
    r = wrappers["ddp-bypass"]
    assert not r["lora_allclose"] and r["max_lora_diff"] > 1e-3


def test_fsdp2_is_refused_in_one_line(wrappers):
    assert wrappers["fsdp2"]["error"].startswith("FinsentError: train.fast does not run under FSDP2")
    # what the refusal prevents (torch 2.13): the second use of a layer finds its weights resharded
    unchecked = wrappers["fsdp2-unchecked"].get("error", "")
    assert "out of bounds for storage of size 0" in unchecked, (
        f"FSDP2 now runs the fast loss ({unchecked or 'no error'}): lift parallel.check_fast_loss"
    )
