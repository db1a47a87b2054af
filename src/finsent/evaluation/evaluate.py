"""Evaluate a model (optionally with an adapter) on a data split; write metrics, predictions, a plot.

`evaluate` is the one path from a model to its written evaluation: `finsent evaluate` and each of the
three evaluations inside `finsent run` call it.

finsent evaluate --data ../shared/data/kaggle_all_data/all-data.csv --split notebook --subset test --out runs/zs
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from finsent.core.artefacts import (
    CONFUSION_PLOT,
    ERRORS_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RELIABILITY_PLOT,
    REPORT_TXT,
)
from finsent.core.console import progress_bar
from finsent.core.fsio import atomic_path, write_json, write_text
from finsent.core.options import Config, ModelConfig
from finsent.data.dataset import Example
from finsent.evaluation.metrics import classification_metrics, format_report, plot_confusion


@dataclass
class Evaluation:
    metrics: dict
    predictions: list[str]
    probabilities: list[list[float]]
    labels: list[str]
    report: str


def load_for_evaluation(cfg: Config, model_cfg: ModelConfig, adapter: str | None = None, priors=None):
    """(model, codec, device, calibration, recheck): the model as every evaluation loads it (as the
    Classifier does: the same scorer, float32 twin and guard), with the temperature fitted on the eval
    split after training (none for an untuned model). `priors`: evaluate's, for the guard."""
    from finsent.core.prompts import PromptCodec
    from finsent.modeling.calibration import Calibration, prior_offsets
    from finsent.modeling.load import load_scorer

    calibration = Calibration.load(adapter or model_cfg.model, cfg.data.labels)
    offsets = prior_offsets(cfg.data.labels, calibration, priors)
    model, tokenizer, device, recheck = load_scorer(model_cfg, adapter, offsets)
    return model, PromptCodec.from_config(cfg, tokenizer), device, calibration, recheck


def evaluate(
    cfg: Config,
    examples: list[Example],
    out: str | Path,
    model_cfg: ModelConfig | None = None,
    adapter: str | None = None,
    batch_size: int = 32,
    method: str = "score",
    priors: list[float] | str | None = None,
    title: str = "",
    desc: str = "evaluating",
    info: dict | None = None,
    model_name: str | None = None,
) -> Evaluation:
    """Load the model `model_cfg` (default cfg.model), with `adapter`, and its calibration; classify
    `examples`; write the evaluation into `out` (write_evaluation). The metrics also name the model
    (`model_name` where it is loaded from a staging folder that takes that name later), adapter, device
    and dtype, and `info`."""
    from finsent.core.fsio import out_folder
    from finsent.modeling.scoring import dtype_note

    out_folder(out, model_ok=False)  # before the model loads and scores
    model_cfg = model_cfg or cfg.model

    model, codec, device, calibration, recheck = load_for_evaluation(cfg, model_cfg, adapter, priors)
    recheck = recheck if method == "score" else None  # generation has no gap to recheck
    metrics, preds, probs = run_evaluation(
        model, codec, examples, batch_size, method, desc, calibration, priors, recheck
    )
    metrics.update(
        model=model_name or model_cfg.model,
        adapter=adapter,
        device=device,
        dtype=dtype_note(model, recheck),
        **(info or {}),
    )
    if recheck is not None:
        metrics["rescored_in_float32"] = recheck.rescored
    report = write_evaluation(out, metrics, examples, preds, probs, codec.labels, title)
    return Evaluation(metrics, preds, probs, codec.labels, report)


def rescore(cfg: Config, model_cfg: ModelConfig, examples: list[Example], batch_size: int = 32):
    """(predictions, probabilities) of the model `model_cfg` on `examples`, calibrated as `evaluate`
    does, without writing anything: a check of a copy against what was evaluated."""
    model, codec, _, calibration, recheck = load_for_evaluation(cfg, model_cfg)
    _, preds, probs = run_evaluation(
        model, codec, examples, batch_size, desc="re-scoring", calibration=calibration, recheck=recheck
    )
    return preds, probs


def run_evaluation(
    model,
    codec,
    examples: list[Example],
    batch_size: int = 32,
    method: str = "score",
    desc: str = "evaluating",
    calibration=None,
    priors: list[float] | str | None = None,
    recheck=None,
) -> tuple[dict, list[str], list[list[float]]]:
    """Classify `examples`; return metrics (with examples_per_second), predictions and probabilities.
    With `calibration` (calibration.json of the model) the probabilities are temperature-scaled and
    metrics["calibration"] holds the ECE before and after; with `priors` (shares or 'auto') they are
    re-weighted for the new label shares, which may change predictions (calibration.adjust)."""
    from finsent.modeling.calibration import adjust, ece, reliability, scale
    from finsent.modeling.scoring import classify

    texts = [e.text for e in examples]
    with progress_bar(len(texts), desc) as bar:
        start = time.perf_counter()
        preds, probs = classify(model, codec, texts, batch_size, method, bar.update, recheck=recheck)
        seconds = time.perf_counter() - start
    extra: dict = {}
    if method == "score" and texts:
        gold = [codec.labels.index(e.label) for e in examples]
        scaled = scale(probs, calibration.temperature) if calibration else probs
        extra["calibration"] = {
            "temperature": calibration.temperature if calibration else None,
            "fitted_on": calibration.fitted_on if calibration else None,
            "ece_before": ece(probs, gold),
            "ece_after": ece(scaled, gold) if calibration else None,
            "reliability_before": reliability(probs, gold),
            "reliability_after": reliability(scaled, gold) if calibration else None,
        }
        if calibration or priors is not None:
            probs, preds, used = adjust(probs, codec.labels, calibration, priors)
            if used is not None:  # the priors move the probabilities written: their ECE too
                extra["calibration"]["ece_with_priors"] = ece(probs, gold)
                extra["priors"] = {
                    "mode": "auto (EM)" if priors == "auto" else "given",
                    **dict(zip(codec.labels, used)),
                }
    metrics = classification_metrics([e.label for e in examples], preds, codec.labels)
    metrics.update(
        method=method, seconds=seconds, examples_per_second=len(texts) / seconds if seconds else 0.0, **extra
    )
    metrics.update(uncertainty(examples, preds, codec.labels))
    return metrics, preds, probs


def uncertainty(examples: list[Example], preds: list[str], labels: list[str]) -> dict:
    """Bootstrap 95% intervals of accuracy, weighted F1 and macro F1 (`intervals`), and for the test rows
    of a mixture the same for every source (`by_source`)."""
    from finsent.evaluation.uncertainty import bootstrap_intervals

    if not examples:
        return {}
    out = {"intervals": bootstrap_intervals([e.label for e in examples], preds, labels)}
    sources = list(dict.fromkeys(e.source for e in examples if e.source))
    if len(sources) > 1:
        out["by_source"] = {
            src: bootstrap_intervals(
                [e.label for e in examples if e.source == src],
                [p for e, p in zip(examples, preds) if e.source == src],
                labels,
            )
            for src in sources
        }
    return out


def format_by_source(metrics: dict) -> str:
    """The per-source table of a mixture's evaluation, each figure with its 95% interval."""
    from finsent.evaluation.benchtable import format_interval

    rows = {**metrics.get("by_source", {}), "all": metrics.get("intervals")}
    if "by_source" not in metrics:
        return ""
    width = max(len(k) for k in rows)
    lines = [f"{'source':<{width}}  {'n':>5}  {'accuracy':<22}  {'weighted F1':<22}  macro F1"]
    for name, r in rows.items():
        lines.append(
            f"{name:<{width}}  {r['n']:>5}  {format_interval(r['accuracy']):<22}  "
            f"{format_interval(r['weighted_f1']):<22}  {format_interval(r['macro_f1'])}"
        )
    return "\n".join(lines)


def write_evaluation(
    out: str | Path,
    metrics: dict,
    examples: list[Example],
    preds: list[str],
    probs: list[list[float]],
    labels: list[str],
    title: str = "",
) -> str:
    """metrics.json, report.txt, predictions.csv, errors.csv (the misclassified sentences, most confident
    first), confusion_matrix.png and reliability.png in `out`; returns the report."""
    out = Path(out)
    report = format_report(metrics, title)
    if metrics.get("by_source"):
        report += "\n" + format_by_source(metrics)
    write_json(out / METRICS_FILE, metrics)
    with atomic_path(out / PREDICTIONS_FILE) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        mixed = any(e.source for e in examples)  # a mixture's rows say their source
        w.writerow(
            ["source_row", "text", "label", "predicted", *(f"p_{lab}" for lab in labels)]
            + (["source"] if mixed else [])
        )
        for e, p, pr in zip(examples, preds, probs):
            w.writerow(
                [e.source_row, e.text, e.label, p, *(f"{x:.6f}" for x in pr)] + ([e.source] if mixed else [])
            )
    plot_confusion(metrics, out / CONFUSION_PLOT, title or f"accuracy {metrics['accuracy']:.3f}")
    mistakes = [(e, p, pr) for e, p, pr in zip(examples, preds, probs) if p != e.label]
    with atomic_path(out / ERRORS_FILE) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)  # every misclassified sentence, most confident first
        w.writerow(
            ["source_row", "text", "label", "predicted", "confidence", *(f"p_{lab}" for lab in labels)]
        )
        for e, p, pr in sorted(mistakes, key=lambda m: -max(m[2] or [0])):
            w.writerow([e.source_row, e.text, e.label, p, f"{max(pr or [0]):.6f}", *(f"{x:.6f}" for x in pr)])
    cal = metrics.get("calibration")
    if cal:
        from finsent.modeling.calibration import plot_reliability

        plot_reliability(
            cal["reliability_before"],
            cal["reliability_after"],
            out / RELIABILITY_PLOT,
            title or "reliability",
        )
        report += "\n" + format_calibration(cal)
    if mistakes:
        report += "\n" + format_mistakes(mistakes, labels)
    write_text(out / REPORT_TXT, report + "\n")
    return report


def format_calibration(cal: dict) -> str:
    line = f"calibration: ECE {cal['ece_before']:.3f}"
    if cal.get("ece_after") is not None:
        line += f" -> {cal['ece_after']:.3f} after temperature {cal['temperature']:.3f} (fitted on {cal['fitted_on']})"
    if cal.get("ece_with_priors") is not None:
        line += f"; {cal['ece_with_priors']:.3f} with the priors (the probabilities written)"
    return line


def format_mistakes(mistakes: list, labels: list[str], n: int = 10) -> str:
    """The `n` most confident mistakes, one line each (the errors file has them all)."""
    top = sorted(mistakes, key=lambda m: -max(m[2] or [0]))[:n]
    lines = [f"most confident mistakes ({len(mistakes)} in {ERRORS_FILE}):"]
    for e, p, pr in top:
        text = e.text if len(e.text) <= 110 else e.text[:107] + "..."
        lines.append(f"  {max(pr or [0]):.3f} {p} (true {e.label}) row {e.source_row}: {text}")
    return "\n".join(lines)
