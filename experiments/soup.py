"""A weight soup of finished multi-domain fold runs: their fine-tuned weights averaged into one model.

    python -m experiments.soup lr2e-4-ep2 lr5e-5-ep2          # fold runs of experiments/multidomain.py

Full fine-tunes of one base model often sit in one basin, where the mean of their weights scores as well
as an ensemble of their predictions at the cost of one model (Wortsman et al. 2022, "Model soups"), and
unlike an ensemble it still exports to one GGUF. The runs must share the fold (the same held-out rows);
the soup is scored on that fold's held-out part, source by source, and recorded in
experiments/results/multidomain.jsonl as `soup(A+B)`, beside the runs themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from bench.common import ROOT
from experiments.multidomain import RECORD, fold_rows, recorded, run_folder
from finsent.core.artefacts import MODEL_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="finished fold runs (full fine-tuning)")
    ap.add_argument("--fold", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("FINSENT_DATA_DIR", str(ROOT.parent / "shared" / "data"))

    from safetensors.torch import load_file, save_file

    from finsent.evaluation.evaluate import evaluate
    from finsent.modeling.device import cpu_name

    folders = [run_folder(v, args.fold) / "train" / MODEL_DIR for v in args.variants]
    states = [load_file(f / "model.safetensors") for f in folders]
    name = f"soup({'+'.join(args.variants)})"
    out = ROOT / "runs" / "multidomain" / f"{name}-fold{args.fold}"
    if out.exists():
        shutil.rmtree(out)
    # the first run's folder gives the config, tokenizer and calibration (a temperature never moves a label)
    shutil.copytree(folders[0], out / MODEL_DIR)
    mean = {k: (sum(s[k].float() for s in states) / len(states)).to(states[0][k].dtype) for k in states[0]}
    save_file(mean, out / MODEL_DIR / "model.safetensors", metadata={"format": "pt"})
    cfg, held, _, _ = fold_rows(args.variants[0], args.fold)
    cfg.model.model, cfg.model.dtype = str(out / MODEL_DIR), "float32"
    ev = evaluate(cfg, held, out / "heldout", cfg.model, None, title=f"{name} fold {args.fold}")
    by = ev.metrics.get("by_source", {})
    runs = {r["variant"]: r for r in recorded() if r["fold"] == args.fold}
    result = {
        "variant": name,
        "what": "the mean of these fold runs' weights: " + ", ".join(args.variants),
        "fold": args.fold,
        "train_rows": sum(runs[v]["train_rows"] for v in args.variants if v in runs),
        "heldout_rows": len(held),
        "train_seconds": sum(runs[v]["train_seconds"] for v in args.variants if v in runs),
        "weighted_f1": ev.metrics["intervals"]["weighted_f1"],
        "by_source": {s: {"n": r["n"], "weighted_f1": r["weighted_f1"]} for s, r in by.items()},
        "mean_source_weighted_f1": sum(r["weighted_f1"]["value"] for r in by.values()) / max(1, len(by)),
        "sources": list(cfg.data.sources),
        "training_matmuls": ", ".join(
            runs[v].get("training_matmuls", "?") for v in args.variants if v in runs
        ),
        "cpu": cpu_name(),
        "load": os.getloadavg(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with open(RECORD, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
