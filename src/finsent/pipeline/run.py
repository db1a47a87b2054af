"""The whole notebook as one command: split, zero-shot, train, evaluate, merge, evaluate, report.

    finsent run --config configs/smollm2-cpu.yaml --data ../shared/data/kaggle_all_data/all-data.csv --out runs/demo

Writes into --out: baseline/, finetuned/, merged/ (each evaluation's metrics.json, predictions.csv,
confusion_matrix.png), train/ (checkpoints, adapter/, TensorBoard logs), merged_model/ (the merged model),
report.md, loss_curve.png and summary.json.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from finsent.core.artefacts import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    CONFUSION_PLOT,
    ERRORS_FILE,
    LOSS_PLOT,
    MERGED_EVAL,
    MERGED_MODEL_DIR,
    METRICS_FILE,
    RELIABILITY_PLOT,
    REPORT_FILE,
    RUN_EVALUATIONS,
    RUN_TRAIN_DIR,
    SUMMARY_FILE,
)
from finsent.core.config import save_config
from finsent.core.options import Config

# sentences of the test split re-scored from a fully fine-tuned model's copy (its files byte-identical)
COPY_SAMPLE = 64


def run(cfg: Config, out: str | Path, batch_size: int = 32) -> dict:
    from finsent.core.fsio import write_json
    from finsent.data.splits import make_splits
    from finsent.deploy.merge import certify_merge, copy_full, identical_files, merge_and_save
    from finsent.evaluation.evaluate import evaluate, format_mistakes
    from finsent.training.train import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg.train.output_dir = str(out / RUN_TRAIN_DIR)
    save_config(cfg, out)
    timings: dict[str, float] = {}
    results: dict[str, dict] = {}
    mistakes: dict[str, str] = {}

    def stage(name: str):
        print(f"\n=== {name} ===", flush=True)
        return time.perf_counter()

    t = stage("data")
    ds, splits = make_splits(cfg.data)
    for line in [ds.split_line(), *ds.flaws()]:
        print(f"data: {line}")
    test = splits["test"]
    timings["data"] = time.perf_counter() - t

    def measure(name: str, model_cfg, adapter=None):
        """Evaluate one model on the test split into out/<name>/; returns (predictions, probabilities).
        In float32 (a 4-bit base stays 4-bit: that is what was trained): the merged model is saved in
        float32 and its parity with the adapter is a float32 claim, as in `finsent merge`. Evaluated
        in bf16, the merged weights' rounding flips a few test predictions against the adapter's
        (docs/results.md, "Figures the code's comments cite")."""
        model_cfg = copy.deepcopy(model_cfg)
        if not model_cfg.load_in_4bit:
            model_cfg.dtype = "float32"
        ev = evaluate(
            cfg, test, out / name, model_cfg, adapter, batch_size, title=f"{name} (test split)", desc=name
        )
        print(ev.report)
        print(f"{ev.metrics['examples_per_second']:.1f} sentences/s")
        results[name] = ev.metrics
        mistakes[name] = format_mistakes(
            [(e, p, pr) for e, p, pr in zip(test, ev.predictions, ev.probabilities) if p != e.label],
            ev.labels,
        )
        return ev.predictions, ev.probabilities

    t = stage("zero-shot baseline")
    measure("baseline", cfg.model)
    timings["baseline"] = time.perf_counter() - t

    t = stage("train")
    adapter = train(cfg, splits)
    timings["train"] = time.perf_counter() - t

    # train.method=full: `adapter` is the whole trained model, and "merge" copies it to merged_model/
    full = cfg.train.method == "full"
    t = stage("evaluate the fine-tuned model" if full else "evaluate the adapter")
    if full:
        trained = copy.deepcopy(cfg.model)
        trained.model = str(adapter)
        tuned = measure("finetuned", trained)
    else:
        tuned = measure("finetuned", cfg.model, str(adapter))
    timings["finetuned"] = time.perf_counter() - t

    t = stage("copy (full fine-tuning: nothing to merge)" if full else "merge")
    merged_dir = out / MERGED_MODEL_DIR
    (copy_full if full else merge_and_save)(cfg, adapter, merged_dir)
    timings["merge"] = time.perf_counter() - t

    t = stage("check the copy" if full else "evaluate the merged model")
    merged_model = copy.deepcopy(cfg.model)
    merged_model.model, merged_model.load_in_4bit = str(merged_dir), False
    merged_model.dtype = "float32"  # as measure() evaluates: parity is a float32 claim
    as_trained = "adapter on its 4-bit base (as trained)" if cfg.model.load_in_4bit else "adapter"
    reference = "fully fine-tuned model" if full else as_trained
    same = identical_files(adapter, merged_dir) if full else None
    if same:
        parity = _check_copy(
            cfg, out, adapter, merged_dir, merged_model, test, tuned, same, results, mistakes, batch_size, reference
        )  # fmt: skip
    else:
        # the saved merged model, reloaded from disk, against the adapter: both full test-split evaluations
        merged = measure("merged", merged_model)
        parity = certify_merge(
            cfg, adapter, merged_dir, tuned, merged, "test split", metrics=results["merged"], reference=reference
        )  # fmt: skip
    results["merged"]["merge_parity"] = parity
    # the merged model carries its own test metrics: its card, `finsent export` and the server read them
    write_json(merged_dir / METRICS_FILE, results["merged"])
    timings["merged"] = time.perf_counter() - t

    return _write_summary(cfg, out, ds.flaws(), results, timings, mistakes)


def _check_copy(
    cfg, out, adapter, merged_dir, merged_model, test, tuned, same, results, mistakes, batch_size, reference
):
    """train.method=full, the copy byte-identical (`same` files): its results are the fine-tuned model's,
    written again under merged/, and its loading is checked by re-scoring the first test sentences."""
    from finsent.deploy.merge import certify_merge
    from finsent.evaluation.evaluate import rescore, write_evaluation

    # the copy holds the evaluated model's own bytes (weights, tokenizer, model config), so its test
    # predictions are the fine-tuned model's, written again under merged/; what a copy can still get
    # wrong, loading from its new folder, is checked on the first test sentences, re-scored from disk
    results["merged"] = dict(results["finetuned"], model=str(merged_dir))
    mistakes["merged"] = mistakes["finetuned"]
    labels = list(results["finetuned"]["confusion_matrix"]["labels"])  # the codec's order, as evaluated
    write_evaluation(out / MERGED_EVAL, results["merged"], test, *tuned, labels, "merged (test split)")
    k = min(COPY_SAMPLE, len(test))
    sample = rescore(cfg, merged_model, test[:k], batch_size)
    parity = certify_merge(
        cfg, adapter, merged_dir, (tuned[0][:k], tuned[1][:k]), sample, f"first {k} sentences of the test split",
        metrics=results["merged"], reference=reference,
        extra={"identical_files": same, "test_split": f"{len(test)} predictions by identity of the files"},
    )  # fmt: skip
    return parity


def _write_summary(
    cfg: Config, out: Path, flaws: list[str], results: dict, timings: dict, mistakes: dict
) -> dict:
    """summary.json, report.md and the loss curve of a finished run."""
    from finsent.core.fsio import write_json, write_text
    from finsent.training.train import training_history

    timings["total"] = sum(timings.values())
    summary = {
        **{k: results[k] for k in RUN_EVALUATIONS},
        "timings": timings,
        "data_flaws": flaws,
        "config": cfg.to_dict(),
    }
    history = training_history(cfg.train.output_dir)
    if history:
        plot_loss(history, out / LOSS_PLOT)
    write_json(out / SUMMARY_FILE, summary)
    write_text(out / REPORT_FILE, render_report(summary, bool(history), mistakes.get("merged", "")))
    print(f"\nreport: {out / REPORT_FILE}")
    return summary


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finsent.core.fsio import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history if "loss" in h]
    ax.plot(steps, [h["loss"] for h in history if "loss" in h], label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    acc = [(h["step"], h["eval_accuracy"]) for h in history if "eval_accuracy" in h]
    if acc:
        ax2 = ax.twinx()
        ax2.plot(*zip(*acc), "o-", color="tab:orange", label="eval accuracy")
        ax2.set_ylabel("eval accuracy")
        ax2.set_ylim(0, 1)
    ax.set_title("training")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def data_flaws(flaws: list[str], shown: int = 10) -> list[str]:
    """report.md's lines for the data's flaws: the first few (a messy file can have thousands of skipped
    rows; summary.json keeps them all)."""
    lines = [f"- data: {flaw}" for flaw in flaws[:shown]]
    if len(flaws) > shown:
        lines.append(f"- data: ... and {len(flaws) - shown} more ({SUMMARY_FILE})")
    return lines + [""] if lines else []


def render_report(summary: dict, has_loss: bool, mistakes: str = "") -> str:
    cfg = summary["config"]
    full = cfg["train"].get("method") == "full"
    names = {
        "baseline": "zero-shot",
        "finetuned": "fine-tuned (every weight)" if full else "fine-tuned (adapter)",
        "merged": f"{MERGED_MODEL_DIR}/ (its copy)" if full else "merged",
    }
    labels = summary["baseline"]["confusion_matrix"]["labels"]
    lines = [
        "# finsent run",
        "",
        f"Model `{cfg['model']['model']}`, data `{cfg['data']['data']}`, split `{cfg['data']['split']}`, "
        f"test sentences: {summary['baseline']['n']}.",
        "",
        *data_flaws(summary.get("data_flaws", [])),
        "| model | accuracy | macro F1 | "
        + " | ".join(f"acc. {lab}" for lab in labels)
        + " | unparsed | sent/s |",
        "|---|---|---|" + "---|" * len(labels) + "---|---|",
    ]
    for key, title in names.items():
        m = summary[key]
        lines.append(
            f"| {title} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
            + " | ".join(f"{m['per_label'][lab]['accuracy']:.3f}" for lab in labels)
            + f" | {m['unparsed']} | {m['examples_per_second']:.1f} |"
        )
    parity = summary["merged"].get("merge_parity", {})
    if parity:
        lines += [
            "",
            f"Merge parity ({parity['split']}): {parity['agreement']:.1%} identical predictions "
            f"({parity['n']} sentences), max probability difference {parity['max_probability_difference']:.1e}.",
        ]
        if parity.get("identical_files"):
            lines += [
                "",
                f"`merged_model/` is a byte-identical copy of the fine-tuned model ({parity['identical_files']} "
                f"files, sha256), so its test-split predictions are the fine-tuned model's "
                f"({parity['test_split']}); the sentences above were re-scored from the copy on disk.",
            ]
    cal = {k: summary[k].get("calibration") for k in names if summary[k].get("calibration")}
    if cal:
        lines += [
            "",
            "## Calibration",
            "",
            "Expected calibration error on the test split (15 bins), before and after the temperature fitted "
            f"on the eval split after training (saved as {CALIBRATION_FILE} beside the adapter and merged model):",
            "",
            "| model | temperature | ECE before | ECE after |",
            "|---|---|---|---|",
        ]
        for k, c in cal.items():
            t = f"{c['temperature']:.3f}" if c.get("temperature") else "-"
            after = f"{c['ece_after']:.3f}" if c.get("ece_after") is not None else "-"
            lines.append(f"| {names[k]} | {t} | {c['ece_before']:.3f} | {after} |")
        lines += ["", f"![reliability of the merged model]({MERGED_EVAL}/{RELIABILITY_PLOT})"]
    if mistakes:
        lines += ["", "## Most confident mistakes (merged model, test split)", "", "```", mistakes, "```"]
        lines += ["", f"Every misclassified sentence with its probabilities: `{MERGED_EVAL}/{ERRORS_FILE}`."]
    lines += ["", "## Timings (seconds)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in summary["timings"].items()]
    lines += ["", "## Confusion matrices", ""]
    lines += [f"![{names[k]}]({k}/{CONFUSION_PLOT})" for k in names]
    if has_loss:
        lines += ["", "## Training", "", f"![loss]({LOSS_PLOT})"]
    lines += ["", f"Resolved configuration: `{CONFIG_FILE}`; all metrics: `{SUMMARY_FILE}`.", ""]
    return "\n".join(lines)
