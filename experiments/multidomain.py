"""The multi-domain recipe's settings, chosen on a fold held out of the mixture's training split.

    python -m experiments.multidomain                    # every variant not yet recorded (resumes a killed one)
    python -m experiments.multidomain --only base,no-spans
    python -m experiments.multidomain --table            # the table from the record

The mixture is the shipped multi-domain config's (configs/smollm2-cpu-multi.yaml). Its training split is
cut into FOLDS parts, stratified by source and label; a variant trains on all but part `--fold` (default
0) and is scored on that part, source by source (weighted F1 with its bootstrap interval). The test
splits are never read for a choice: they are what `finsent bench` reports afterwards. One JSON line per
finished run goes to experiments/results/multidomain.jsonl, with the CPU and its load, the losing runs too.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable

from bench.common import ROOT
from experiments import RESULTS
from finsent.data.dataset import Example
from finsent.modeling.device import cpu_name

RECORD = RESULTS / "multidomain.jsonl"
CONFIG = ROOT / "configs" / "smollm2-cpu-multi.yaml"
FOLDS = 4


def _no_spans(sources: list[str]) -> list[str]:
    """SemEval's microblogs only tested: their training text is annotated fragments, not posts."""
    return [
        x + " test-only" if x.startswith("semeval-microblogs") and "test-only" not in x.split() else x
        for x in sources
    ]


def _with_spans(sources: list[str]) -> list[str]:
    """SemEval's microblog fragments trained on, as in the mixture `base` and `ep2` were defined against
    (the shipped config has tested them only since no-spans won)."""
    return [" ".join(w for w in x.split() if w != "test-only") if x.startswith("semeval-microblogs") else x
            for x in sources]  # fmt: skip


def _headlines_x2(sources: list[str]) -> list[str]:
    """_no_spans, and SemEval's training headlines twice (weight=2)."""
    return [x + " weight=2" if x.startswith("semeval-headlines") else x for x in _no_spans(sources)]


def _sentfin_800(sources: list[str]) -> list[str]:
    """SEntFiN capped at 800 training rows instead of 1,600."""
    return [x.replace("cap=1600", "cap=800") if x.startswith("sentfin") else x for x in sources]


# The kind of text each source holds, for the kind-tag variant: a kind a user can name for their own
# text (news sentence, headline, social post); a corpus name is not
KINDS = {
    "fpb": "news",
    "all-data": "news",
    "sentfin": "headline",
    "semeval-headlines": "headline",
    "semeval-microblogs": "post",
    "fiqa-posts": "post",
}


def _kind_tag(e: Example) -> Example:
    """The row with its kind named ahead of its text, inside the prompt's brackets: `[headline: ...]`.
    A proxy for a prompt that names the kind, needing no per-source template to try it."""
    if e.source not in KINDS:
        raise ValueError(f"kind-tag: source {e.source!r} has no kind in KINDS")
    return dataclasses.replace(e, text=f"{KINDS[e.source]}: {e.text}")


SourcesFn = Callable[[list[str]], list[str]]
RowFn = Callable[[Example], Example]

# name -> (what changes, config overrides, a function of the source list, a function of each row: training,
# eval and held-out rows alike)
VARIANTS: dict[str, tuple[str, dict, SourcesFn | None, RowFn | None]] = {
    "base": (
        "the config as first shipped (microblog fragments trained on), 1 epoch",
        {"train.num_train_epochs": 1},
        _with_spans,
        None,
    ),
    "no-spans": (
        "SemEval microblogs tested only: its training text is annotated fragments, not posts",
        {"train.num_train_epochs": 1},
        _no_spans,
        None,
    ),
    "sentfin-800": (
        "SEntFiN capped at 800 training rows instead of 1,600 (with the fragments)",
        {"train.num_train_epochs": 1},
        lambda s: _sentfin_800(_with_spans(s)),
        None,
    ),
    "ep2": ("2 epochs (with the fragments)", {"train.num_train_epochs": 2}, _with_spans, None),
    "headlines-x2": (
        "no-spans with SemEval's training headlines twice (weight=2): the headline target (0.80) was missed",
        {"train.num_train_epochs": 1},
        _headlines_x2,
        None,
    ),
    "headlines-x2-ep2": (
        "headlines-x2 (the winner of the weights round on fold 0), 2 epochs, bf16 training (issue 27's fix)",
        {"train.num_train_epochs": 2},
        _headlines_x2,
        None,
    ),
    "no-spans-ep2": (
        "no-spans (the winner of the 1-epoch round on fold 0), 2 epochs",
        {"train.num_train_epochs": 2},
        _no_spans,
        None,
    ),
    "no-spans-ep3": (
        "no-spans, 3 epochs (the demo recipe's count): 2 beat 1 on the two large sources",
        {"train.num_train_epochs": 3},
        _no_spans,
        None,
    ),
    "sentfin-800-ep2": (
        "no-spans-ep2 with SEntFiN capped at 800: its entity-level headlines may blur SemEval's",
        {"train.num_train_epochs": 2},
        lambda s: _sentfin_800(_no_spans(s)),
        None,
    ),
    "lr2e-4-ep2": (
        "the shipped recipe (no-spans-ep2) at lr 2e-4: 1e-4 was chosen on the PhraseBank's 900 rows, 3 "
        "epochs (171 steps), not on this mixture's 498 fold steps",
        {"train.num_train_epochs": 2, "train.learning_rate": 2e-4},
        _no_spans,
        None,
    ),
    "lr5e-5-ep2": (
        "the shipped recipe (no-spans-ep2) at lr 5e-5",
        {"train.num_train_epochs": 2, "train.learning_rate": 5e-5},
        _no_spans,
        None,
    ),
    "ep2-seed1": (
        "the shipped recipe (no-spans-ep2) with training seed 1: an ingredient of a same-lr weight soup",
        {"train.num_train_epochs": 2, "train.seed": 1},
        _no_spans,
        None,
    ),
    "ep2-seed2": (
        "the shipped recipe (no-spans-ep2) with training seed 2",
        {"train.num_train_epochs": 2, "train.seed": 2},
        _no_spans,
        None,
    ),
    "ep1-seed1": (
        "no-spans, 1 epoch, training seed 1: with ep1-seed2, a soup at one 2-epoch run's training cost",
        {"train.num_train_epochs": 1, "train.seed": 1},
        _no_spans,
        None,
    ),
    "ep1-seed2": (
        "no-spans, 1 epoch, training seed 2",
        {"train.num_train_epochs": 1, "train.seed": 2},
        _no_spans,
        None,
    ),
    "kind-tag-ep2": (
        "the shipped recipe (no-spans-ep2) with each text's kind (news / headline / post) named in the "
        "prompt, ahead of the text inside its brackets, in training, eval and held-out rows",
        {"train.num_train_epochs": 2},
        _no_spans,
        _kind_tag,
    ),
}


def _training_matmuls(cfg) -> str:
    """The precision the training matmuls ran in: bf16/fp16 autocast, else the weights' own dtype. With
    dtype auto, `auto` picks bf16 on a CPU with bf16 matmuls: bf16 weights for LoRA, and for full
    fine-tuning float32 weights under bf16 autocast (train.full_precision), bf16 matmuls either way."""
    import torch

    from finsent.modeling.device import pick_device, pick_dtype

    if cfg.train.bf16 or cfg.train.fp16:
        return "bf16" if cfg.train.bf16 else "fp16"
    weights = pick_dtype(cfg.model.dtype, pick_device(cfg.model.device), training=True)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(weights, "float32")


def folds(train: list, k: int, seed: int = 0) -> list[list]:
    """The training rows cut into k parts, each (source, label) group dealt round-robin after a shuffle."""
    groups: dict[tuple, list] = defaultdict(list)
    for e in train:
        groups[(e.source, e.label)].append(e)
    parts: list[list] = [[] for _ in range(k)]
    rng = random.Random(seed)
    for key in sorted(groups):
        rows = groups[key]
        rng.shuffle(rows)
        for i, e in enumerate(rows):
            parts[i % k].append(e)
    return parts


def _weights(sources: list[str]) -> dict[str, int]:
    """{source name: its whole-number weight=} of the sources that have one."""
    out = {}
    for s in sources:
        for word in s.split()[1:]:
            if word.startswith("weight="):
                w = float(word.split("=", 1)[1])
                if w != int(w):
                    raise ValueError(f"{s}: fold runs take whole-number weights")
                out[s.split()[0]] = int(w)
    return out


def fold_rows(name: str, fold: int) -> tuple:
    """(config, held-out rows, training rows, eval rows) of variant `name` on fold `fold`."""
    from finsent.core.config import build_config
    from finsent.data.splits import make_splits

    _, overrides, sources_fn, row_fn = VARIANTS[name]
    cfg = build_config(str(CONFIG), overrides)
    if sources_fn:
        cfg.data.sources = sources_fn(list(cfg.data.sources))
    # a source's weight copies its training rows; folded after that, a copy of a held-out row would sit
    # in training. So the folds are cut from the unweighted mixture (the same held-out rows as the
    # unweighted variant) and only the training parts are weighted
    weights = _weights(cfg.data.sources)
    cfg.data.sources = [
        " ".join(w for w in s.split() if not w.startswith("weight=")) for s in cfg.data.sources
    ]
    ds, splits = make_splits(cfg.data)
    parts = folds(splits["train"], FOLDS)
    held = parts[fold]
    rest = [e for i, p in enumerate(parts) if i != fold for e in p]
    rest += [e for e in rest for _ in range(weights.get(e.source, 1) - 1)]
    evals = splits["eval"]
    if row_fn:
        held, rest, evals = [row_fn(e) for e in held], [row_fn(e) for e in rest], [row_fn(e) for e in evals]
    return cfg, held, rest, evals


def run_folder(name: str, fold: int):
    return ROOT / "runs" / "multidomain" / f"{name}-fold{fold}"


def heldout_predictions(name: str, fold: int) -> list[dict]:
    """The rows of a finished run's held-out predictions.csv (label, predicted, p_LABEL..., source)."""
    import csv

    from finsent.core.artefacts import PREDICTIONS_FILE

    with open(run_folder(name, fold) / "heldout" / PREDICTIONS_FILE, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_variant(name: str, fold: int) -> dict:
    from finsent.evaluation.evaluate import evaluate
    from finsent.training.train import train

    what = VARIANTS[name][0]
    cfg, held, rest, evals = fold_rows(name, fold)
    out = run_folder(name, fold)
    cfg.train.output_dir = str(out / "train")
    cfg.train.resume = (out / "train").exists()
    cfg.train.overwrite = False
    t0 = time.perf_counter()
    folder = train(cfg, {"train": rest, "eval": evals, "test": held})
    seconds = time.perf_counter() - t0
    model = copy.deepcopy(cfg.model)
    if cfg.train.method == "full":
        model.model = str(folder)
    model.dtype = "float32"
    adapter = None if cfg.train.method == "full" else str(folder)
    ev = evaluate(cfg, held, out / "heldout", model, adapter, title=f"{name} fold {fold}")
    by = ev.metrics.get("by_source", {})
    return {
        "variant": name,
        "what": what,
        "fold": fold,
        "train_rows": len(rest),
        "heldout_rows": len(held),
        "train_seconds": round(seconds, 1),
        "weighted_f1": ev.metrics["intervals"]["weighted_f1"],
        "by_source": {s: {"n": r["n"], "weighted_f1": r["weighted_f1"]} for s, r in by.items()},
        "mean_source_weighted_f1": sum(r["weighted_f1"]["value"] for r in by.values()) / max(1, len(by)),
        "sources": list(cfg.data.sources),
        # bf16 autocast reached the fast loss only from commit 1461f0f: runs before it trained in float32
        # (a run resumed from such a folder trained partly so; every fold run so far started fresh)
        "training_matmuls": _training_matmuls(cfg),
        "cpu": cpu_name(),
        "load": os.getloadavg(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def recorded() -> list[dict]:
    if not RECORD.is_file():
        return []
    return [json.loads(line) for line in RECORD.read_text().splitlines() if line.strip()]


def table() -> str:
    rows = recorded()
    sources = sorted({s for r in rows for s in r["by_source"]})
    head = "| variant | fold | train s | all | mean of sources | " + " | ".join(sources) + " |"
    lines = [head, "|" + "---|" * (5 + len(sources))]
    for r in rows:
        cells = [
            f"{r['by_source'][s]['weighted_f1']['value']:.3f}" if s in r["by_source"] else "-"
            for s in sources
        ]
        lines.append(
            f"| {r['variant']} | {r['fold']} | {r['train_seconds']:.0f} | {r['weighted_f1']['value']:.3f} "
            f"| {r['mean_source_weighted_f1']:.3f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.table:
        print(table())
        return
    os.environ.setdefault("FINSENT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    done = {(r["variant"], r["fold"]) for r in recorded()}
    for name in [n for n in args.only.split(",") if n] or list(VARIANTS):
        if (name, args.fold) in done:
            print(f"{name} fold {args.fold}: recorded, skipped")
            continue
        result = run_variant(name, args.fold)
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        with open(RECORD, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
