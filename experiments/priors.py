"""Per-source label shares on a fold run of the multi-domain recipe: does correcting for prior shift help?

    python -m experiments.priors lr2e-4-ep2 lr5e-5-ep2      # fold runs of experiments/multidomain.py

A mixture model learns the mixture's label shares (45% neutral on fold 0); SemEval's headlines are 12.5%
neutral. Bayes' rule with the right shares (calibration.reweight) may fix labels the
model leaves at the neutral line. Three readings of each source's held-out rows of the fold, from the
probabilities the run already wrote (no model is loaded):
- `none`: the model's own labels;
- `source shares`: re-weighted from the training mixture's shares to the source's own training shares
  (known from the mixture's training rows of that source);
- `auto`: the shares estimated by EM on the source's held-out rows themselves, unlabeled (what
  `--priors auto` does on a user's file).
Each against `none` with a paired bootstrap of the weighted F1. One JSON record per run goes to
experiments/results/priors.jsonl. Only held-out rows of the training split are read, never a test split.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from experiments import RESULTS
from experiments.multidomain import fold_rows, heldout_predictions

RECORD = RESULTS / "priors.jsonl"


def _shares(rows, labels: list[str]) -> list[float]:
    c = Counter(e.label for e in rows)
    return [c[lab] / max(1, len(rows)) for lab in labels]


def study(name: str, fold: int) -> dict:
    from finsent.core.labels import best_label
    from finsent.evaluation.uncertainty import bootstrap_intervals, paired_bootstrap_f1
    from finsent.modeling.calibration import em_priors, reweight

    cfg, _, rest, _ = fold_rows(name, fold)
    labels = list(cfg.data.labels)
    rows = heldout_predictions(name, fold)
    mix = _shares(rest, labels)
    out: dict = {"variant": name, "fold": fold, "mixture_shares": dict(zip(labels, mix)), "sources": {}}
    for src in sorted({r["source"] for r in rows}):
        mine = [r for r in rows if r["source"] == src]
        gold = [r["label"] for r in mine]
        probs = [[float(r[f"p_{lab}"]) for lab in labels] for r in mine]
        own = _shares([e for e in rest if e.source == src], labels)
        auto = em_priors(probs, mix)
        readings = {
            "none": [r["predicted"] for r in mine],
            "source shares": [best_label(p, labels) for p in reweight(probs, mix, own).tolist()],
            "auto": [best_label(p, labels) for p in reweight(probs, mix, auto).tolist()],
        }
        res: dict = {"n": len(mine), "own_shares": own, "auto_shares": auto}
        for how, preds in readings.items():
            res[how] = bootstrap_intervals(gold, preds, labels)["weighted_f1"]
            if how != "none":
                res[how]["minus_none"] = paired_bootstrap_f1(gold, preds, readings["none"], labels)
        out["sources"][src] = res
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return out


def table(rec: dict) -> str:
    lines = [
        f"{rec['variant']} fold {rec['fold']}: weighted F1 (95% interval); the change against none "
        "(paired bootstrap interval)",
        "| source | n | none | source shares | change | auto (EM) | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for src, r in rec["sources"].items():
        cells = [f"{r['none']['value']:.3f}"]
        for how in ("source shares", "auto"):
            d = r[how]["minus_none"]
            cells += [f"{r[how]['value']:.3f}", f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"]
        lines.append(f"| {src} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="fold runs of experiments/multidomain.py")
    ap.add_argument("--fold", type=int, default=0)
    args = ap.parse_args()
    for name in args.variants:
        rec = study(name, args.fold)
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        with open(RECORD, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(table(rec))


if __name__ == "__main__":
    main()
