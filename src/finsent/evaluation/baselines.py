"""Two baselines a fine-tuned LM has to beat, trained only on the training rows they are given.

- the majority class: what a model scores that has learnt nothing but the label shares;
- TF-IDF over word 1-2 grams + logistic regression: a minute-free bag-of-words model, strong on
  headlines whose sentiment sits in a few words ("rose", "fell", "cut ... jobs").

Training rows are (text, label) pairs or `finsent.data.dataset.Example`s. The regularisation C of the
logistic regression is 1.0 unless the caller picks it with `choose_c`, which looks only at a held-out part
of the TRAINING rows (never the test set, whose score would otherwise be optimistic).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotations: the rows are read by duck typing (.text, .label)
    from finsent.data.dataset import Example

    Row = tuple[str, str] | Example

__all__ = ["C_GRID", "choose_c", "majority_baseline", "tfidf_logreg_baseline"]

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


def _pairs(rows: Iterable[Row]) -> tuple[list[str], list[str]]:
    """(texts, labels) of the training rows: Example-like objects (.text, .label) or (text, label) pairs."""
    texts: list[str] = []
    labels: list[str] = []
    for i, row in enumerate(rows):
        if hasattr(row, "text") and hasattr(row, "label"):
            text, label = row.text, row.label
        else:
            try:
                text, label = row
            except (TypeError, ValueError):
                raise ValueError(
                    f"training row {i}: expected (text, label) or an Example, got {row!r}"
                ) from None
        texts.append(str(text))
        labels.append(str(label))
    if not texts:
        raise ValueError("baseline: no training rows")
    return texts, labels


def majority_baseline(train_rows: Iterable[Row], test_texts: Sequence[str]) -> list[str]:
    """The most frequent training label for every test text (a tie goes to the alphabetically first label,
    so the result never depends on row order)."""
    _, labels = _pairs(train_rows)
    counts = Counter(labels)
    top = max(counts.values())
    label = min(lab for lab, c in counts.items() if c == top)
    return [label] * len(test_texts)


def _pipeline(C: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    # sublinear tf: a word said twice in a headline is not twice the evidence; class_weight=None keeps
    # the training label shares as the prior, as the fine-tuned model sees them
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(C=C, max_iter=1000, class_weight=None),
    )


def tfidf_logreg_baseline(
    train_rows: Iterable[Row], test_texts: Sequence[str], *, C: float = 1.0
) -> list[str]:
    """Fit TF-IDF (word 1-2 grams, sublinear tf) + logistic regression on the training rows; predict the
    test texts."""
    texts, labels = _pairs(train_rows)
    if not test_texts:
        return []
    if len(set(labels)) < 2:  # logistic regression needs two classes; one class can only predict itself
        return [labels[0]] * len(test_texts)
    model = _pipeline(C).fit(texts, labels)
    return [str(p) for p in model.predict(list(test_texts))]


def choose_c(
    train_rows: Iterable[Row], grid: Sequence[float] = C_GRID, *, holdout: float = 0.2, seed: int = 0
) -> float:
    """The C of `grid` with the best weighted F1 on a seeded held-out part (`holdout`) of the training rows,
    fitted on the rest; a tie goes to the earlier C of the grid. Use it as
    `tfidf_logreg_baseline(train, test_texts, C=choose_c(train))`: the final fit uses every training row."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    texts, labels = _pairs(train_rows)
    if not grid:
        raise ValueError("choose_c: empty grid")
    try:  # stratified, so that a rare label is in both parts
        x_fit, x_val, y_fit, y_val = train_test_split(
            texts, labels, test_size=holdout, random_state=seed, stratify=labels
        )
    except ValueError:  # a label with a single row cannot be stratified: split without it
        x_fit, x_val, y_fit, y_val = train_test_split(texts, labels, test_size=holdout, random_state=seed)
    if len(set(y_fit)) < 2:
        return float(grid[0])  # nothing to fit on: any C predicts the one label
    best, best_score = float(grid[0]), -1.0
    for c in grid:
        pred = _pipeline(c).fit(x_fit, y_fit).predict(x_val)
        score = f1_score(y_val, pred, average="weighted", zero_division=0)
        if score > best_score:
            best, best_score = float(c), score
    return best
