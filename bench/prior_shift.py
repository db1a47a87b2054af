"""Prior correction on an imbalanced test set: before and after `--priors`.

    python -m bench.prior_shift [--model runs/demo/merged_model] [--data .../all-data.csv]

The test set is the notebooks' test split made imbalanced as real news is: all its neutral sentences
and the first fifth of the positive and of the negative ones (300 + 60 + 60 = 420, 71% neutral). The
model was trained on a balanced split. One classification pass, then three readings of the same
probabilities: as they are, re-weighted with the true shares (known priors), and re-weighted with
shares estimated on the unlabeled sentences by EM (auto). Writes bench/results/prior_shift.json.
"""

from __future__ import annotations

import time

from bench.common import RESULTS, demo_model_parser, demo_test_split


def main() -> int:
    from finsent.core.fsio import write_json
    from finsent.evaluation.metrics import classification_metrics
    from finsent.modeling.calibration import adjust
    from finsent.serving.api import Classifier

    ap = demo_model_parser(__doc__, RESULTS / "prior_shift.json")
    ap.add_argument("--fraction", type=float, default=0.2, help="share of each non-neutral label kept")
    a = ap.parse_args()
    cfg, test = demo_test_split(a.model, a.data)
    keep = []
    for lab in cfg.data.labels:
        rows = [e for e in test if e.label == lab]
        keep += rows if lab == "neutral" else rows[: round(len(rows) * a.fraction)]
    gold = [e.label for e in keep]
    true_shares = [gold.count(lab) / len(gold) for lab in cfg.data.labels]

    clf = Classifier.from_config(cfg)
    t = time.perf_counter()
    probs = clf.probabilities([e.text for e in keep])  # calibrated, not yet prior-corrected
    seconds = time.perf_counter() - t
    train = clf.calibration.train_priors if clf.calibration else None
    result = {
        "model": a.model,
        "test": f"{len(keep)} sentences: " + ", ".join(f"{lab} {gold.count(lab)}" for lab in cfg.data.labels),
        "true_shares": dict(zip(cfg.data.labels, true_shares)),
        "training_shares": dict(zip(cfg.data.labels, train)) if train else "uniform",
        "temperature": clf.calibration.temperature if clf.calibration else None,
        "seconds": round(seconds, 1),
    }
    for name, priors in (("none", None), ("known", true_shares), ("auto", "auto")):
        _, preds, used = adjust(probs, cfg.data.labels, None, priors, train)
        m = classification_metrics(gold, preds, cfg.data.labels)
        result[name] = {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "weighted_f1": m["weighted_f1"],
            "predicted_shares": {lab: preds.count(lab) / len(preds) for lab in cfg.data.labels},
            "priors_used": dict(zip(cfg.data.labels, used)) if used else None,
        }
        print(
            f"priors {name:5}  accuracy {m['accuracy']:.3f}  macro F1 {m['macro_f1']:.3f}  "
            f"weighted F1 {m['weighted_f1']:.3f}"
            + (f"  shares used {', '.join(f'{x:.3f}' for x in used)}" if used else "")
        )
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
