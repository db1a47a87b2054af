"""Ablation runs on the notebooks' split: every configuration tried, the losing ones too.

    python -m experiments.ablate                 # run every experiment not yet recorded (resumes a killed one)
    python -m experiments.ablate --only lr1e-3   # just these (comma-separated)
    python -m experiments.ablate --table         # the README's markdown table from the record

Each experiment is the demo config (configs/smollm2-cpu.yaml) plus overrides. It trains into
runs/ablate/NAME/ (with --resume, so a killed run goes on from its last complete checkpoint), then
evaluates the adapter in float32 on the eval split (150 sentences: the one that chooses) and on the test
split (900 sentences: reported, never used to choose). One JSON line per finished experiment goes to
experiments/results/ablation.jsonl with the CPU model and load average, since the machine changes between
sessions and wall times only compare within one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, ROOT
from experiments import RESULTS
from finsent.modeling.device import cpu_name

RECORD = RESULTS / "ablation.jsonl"
# the demo config as the experiments were defined against it (LoRA, 2 epochs): the config has moved on
# (full fine-tuning, 3 epochs), and each experiment's own overrides come after these and win
BASE = ["--config", str(ROOT / "configs" / "smollm2-cpu.yaml"), "--train.method", "lora"]
BASE += ["--train.num_train_epochs", "2"]
# every epoch's checkpoint, as when these ran (the demo config now keeps the newest only): average.py
# averages them
BASE += ["--train.save_total_limit", "0"]

FULL = ["--train.method", "full"]
# name -> (what changes, finsent overrides); order = the order they ran in
EXPERIMENTS: dict[str, tuple[str, list[str]]] = {
    "base": (
        "demo config before this work: answer loss, 2 epochs, lr 5e-4 (the previous demo's adapter)",
        ["--train.learning_rate", "5e-4"],
    ),
    "ep3": ("3 epochs, lr 5e-4", ["--train.num_train_epochs", "3", "--train.learning_rate", "5e-4"]),
    "ep4": ("4 epochs, lr 5e-4", ["--train.num_train_epochs", "4", "--train.learning_rate", "5e-4"]),
    "lr1e-3": ("lr 1e-3", ["--train.learning_rate", "1e-3"]),
    "label-ls0.1": (
        "label loss, label smoothing 0.1, lr 5e-4",
        ["--train.loss", "label", "--train.label_smoothing", "0.1", "--train.learning_rate", "5e-4"],
    ),
    "rslora": (
        "rsLoRA (scale alpha/sqrt(r)), lr 5e-4",
        ["--lora.use_rslora", "--train.learning_rate", "5e-4"],
    ),
    "dora": ("DoRA, lr 1e-3", ["--lora.use_dora", "--train.learning_rate", "1e-3"]),
    "lr2e-3": ("lr 2e-3", ["--train.learning_rate", "2e-3"]),
    "lr1e-3-ls0.1": (
        "lr 1e-3, label loss with label smoothing 0.1",
        ["--train.learning_rate", "1e-3", "--train.loss", "label", "--train.label_smoothing", "0.1"],
    ),
    "lr1e-3-ep3": ("lr 1e-3, 3 epochs", ["--train.learning_rate", "1e-3", "--train.num_train_epochs", "3"]),
    "lr1e-3-seed1": ("lr 1e-3, seed 1", ["--train.learning_rate", "1e-3", "--train.seed", "1"]),
    "lr1e-3-seed2": ("lr 1e-3, seed 2", ["--train.learning_rate", "1e-3", "--train.seed", "2"]),
    # full fine-tuning: float32 weights, bf16 autocast (first run as a bench script, now train.method)
    "full-lr5e-5": ("full fine-tuning, lr 5e-5", FULL + ["--train.learning_rate", "5e-5"]),
    "full-lr2e-5": ("full fine-tuning, lr 2e-5", FULL + ["--train.learning_rate", "2e-5"]),
    "full-lr1e-4": ("full fine-tuning, lr 1e-4", FULL + ["--train.learning_rate", "1e-4"]),
    "full-lr2e-4": ("full fine-tuning, lr 2e-4", FULL + ["--train.learning_rate", "2e-4"]),
    "full-lr5e-5-seed1": (
        "full fine-tuning, lr 5e-5, seed 1",
        FULL + ["--train.learning_rate", "5e-5", "--train.seed", "1"],
    ),
    # twice the optimizer steps at the same epochs (micro-batch 8, the notebooks' effective batch)
    "full-lr1e-4-bs8": (
        "full fine-tuning, lr 1e-4, batch 8",
        FULL + ["--train.learning_rate", "1e-4", "--train.per_device_train_batch_size", "8"],
    ),
    # the directions left unmeasured after the first five-fold round: more epochs (1.5x the steps, at lr
    # 1e-4, within 4 sentences of 2e-4 and the gentler for a longer run), and the notebooks' gradient clip
    # (0.3, a QLoRA setting) relaxed to transformers' default 1.0 for a full fine-tune, whose gradient
    # norm measured 1.6-107 over full-lr2e-4@fold0's steps
    "full-lr1e-4-ep3": (
        "full fine-tuning, lr 1e-4, 3 epochs",
        FULL + ["--train.learning_rate", "1e-4", "--train.num_train_epochs", "3"],
    ),
    "full-lr2e-4-clip1": (
        "full fine-tuning, lr 2e-4, max_grad_norm 1.0",
        FULL + ["--train.learning_rate", "2e-4", "--train.max_grad_norm", "1.0"],
    ),
    # the schedule, the one direction still unmeasured after the second round: no decay after warm-up.
    # Meant as 2 epochs; it ran with the demo config's 3 (BASE did not pin epochs then), so it compares
    # with the shipped full-lr1e-4-ep3 (cosine, 774) instead; the epochs are now written out
    "full-lr1e-4-const": (
        "full fine-tuning, lr 1e-4, 3 epochs, constant schedule after warm-up",
        FULL
        + ["--train.learning_rate", "1e-4", "--train.num_train_epochs", "3"]
        + ["--train.lr_scheduler_type", "constant_with_warmup"],
    ),
}
# Fixed before folds 2-4 ran (two folds could not rank configurations a few sentences apart; folds 0-1
# of full-lr1e-4 and full-lr2e-4 had been seen): these candidates, each on folds 0-4; the choice is the
# most held-out sentences right over all five folds (900 predictions), and a configuration short of five
# folds is not chosen. (Not fixed in advance, added when full-lr1e-4-bs8 tied full-lr2e-4 at 769/900: a
# tie keeps the configuration already shipped.) Second round, fixed before any of its runs (2026-11-28):
# full-lr1e-4-ep3 and full-lr2e-4-clip1 join on the same five folds and the same rule; the shipped
# configuration is replaced only by more sentences right than its 769, and a 3-epoch winner must also
# keep `make demo` within 900 s, checked by a demo run. full-lr1e-4-ep3 won (774) and was shipped. Third
# round, fixed before its runs: full-lr1e-4-const on the same folds and rule, replacing the shipped
# configuration only with more than 774 right (its epochs: see its entry).
FOLDS = range(5)
CANDIDATES = (
    "full-lr1e-4",
    "full-lr2e-4",
    "full-lr1e-4-bs8",
    "full-lr1e-4-ep3",
    "full-lr2e-4-clip1",
    "full-lr1e-4-const",
)
SHIPPED = "full-lr1e-4-ep3"  # configs/smollm2-cpu.yaml now (the tie-break's reference; full-lr2e-4 before)


def sh(cmd: list[str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"{cmd[1]} failed (exit {rc}); see {log}")
    return time.perf_counter() - t


def recorded() -> dict[str, dict]:
    if not RECORD.is_file():
        return {}
    return {r["name"]: r for r in map(json.loads, RECORD.read_text().splitlines()) if r}


def fold_data(data: str, seed: int) -> tuple[str, list[str]]:
    """A held-out fold of the notebooks' training split, for choosing without the test split (whose
    150-sentence eval split repeats 4 negative sentences 50 times: all-data.csv has 604 negatives, and 600
    went to train and test). (data file, split options): the 900 training sentences written to a CSV, then
    the notebook split of that file, 240 per label to train on and 60 per label held out (by `seed`)."""
    from finsent.core.config import resolve
    from finsent.data.splits import export_splits, make_splits

    folder = ROOT / "runs" / "ablate" / "fold-data"
    if not (folder / "train.csv").is_file():
        cfg = resolve(str(ROOT / "configs" / "smollm2-cpu.yaml"), {"data.data": data}, None)
        export_splits({"train": make_splits(cfg.data)[1]["train"]}, folder)
    split = ["--data.train_per_label", "240", "--data.test_per_label", "60", "--data.eval_per_label", "0"]
    return str(folder / "train.csv"), split + ["--data.seed", str(seed)]


def run_one(name: str, data: str, finsent: str, with_test: bool, fold: int | None = None) -> dict:
    what, overrides = EXPERIMENTS[name]
    split: list[str] = []
    if fold is not None:  # trained on 240 a label of the training split, scored on its held-out 60
        data, split = fold_data(data, fold)
        name, what = f"{name}@fold{fold}", f"{what} (fold {fold})"
    out = ROOT / "runs" / "ablate" / name
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    common = BASE + ["--data.data", data] + split + overrides
    load_before = os.getloadavg()[0]
    full = overrides[:2] == FULL  # the whole model, in train/model (train/adapter for the first runs)
    adapter = out / "train" / ("model" if full and not (out / "train" / "adapter").is_dir() else "adapter")
    timing = out / "train_seconds.json"  # a finished training is not redone (and keeps its time)
    if not timing.is_file() or not adapter.is_dir():
        t_train = sh([finsent, "train", *common, "--out", str(out / "train"), "--resume"], log)
        threads = int(
            os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)
        )  # the training's, not the eval's
        timing.write_text(
            json.dumps({"train_seconds": t_train, "load_before": load_before, "threads": threads})
        )
    saved = json.loads(timing.read_text())
    t_train, load_before, threads = saved["train_seconds"], saved["load_before"], saved.get("threads", 1)
    result = {"name": name, "what": what, "overrides": overrides}
    for subset in ("test",) if fold is not None else ("eval", "test") if with_test else ("eval",):
        ev = out / subset
        sh(
            # the adapter's saved config supplies every option that training used
            [finsent, "evaluate", "--data.data", data, *split, "--subset", subset]
            + ["--model" if full else "--adapter", str(adapter)]
            + ["--model.dtype", "float32", "--out", str(ev)],
            log,
        )
        m = json.loads((ev / "metrics.json").read_text())
        key = "fold" if fold is not None else subset  # a fold's "test" is held out of the training split
        result[key] = {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")}
    trained = json.loads((out / "train" / "train_log.json").read_text())
    result |= {
        "train_seconds": round(t_train, 1) if t_train else None,
        "train_runtime": trained.get("train_runtime"),
        "resumed_from": trained.get("resumed_from"),
        "cpu": cpu_name(),
        "load_before": round(load_before, 2) if load_before is not None else None,
        "load_after": round(os.getloadavg()[0], 2),
        "threads": threads,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with open(RECORD, "a") as f:  # one line per run: a kill loses at most the run in progress
        f.write(json.dumps(result) + "\n")
    for checkpoint in (out / "train").glob("checkpoint-*"):  # only for --resume: 1.6 GB each when full
        shutil.rmtree(checkpoint)
    return result


def train_time(r: dict) -> str:
    # `base` is the previous session's demo adapter, evaluated here: its training was not timed alone
    return f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-"


def table(records: dict[str, dict]) -> str:
    """Every run, then the configurations (runs that differ only in seed grouped): the one chosen is the
    best mean eval-split accuracy; the test split is never used to choose."""
    import statistics

    lines = [
        "| experiment | change | eval acc. | eval macro F1 | test acc. | test macro F1 | train s | training CPU (Xeon with AMX) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, list[float]] = {}
    folds: dict[str, dict[int, dict]] = {}
    for r in records.values():
        if "fold" in r:  # scored on a fold held out of the training split: the table after these
            base, k = r["name"].split("@fold")
            folds.setdefault(base, {})[int(k)] = r
            continue
        test = r.get("test")
        groups.setdefault(re.sub(r"-seed\d+", "", r["name"]), []).append(r["eval"]["accuracy"])
        lines.append(
            f"| `{r['name']}` | {r['what']} | {r['eval']['accuracy']:.3f} | {r['eval']['macro_f1']:.3f} "
            + (f"| {test['accuracy']:.3f} | {test['macro_f1']:.3f} " if test else "| - | - ")
            + f"| {train_time(r)} | "
            + (f"{r['threads']} thread(s), load {r['load_before']:.1f} |" if r.get("threads") else "- |")
        )
    if groups:
        best = max(groups, key=lambda g: statistics.mean(groups[g]))
        lines += [
            "",
            "| configuration | runs (seeds) | eval acc. mean | sd | min - max |",
            "|---|---|---|---|---|",
        ]
        for g, accs in groups.items():
            sd = f"{statistics.stdev(accs):.3f}" if len(accs) > 1 else "-"
            # folds, where there are any, choose (the eval split's 50 negatives are 4 sentences)
            mark = (" (best on eval)" if folds else " **(chosen)**") if g == best else ""
            lines.append(
                f"| `{g}`{mark} | {len(accs)} | {statistics.mean(accs):.3f} | {sd} | {min(accs):.3f} - {max(accs):.3f} |"
            )
    if folds:
        seeds = sorted({k for runs in folds.values() for k in runs})
        lines += [
            "",
            "| experiment | "
            + " | ".join(f"fold {k} acc." for k in seeds)
            + " | right (rule's folds) | mean | sd | train s (fold 0) |",
            "|---|" + "---|" * (len(seeds) + 4),
        ]

        def right(runs) -> int:  # sentences right over the rule's folds: whole numbers tie exactly
            return sum(round(r["fold"]["accuracy"] * r["fold"]["n"]) for k, r in runs.items() if k in FOLDS)

        def held_out(runs) -> int:
            return sum(r["fold"]["n"] for k, r in runs.items() if k in FOLDS)

        # the rule fixed before folds 2-4 (CANDIDATES on FOLDS); until they are all in, the most folds
        complete = [b for b in CANDIDATES if set(FOLDS) <= set(folds.get(b, {}))]
        pool = complete or list(folds)
        chosen = max(
            pool,
            key=lambda b: (len(set(folds[b]) & set(FOLDS)), right(folds[b]), b == SHIPPED),
        )
        for base, runs in folds.items():
            accs = [runs[k]["fold"]["accuracy"] if k in runs else None for k in seeds]
            got = [a for a in accs if a is not None]
            lines.append(
                f"| `{base}`{' **(chosen)**' if base == chosen else ''} | "
                + " | ".join(f"{a:.3f}" if a is not None else "-" for a in accs)
                + (f" | {right(runs)} of {held_out(runs)}" if set(FOLDS) <= set(runs) else " | -")
                + f" | {statistics.mean(got):.3f} | "
                + (f"{statistics.stdev(got):.3f} | " if len(got) > 1 else "- | ")
                + (train_time(runs[seeds[0]]) if seeds[0] in runs else "-")
                + " |"
            )
    return "\n".join(lines)


def claim(name: str) -> bool:
    """One driver per experiment: a second driver started beside this one skips what this one runs."""
    lock = ROOT / "runs" / "ablate" / name / ".driver"
    lock.parent.mkdir(parents=True, exist_ok=True)
    if lock.is_file():
        try:
            os.kill(int(lock.read_text()), 0)
            return False  # its driver is alive
        except (ValueError, ProcessLookupError):
            pass
    lock.write_text(str(os.getpid()))
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated experiment names")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--test", action="store_true", help="also evaluate on the test split (reported only)")
    ap.add_argument("--redo", action="store_true", help="run even if recorded (appends a new line)")
    ap.add_argument(
        "--fold",
        type=int,
        help="train on a fold of the training split and score its held-out part (this seed) instead",
    )
    a = ap.parse_args()
    if a.table:
        print(table(recorded()))
        return 0
    names = [n for n in a.only.split(",") if n] or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        ap.error(f"unknown experiments: {unknown}; known: {list(EXPERIMENTS)}")
    finsent = str(Path(sys.executable).with_name("finsent"))
    for name in names:
        key = name if a.fold is None else f"{name}@fold{a.fold}"
        if key in recorded() and not a.redo or not claim(key):
            continue
        print(f"--- {key}: {EXPERIMENTS[name][0]}", flush=True)
        r = run_one(name, a.data, finsent, a.test, a.fold)
        scores = "  ".join(f"{k} {r[k]['accuracy']:.3f}" for k in ("eval", "test", "fold") if k in r)
        print(f"    {scores}  train {train_time(r)} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
