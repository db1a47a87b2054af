"""Classification metrics as plain functions of (true labels, predicted labels): no model needed.

An unparsed answer (the generate method's output that names no label) is kept as the predicted value
UNPARSED: it counts as wrong, appears as its own confusion-matrix column, and is never folded into a class.
"""

from __future__ import annotations

UNPARSED = "unparsed"


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """accuracy, macro/weighted F1, per-label precision/recall/f1/support/accuracy, confusion matrix."""
    n = len(y_true)
    if n != len(y_pred):
        raise ValueError(f"{n} true labels but {len(y_pred)} predictions")
    correct = sum(t == p for t, p in zip(y_true, y_pred))
    per_label = {}
    for lab in labels:
        tp = sum(t == lab and p == lab for t, p in zip(y_true, y_pred))
        support = sum(t == lab for t in y_true)
        predicted = sum(p == lab for p in y_pred)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        # "accuracy per label" as the notebooks print it: the share of that label's sentences classified right
        per_label[lab] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "accuracy": recall,
        }
    present = [lab for lab in labels if per_label[lab]["support"]]
    macro_f1 = sum(per_label[lab]["f1"] for lab in present) / len(present) if present else 0.0
    weighted_f1 = sum(per_label[lab]["f1"] * per_label[lab]["support"] for lab in labels) / n if n else 0.0
    unparsed = sum(p == UNPARSED for p in y_pred)
    columns = labels + ([UNPARSED] if unparsed else [])
    matrix = [
        [sum(t == row and p == col for t, p in zip(y_true, y_pred)) for col in columns] for row in labels
    ]
    return {
        "accuracy": correct / n if n else 0.0,
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        "per_label": per_label,
        "confusion_matrix": {"labels": labels, "columns": columns, "matrix": matrix},
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
    """Save the confusion matrix as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finsent.fsio import atomic_path

    cm = m["confusion_matrix"]
    fig, ax = plt.subplots(figsize=(1.3 * len(cm["columns"]) + 2, 1.2 * len(cm["labels"]) + 1.5))
    ax.imshow(cm["matrix"], cmap="Blues")
    ax.set_xticks(range(len(cm["columns"])), cm["columns"])
    ax.set_yticks(range(len(cm["labels"])), cm["labels"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(r) for r in cm["matrix"]) or 1
    for i, row in enumerate(cm["matrix"]):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")
    ax.set_title(title or f"accuracy {m['accuracy']:.3f}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
