"""Evaluate a model (optionally with an adapter) on a data split; write metrics, predictions, a plot.

Used by `finsent evaluate` (cli.py) and `finsent run` (run.py).

finsent evaluate --data ../shared/data/kaggle_all_data/all-data.csv --split notebook --subset test --out runs/zs
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from finsent.console import progress_bar
from finsent.data import Example
from finsent.fsio import atomic_path, write_json, write_text
from finsent.metrics import classification_metrics, format_report, plot_confusion


def run_evaluation(
    model,
    codec,
    examples: list[Example],
    batch_size: int = 32,
    method: str = "score",
    desc: str = "evaluating",
) -> tuple[dict, list[str], list[list[float]]]:
    """Classify `examples`; return metrics (with examples_per_second), predictions and probabilities."""
    from finsent.scoring import classify

    texts = [e.text for e in examples]
    with progress_bar(len(texts), desc) as bar:
        start = time.perf_counter()
        preds, probs = classify(model, codec, texts, batch_size, method, progress=bar.update)
        seconds = time.perf_counter() - start
    metrics = classification_metrics([e.label for e in examples], preds, codec.labels)
    metrics.update(
        method=method, seconds=seconds, examples_per_second=len(texts) / seconds if seconds else 0.0
    )
    return metrics, preds, probs


def write_evaluation(
    out: str | Path,
    metrics: dict,
    examples: list[Example],
    preds: list[str],
    probs: list[list[float]],
    labels: list[str],
    title: str = "",
) -> str:
    """metrics.json, report.txt, predictions.csv and confusion_matrix.png in `out`; returns the report."""
    out = Path(out)
    report = format_report(metrics, title)
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.txt", report + "\n")
    with atomic_path(out / "predictions.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["source_row", "text", "label", "predicted", *(f"p_{lab}" for lab in labels)])
        for e, p, pr in zip(examples, preds, probs):
            w.writerow([e.source_row, e.text, e.label, p, *(f"{x:.6f}" for x in pr)])
    plot_confusion(metrics, out / "confusion_matrix.png", title or f"accuracy {metrics['accuracy']:.3f}")
    return report
