"""Checkpoint averaging, measured: the mean of a finished ablation run's epoch checkpoints as one adapter.

    python -m experiments.average lr1e-3 lr1e-3-seed1 lr1e-3-seed2   # runs of experiments/ablate.py

For each run: the LoRA weights of its checkpoint-*/ folders (one per epoch) averaged element-wise into
runs/ablate/NAME/averaged/ (with the final adapter's config and calibration), then evaluated in float32 on
the eval split (the one that chooses) and the test split, and recorded as NAME-avg in
experiments/results/ablation.jsonl beside the run itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, ROOT
from experiments.ablate import RECORD, recorded


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="finished runs of experiments/ablate.py (runs/ablate/NAME)")
    a = ap.parse_args()
    from safetensors.torch import load_file, save_file

    from finsent.modeling.device import cpu_name

    data = str(DATA)
    finsent = str(Path(sys.executable).with_name("finsent"))
    for name in a.names:
        run = ROOT / "runs" / "ablate" / name
        checkpoints = sorted(run.glob("train/checkpoint-*/adapter_model.safetensors"))
        if len(checkpoints) < 2:
            raise SystemExit(f"{run}: fewer than two checkpoints")
        states = [load_file(p) for p in checkpoints]
        mean = {k: sum(s[k].float() for s in states) / len(states) for k in states[0]}
        out = run / "averaged"
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(run / "train" / "adapter", out)
        save_file({k: v.to(states[-1][k].dtype) for k, v in mean.items()}, out / "adapter_model.safetensors")
        result = {
            "name": f"{name}-avg",
            "what": f"{recorded()[name]['what']}, mean of the {len(states)} epoch checkpoints",
            "overrides": ["experiments/average.py", name],
        }
        for subset in ("eval", "test"):
            ev = run / f"averaged-{subset}"
            subprocess.run(
                [finsent, "evaluate", "--data.data", data, "--adapter", str(out), "--subset", subset]
                + ["--model.dtype", "float32", "--out", str(ev)],
                check=True,
                capture_output=True,
            )
            m = json.loads((ev / "metrics.json").read_text())
            result[subset] = {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")}
        result |= {"train_seconds": None, "cpu": cpu_name(), "threads": None, "load_before": None}
        result["date"] = time.strftime("%Y-%m-%d %H:%M")
        with open(RECORD, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"{name}-avg: eval {result['eval']['accuracy']:.3f} test {result['test']['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
