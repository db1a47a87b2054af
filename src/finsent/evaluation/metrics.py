"""Classification metrics as plain functions of (true labels, predicted labels): no model needed.

An unparsed answer (the generate method's output that names no label) is kept as the predicted value
UNPARSED: it counts as wrong, appears as its own confusion-matrix column, and is never folded into a class.
"""

from __future__ import annotations

import warnings

from finsent.core.labels import UNPARSED

__all__ = ["UNPARSED", "classification_metrics", "format_report", "plot_confusion"]


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """accuracy, macro/weighted F1, per-label precision/recall/f1/support/accuracy, confusion matrix.

    Computed with scikit-learn; every number is cast to a Python int/float so the dict JSON-dumps as is.
    """
    n = len(y_true)
    if n != len(y_pred):
        raise ValueError(f"{n} true labels but {len(y_pred)} predictions")
    labels = list(labels)
    unparsed = sum(p == UNPARSED for p in y_pred)
    # an UNPARSED prediction counts as wrong (it never equals a true label) and gets its own
    # confusion-matrix column, only when it occurs; it is never folded into a class
    columns = labels + ([UNPARSED] if unparsed else [])
    if not n:
        zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "accuracy": 0.0}
        return {
            "accuracy": 0.0,
            "macro_f1": 0.0,
            "weighted_f1": 0.0,
            "per_label": {lab: dict(zero) for lab in labels},
            "confusion_matrix": {
                "labels": labels,
                "columns": columns,
                "matrix": [[0] * len(columns) for _ in labels],
            },
            "n": 0,
            "unparsed": unparsed,
        }

    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    # zero_division=0: precision of a label never predicted (and recall/F1 of a label absent from y_true) is 0.0
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    per_label = {
        lab: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            # "accuracy per label" as the notebooks print it: the share of that label's sentences classified right
            "accuracy": float(recall[i]),
        }
        for i, lab in enumerate(labels)
    }
    # macro F1 averages only over the labels PRESENT in y_true (a label with no test sentences is left out)
    present = [lab for lab in labels if per_label[lab]["support"]]
    macro_f1 = (
        float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)) if present else 0.0
    )
    # weighted F1 weights each label's F1 by its support, divided by all n sentences
    weighted_f1 = float(sum(float(f1[i]) * int(support[i]) for i in range(len(labels))) / n)
    # rows: the labels (true); columns: the labels, then UNPARSED when it occurs (predicted).
    # sklearn wants one label list for both axes, so take the label rows of the square matrix.
    if present:
        with warnings.catch_warnings():  # a one-label set gives a 1x1 matrix on purpose: not worth a warning
            warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
            matrix = confusion_matrix(y_true, y_pred, labels=columns)[: len(labels)].tolist()
    else:  # sklearn refuses a label list with none of y_true in it: every row is empty
        matrix = [[0] * len(columns) for _ in labels]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        "per_label": per_label,
        "confusion_matrix": {
            "labels": labels,
            "columns": columns,
            "matrix": [[int(v) for v in row] for row in matrix],
        },
        "n": n,
        "unparsed": unparsed,
    }


def format_report(m: dict, title: str = "") -> str:
    """A readable summary: accuracy, a per-label table in scikit-learn's layout, the confusion matrix."""
    labels = m["confusion_matrix"]["labels"]
    width = max(12, *(len(lab) + 2 for lab in labels))
    lines = [title] if title else []
    lines.append(
        f"accuracy {m['accuracy']:.3f}   macro F1 {m['macro_f1']:.3f}   weighted F1 {m['weighted_f1']:.3f}"
        f"   n={m['n']}" + (f"   unparsed={m['unparsed']}" if m["unparsed"] else "")
    )
    lines.append(f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}{'accuracy':>10}")
    for lab in labels:
        p = m["per_label"][lab]
        lines.append(
            f"{lab:<{width}}{p['precision']:>10.3f}{p['recall']:>10.3f}{p['f1']:>10.3f}"
            f"{p['support']:>10}{p['accuracy']:>10.3f}"
        )
    cols = m["confusion_matrix"]["columns"]
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(f"{'':<{width}}" + "".join(f"{c:>10}" for c in cols))
    for lab, row in zip(labels, m["confusion_matrix"]["matrix"]):
        lines.append(f"{lab:<{width}}" + "".join(f"{v:>10}" for v in row))
    return "\n".join(lines)


def plot_confusion(m: dict, path, title: str = "") -> None:
    """Save the confusion matrix as a PNG (written atomically), drawn with scikit-learn's ConfusionMatrixDisplay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    from finsent.core.fsio import atomic_path

    cm = m["confusion_matrix"]
    labels, columns = cm["labels"], cm["columns"]
    # ConfusionMatrixDisplay draws a square matrix with one label list: pad the rectangular one (rows: labels,
    # columns: labels + UNPARSED when it occurs) with empty rows for the extra columns, then crop them away.
    square = np.zeros((len(columns), len(columns)), dtype=int)
    square[: len(labels)] = np.asarray(cm["matrix"], dtype=int).reshape(len(labels), len(columns))
    fig, ax = plt.subplots(figsize=(1.3 * len(columns) + 2, 1.2 * len(labels) + 1.5))
    disp = ConfusionMatrixDisplay(confusion_matrix=square, display_labels=columns)
    disp.plot(ax=ax, cmap="Blues", colorbar=False, values_format="d")
    for text in disp.text_[len(labels) :].ravel():
        text.remove()
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {m['accuracy']:.3f}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
