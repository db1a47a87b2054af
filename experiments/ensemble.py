"""What averaging finished runs would give: the mean of their label probabilities on the same split,
read from each run's predictions.csv (no model is loaded). Measures seed and recipe ensembles without
shipping one: every member is a training run, past the demo's 15 minutes.

    python -m experiments.ensemble runs/demo runs/demo-seed1 runs/demo-full-lr1e-4
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

STAGE = "finetuned"  # a `finsent run` folder's evaluation of the tuned model


def main() -> int:
    import numpy as np
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="`finsent run` folders, or evaluation folders")
    a = ap.parse_args()
    if len({r.resolve() for r in a.runs}) < len(a.runs):
        ap.error("a run is named twice")
    frames = {}
    for run in a.runs:
        path = run / STAGE / "predictions.csv" if (run / STAGE).is_dir() else run / "predictions.csv"
        frames[str(run)] = pd.read_csv(path).sort_values("source_row").reset_index(drop=True)
    first = next(iter(frames.values()))
    probs = [c for c in first.columns if c.startswith("p_")]
    labels = np.array([c[2:] for c in probs])
    for name, f in frames.items():  # an ensemble only means something over the same rows and labels
        if not f["source_row"].equals(first["source_row"]) or [c for c in f if c.startswith("p_")] != probs:
            ap.error(f"{name}: not the same sentences or labels as {a.runs[0]}")
    gold = first["label"].to_numpy()
    print("| members | accuracy |\n|---|---|")
    for k in range(1, len(frames) + 1):
        for combo in itertools.combinations(frames, k):
            mean = sum(frames[m][probs].to_numpy() for m in combo) / k
            acc = (labels[mean.argmax(1)] == gold).mean()
            print(f"| {' + '.join(combo)} | {acc:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
