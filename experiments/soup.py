"""A weight soup of finished multi-domain fold runs: their fine-tuned weights averaged into one model.

    python -m experiments.soup lr2e-4-ep2 lr5e-5-ep2          # fold runs of experiments/multidomain.py

Full fine-tunes of one base model often sit in one basin, where the mean of their weights scores as well
as an ensemble of their predictions at the cost of one model (Wortsman et al. 2022, "Model soups"), and
unlike an ensemble it still exports to one GGUF. The runs must share the fold (the same held-out rows);
the soup is scored on that fold's held-out part, source by source, and recorded in
experiments/results/multidomain.jsonl as `soup(A+B)`, beside the runs themselves (its `train_rows` are
each ingredient's, its `train_seconds` theirs together). Beside it, in soup_ensembles.jsonl: the runs'
prediction ensemble (their held-out probabilities averaged), scored the same way, and how often its
labels are the soup's. The soup keeps the first run's temperature: it never moves a label, but the
soup's probabilities are not calibrated on their own.

    python -m experiments.soup --ensemble-only ep2-seed1 ep2-seed2   # an existing soup's ensemble line
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from bench.common import ROOT
from experiments.multidomain import RECORD, fold_rows, heldout_predictions, recorded, run_folder
from finsent.core.artefacts import MODEL_DIR

ENSEMBLES = RECORD.with_name("soup_ensembles.jsonl")


def _first_fold(variants: list[str], fold: int) -> tuple:
    """The first run's (config, held-out rows); every other run must hold out the same rows (else the soup
    has no one set to be scored on)."""
    cfg, held = fold_rows(variants[0], fold)[:2]
    for v in variants[1:]:
        if [(e.source, e.text) for e in fold_rows(v, fold)[1]] != [(e.source, e.text) for e in held]:
            raise SystemExit(f"{v} holds out other rows than {variants[0]} on fold {fold}: no soup")
    return cfg, held


def ensemble(name: str, variants: list[str], fold: int) -> dict:
    """The runs' averaged held-out probabilities against the soup's labels, source by source."""
    from finsent.core.labels import best_label
    from finsent.evaluation.uncertainty import bootstrap_intervals

    runs = [heldout_predictions(v, fold) for v in variants]
    soup = heldout_predictions(name, fold)
    labels = [k[2:] for k in soup[0] if k.startswith("p_")]
    if any([r["text"] for r in p] != [r["text"] for r in soup] for p in runs):
        raise SystemExit(f"{name}: the runs' predictions are not on the soup's rows")
    mean = [[sum(float(p[i][f"p_{x}"]) for p in runs) / len(runs) for x in labels] for i in range(len(soup))]
    ens = [best_label(m, labels) for m in mean]
    out: dict = {"soup": name, "fold": fold, "sources": {}}
    for src in sorted({r["source"] for r in soup}) + ["all"]:
        idx = [i for i, r in enumerate(soup) if src in ("all", r["source"])]
        gold = [soup[i]["label"] for i in idx]
        out["sources"][src] = {
            "n": len(idx),
            "ensemble": bootstrap_intervals(gold, [ens[i] for i in idx], labels)["weighted_f1"],
            "soup": bootstrap_intervals(gold, [soup[i]["predicted"] for i in idx], labels)["weighted_f1"],
            "same_labels": sum(ens[i] == soup[i]["predicted"] for i in idx) / len(idx),
        }
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(ENSEMBLES, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(out) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="finished fold runs (full fine-tuning)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--ensemble-only", action="store_true", help="the ensemble line of an existing soup")
    args = ap.parse_args()
    os.environ.setdefault("FINSENT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    name = f"soup({'+'.join(args.variants)})"
    if args.ensemble_only:
        print(json.dumps(ensemble(name, args.variants, args.fold)))
        return
    cfg, held = _first_fold(args.variants, args.fold)
    if cfg.train.method != "full":
        raise SystemExit(f"{args.variants[0]}: train.method {cfg.train.method}: a soup averages whole models")
    runs = {r["variant"]: r for r in recorded() if r["fold"] == args.fold}
    if missing := [v for v in args.variants if v not in runs]:
        raise SystemExit(f"no record of {', '.join(missing)} on fold {args.fold}")

    from safetensors.torch import load_file, save_file

    from finsent.evaluation.evaluate import evaluate
    from finsent.modeling.device import cpu_name

    folders = [run_folder(v, args.fold) / "train" / MODEL_DIR for v in args.variants]
    states = [load_file(f / "model.safetensors") for f in folders]
    out = ROOT / "runs" / "multidomain" / f"{name}-fold{args.fold}"
    if out.exists():
        shutil.rmtree(out)
    # the first run's folder gives the config, tokenizer and calibration (a temperature never moves a label)
    shutil.copytree(folders[0], out / MODEL_DIR)
    mean = {k: (sum(s[k].float() for s in states) / len(states)).to(states[0][k].dtype) for k in states[0]}
    save_file(mean, out / MODEL_DIR / "model.safetensors", metadata={"format": "pt"})
    cfg.model.model, cfg.model.dtype = str(out / MODEL_DIR), "float32"
    ev = evaluate(cfg, held, out / "heldout", cfg.model, None, title=f"{name} fold {args.fold}")
    by = ev.metrics.get("by_source", {})
    result = {
        "variant": name,
        "what": "the mean of these fold runs' weights: " + ", ".join(args.variants),
        "fold": args.fold,
        "train_rows": runs[args.variants[0]]["train_rows"],  # each ingredient's (the same rows)
        "heldout_rows": len(held),
        "train_seconds": sum(runs[v]["train_seconds"] for v in args.variants),
        "weighted_f1": ev.metrics["intervals"]["weighted_f1"],
        "by_source": {s: {"n": r["n"], "weighted_f1": r["weighted_f1"]} for s, r in by.items()},
        "mean_source_weighted_f1": sum(r["weighted_f1"]["value"] for r in by.values()) / max(1, len(by)),
        "sources": list(cfg.data.sources),
        "training_matmuls": ", ".join(runs[v].get("training_matmuls", "?") for v in args.variants),
        "cpu": cpu_name(),
        "load": os.getloadavg(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with open(RECORD, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result))
    print(json.dumps(ensemble(name, args.variants, args.fold)))


if __name__ == "__main__":
    main()
