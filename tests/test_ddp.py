"""Two CPU processes (gloo) through torchrun: one adapter saved, the same loss as one process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def write_data(path: Path) -> None:
    rows = []
    for label, verb in (("positive", "rose"), ("negative", "fell"), ("neutral", "said")):
        rows += [f"{label},The company {verb} {i} ." for i in range(12)]
    path.write_text("\n".join(rows) + "\n")


def train_args(model_dir, data, out):
    # file order (no shuffling): global batch k holds the same 8 examples in both runs, so with
    # gradients averaged over all ranks' answer tokens the updates, losses and adapters must agree
    return [
        "train",
        "--config",
        str(ROOT / "configs" / "smollm2-cpu.yaml"),
        "--train.method",
        "lora",
        "--model",
        str(model_dir),
        "--dtype",
        "float32",
        "--data",
        str(data),
        "--data.split",
        "notebook",
        "--data.train_per_label",
        "8",
        "--data.test_per_label",
        "2",
        "--data.eval_per_label",
        "2",
        "--train.num_train_epochs",
        "2",
        "--train.learning_rate",
        "5e-3",
        "--train.shuffle",
        "false",
        "--train.per_device_train_batch_size",
        "4",
        "--train.report_to",
        "none",
        "--train.fast",
        "false",
        "--train.evaluation_strategy",
        "no",
        "--train.group_by_length",
        "false",
        "--out",
        str(out),
    ]


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_ddp_two_processes_match_one(tiny_model_dir, tmp_path):
    data = tmp_path / "d.csv"
    write_data(data)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "finsent.cli",
            *train_args(tiny_model_dir, data, tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    args = train_args(tiny_model_dir, data, tmp_path / "one")
    args[args.index("--train.per_device_train_batch_size") + 1] = "8"  # same global batch
    one = subprocess.run(
        [sys.executable, "-m", "finsent.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert one.returncode == 0, one.stderr[-3000:]
    saved = [p.parent.name for p in (tmp_path / "ddp").glob("**/adapter_model.safetensors")]
    assert sorted(n for n in saved if not n.startswith("checkpoint-")) == [
        "adapter"
    ]  # one adapter, not one per rank

    def mean_loss(folder):
        return json.loads((folder / "train_log.json").read_text())["train_loss"]

    import torch
    from safetensors.torch import load_file

    a = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)
    # the logged loss is rank 0's share of the global token mean (x world size), so it matches closely,
    # not exactly; the weights above are the exact check
    assert mean_loss(tmp_path / "ddp") == pytest.approx(mean_loss(tmp_path / "one"), rel=2e-2)
