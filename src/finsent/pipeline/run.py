"""The whole notebook as one command: split, zero-shot, train, evaluate, merge, evaluate, report.

    finsent run --config configs/smollm2-cpu.yaml --data ../shared/data/kaggle_all_data/all-data.csv --out runs/demo

Writes into --out: baseline/, finetuned/, merged/ (each evaluation's metrics.json, predictions.csv,
confusion_matrix.png), train/ (checkpoints, adapter/, TensorBoard logs), merged_model/ (the merged model),
report.md, loss_curve.png and summary.json.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

from finsent.core.artefacts import (
    BASELINE_EVAL,
    CALIBRATION_FILE,
    CONFIG_FILE,
    CONFUSION_PLOT,
    ERRORS_FILE,
    FINETUNED_EVAL,
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


@dataclass
class _Evaluations:
    """The run's evaluations of models on the test split, by name (core.artefacts.RUN_EVALUATIONS): each
    one's metrics and its most confident mistakes, written into out/<name>/."""

    cfg: Config
    out: Path
    test: list
    batch_size: int
    results: dict[str, dict] = field(default_factory=dict)
    mistakes: dict[str, str] = field(default_factory=dict)

    def measure(
        self, name: str, model_cfg, adapter: str | None = None, model_name: str | None = None
    ) -> tuple[list, list]:
        """Evaluate one model into out/<name>/ (written whole: a kill leaves the folder complete or
        absent); returns (predictions, probabilities). `model_name`: see evaluate().
        With float32's labels (modeling.load.float32_labels: on a CPU the dtype given, bf16 rechecked in
        float32 near ties; float32 elsewhere; a 4-bit base stays 4-bit, as trained): the merged model is
        saved in float32 and its parity with the adapter is a claim about float32's labels, as in `finsent
        merge`. In plain bf16 the merged weights' rounding flips a few test predictions against the
        adapter's (docs/results.md, "Figures the code's comments cite")."""
        from finsent.core.fsio import atomic_dir
        from finsent.evaluation.evaluate import evaluate, format_mistakes
        from finsent.modeling.load import float32_labels

        model_cfg = float32_labels(model_cfg)
        test = self.test
        with atomic_dir(self.out / name, judge=False) as folder:  # it loads and scores there too
            ev = evaluate(
                self.cfg, test, folder, model_cfg, adapter, self.batch_size,
                title=f"{name} (test split)", desc=name, model_name=model_name,
            )  # fmt: skip
        print(ev.report)
        print(f"{ev.metrics['examples_per_second']:.1f} sentences/s")
        self.results[name] = ev.metrics
        self.mistakes[name] = format_mistakes(
            [(e, p, pr) for e, p, pr in zip(test, ev.predictions, ev.probabilities) if p != e.label],
            ev.labels,
        )
        return ev.predictions, ev.probabilities

    def same_as(self, name: str, source: str, model: str, scored: tuple[list, list]) -> None:
        """`name` is `source`'s evaluation by identity (a byte-identical copy of the model in `model`):
        its results are `source`'s, written again under out/<name>/."""
        from finsent.core.fsio import atomic_dir
        from finsent.evaluation.evaluate import write_evaluation

        self.results[name] = dict(self.results[source], model=model)
        self.mistakes[name] = self.mistakes[source]
        labels = list(self.results[source]["confusion_matrix"]["labels"])  # the codec's order, as evaluated
        with atomic_dir(self.out / name) as folder:
            write_evaluation(folder, self.results[name], self.test, *scored, labels, f"{name} (test split)")


def run(cfg: Config, out: str | Path, batch_size: int = 32) -> dict:
    from finsent.core.lock import hold

    # one run at a time writes the folder: a second is refused at once, in one line (core/lock.py)
    with hold(out, "run"):
        return _run(cfg, Path(out), batch_size)


def _run(cfg: Config, out: Path, batch_size: int) -> dict:
    from finsent.core.fsio import atomic_dir, remove_leftovers, write_json
    from finsent.data.splits import make_splits
    from finsent.deploy.merge import certify_merge, copy_full, identical_files, merge_and_save
    from finsent.modeling.load import float32_labels
    from finsent.training.args import check_options
    from finsent.training.checkpoints import check_stamp, guard
    from finsent.training.train import resolved, train

    out.mkdir(parents=True, exist_ok=True)
    # what a killed run left half-written under hidden names goes (the lock is ours): a cut-off model
    # copy is as large as the model (training/checkpoints.py clears OUT/train's)
    remove_leftovers(out, *(out / name for name in RUN_EVALUATIONS))
    cfg = copy.deepcopy(cfg)
    cfg.train.output_dir = str(out / RUN_TRAIN_DIR)
    # a run refused for its folder or its options changes nothing in a finished run's folder
    guard(Path(cfg.train.output_dir), cfg.train.resume, cfg.train.overwrite)
    timings: dict[str, float] = {}

    def stage(name: str):
        print(f"\n=== {name} ===", flush=True)
        return time.perf_counter()

    t = stage("data")
    ds, splits = make_splits(cfg.data)
    for line in [ds.split_line(), *ds.flaws()]:
        print(f"data: {line}")
    check_options(cfg)
    # --resume of other options or data: refused before this folder is touched (as train() stamps it)
    check_stamp(Path(cfg.train.output_dir), resolved(cfg), splits)
    save_config(cfg, out)
    evals = _Evaluations(cfg, out, splits["test"], batch_size)
    timings["data"] = time.perf_counter() - t

    t = stage("zero-shot baseline")
    evals.measure(BASELINE_EVAL, cfg.model)
    timings["baseline"] = time.perf_counter() - t

    t = stage("train")
    trained_dir = train(cfg, splits)  # the adapter, or with train.method=full the whole model
    timings["train"] = time.perf_counter() - t

    # train.method=full: "merge" copies the whole trained model to merged_model/
    full = cfg.train.method == "full"
    t = stage("evaluate the fine-tuned model" if full else "evaluate the adapter")
    if full:
        trained = copy.deepcopy(cfg.model)
        trained.model = str(trained_dir)
        tuned = evals.measure(FINETUNED_EVAL, trained)
    else:
        tuned = evals.measure(FINETUNED_EVAL, cfg.model, str(trained_dir))
    timings["finetuned"] = time.perf_counter() - t

    # merged_model/ is written, scored from disk and certified (parity, card, test metrics) in a hidden
    # folder beside it, and takes its name only then: a kill at any moment leaves it certified or absent
    merged_dir = out / MERGED_MODEL_DIR
    with atomic_dir(merged_dir, judge=False) as staging:  # (the copy or merge judges its own writes)
        t = stage("copy (full fine-tuning: nothing to merge)" if full else "merge")
        (copy_full if full else merge_and_save)(cfg, trained_dir, staging, merged_dir)
        timings["merge"] = time.perf_counter() - t

        t = stage("check the copy" if full else "evaluate the merged model")
        merged_model = copy.deepcopy(cfg.model)
        merged_model.model, merged_model.load_in_4bit = str(staging), False
        merged_model = float32_labels(merged_model)  # as measure() evaluates: float32's labels
        as_trained = "adapter on its 4-bit base (as trained)" if cfg.model.load_in_4bit else "adapter"
        reference = "fully fine-tuned model" if full else as_trained
        same = identical_files(trained_dir, staging) if full else None
        if same:
            parity = _check_copy(evals, trained_dir, merged_model, merged_dir, tuned, same, reference)
        else:
            # the saved merged model, reloaded from disk, against the adapter: both full test-split evaluations
            merged = evals.measure(MERGED_EVAL, merged_model, model_name=str(merged_dir))
            parity = certify_merge(
                cfg, trained_dir, staging, tuned, merged, "test split",
                metrics=evals.results[MERGED_EVAL], reference=reference, name=merged_dir,
            )  # fmt: skip
        evals.results[MERGED_EVAL]["merge_parity"] = parity
        # the merged model carries its own test metrics: its card, `finsent export` and the server read them
        write_json(staging / METRICS_FILE, evals.results[MERGED_EVAL])
    timings["merged"] = time.perf_counter() - t

    return _write_summary(cfg, out, ds.flaws(), evals.results, timings, evals.mistakes)


def _check_copy(
    evals: _Evaluations,
    trained_dir: Path,
    copy_model,
    merged_dir: Path,
    tuned: tuple[list, list],
    same: dict,
    reference: str,
) -> dict:
    """train.method=full, the copy (in the staging folder `copy_model.model`, to be named `merged_dir`)
    byte-identical (`same` files): its test predictions are the fine-tuned model's by identity; what a
    copy can still get wrong, loading from its new folder, is measured by re-scoring the first test
    sentences from disk. Returns the parity record."""
    from finsent.deploy.merge import certify_merge
    from finsent.evaluation.evaluate import rescore

    evals.same_as(MERGED_EVAL, FINETUNED_EVAL, str(merged_dir), tuned)
    test = evals.test
    k = min(COPY_SAMPLE, len(test))
    sample = rescore(evals.cfg, copy_model, test[:k], evals.batch_size)
    return certify_merge(
        evals.cfg, trained_dir, Path(copy_model.model), (tuned[0][:k], tuned[1][:k]), sample,
        f"first {k} sentences of the test split",
        metrics=evals.results[MERGED_EVAL], reference=reference, name=merged_dir,
        extra={"identical_files": same, "test_split": f"{len(test)} predictions by identity of the files"},
    )  # fmt: skip


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


def _by_source(summary: dict, names: dict[str, str]) -> list[str]:
    """A mixture's test split, source by source: weighted F1 of each model with its 95% interval, then
    the published figures of other systems (not measured here). Nothing for a single source."""
    from finsent.evaluation.benchtable import format_interval, published_reference_markdown

    evaluated = {k: summary[k]["by_source"] for k in names if summary[k].get("by_source")}
    if not evaluated:
        return []
    sources = list(next(iter(evaluated.values())))
    lines = ["", "## By source (weighted F1, 95% bootstrap interval)", ""]
    lines += ["| model | " + " | ".join(f"{s} (n={evaluated[next(iter(evaluated))][s]['n']})" for s in sources)
              + " | all |", "|---|" + "---|" * (len(sources) + 1)]  # fmt: skip
    for k, by in evaluated.items():
        cells = [format_interval(by[s]["weighted_f1"]) if s in by else "-" for s in sources]
        whole = (
            format_interval(summary[k]["intervals"]["weighted_f1"]) if summary[k].get("intervals") else "-"
        )
        lines.append(f"| {names[k]} | " + " | ".join(cells) + f" | {whole} |")
    lines += ["", "`finsent bench --model DIR --against DIR` compares two models on the same test rows.", ""]
    return lines + published_reference_markdown().splitlines()


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
    lines += _by_source(summary, names)
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
