"""Record a finished `finsent run` of the demo recipe in experiments/results/demo_runs.json (every run, the
losing ones too): accuracy, F1, per-label accuracy, calibration, merge parity and stage times, with the
CPU it ran on, since the machine changes between sessions and wall times compare only within one.

    python -m experiments.demo_runs runs/demo --config "full fine-tuning, lr 2e-4 (configs/smollm2-cpu.yaml)" \\
        --threads 2 --note "nothing else running"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import ROOT
from experiments import RESULTS
from finsent.core.fsio import write_json
from finsent.modeling.device import cpu_bf16_units, cpu_name

RECORD = RESULTS / "demo_runs.json"


def where(run: Path) -> str:
    """The run's folder as recorded: relative to the checkout when inside it, so the same folder named
    from anywhere is one entry."""
    run = run.resolve()
    return str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run)


def stage(m: dict) -> dict:
    cal = m.get("calibration") or {}
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "weighted_f1": m["weighted_f1"],
        "per_label_accuracy": {k: v["accuracy"] for k, v in m["per_label"].items()},
        "calibration": {k: cal.get(k) for k in ("temperature", "ece_before", "ece_after")},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the run's folder (holds summary.json)")
    ap.add_argument("--config", required=True, help="what was run, in words")
    ap.add_argument("--threads", type=int, required=True, help="torch threads the run used")
    ap.add_argument("--note", default="", help="what else ran beside it")
    a = ap.parse_args()
    if not (a.run / "summary.json").is_file():
        ap.error(f"{a.run}: no summary.json (not a finished `finsent run` folder)")
    s = json.loads((a.run / "summary.json").read_text())
    units = cpu_bf16_units()
    cpu = cpu_name() + (f" ({units})" if units else "")
    entry = {
        "config": a.config,
        "run": where(a.run),
        "train_seed": s["config"]["train"].get("seed"),
        "cpu": f"{cpu}, {a.threads} thread(s)" + (f", {a.note}" if a.note else ""),
        **{k: stage(s[k]) for k in ("baseline", "finetuned", "merged")},
        "merge_parity": s["merged"].get("merge_parity"),
        "timings_s": {k: round(v, 1) for k, v in s["timings"].items()},
    }
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else []
    if any(e.get("run") == entry["run"] for e in record):
        ap.error(f"{a.run} is already in {RECORD}")
    write_json(RECORD, record + [entry])
    ft = entry["finetuned"]
    print(f"recorded {a.run}: fine-tuned {ft['accuracy']:.3f}, total {entry['timings_s']['total']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
