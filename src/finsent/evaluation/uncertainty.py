"""How sure a test score is: bootstrap intervals for accuracy and F1, and paired tests of two models.

A score on a few hundred sentences moves by a few points from one test sample to another, so a benchmark
table gives every score with a 95% interval, and says whether two models on the SAME test sentences really
differ (McNemar's exact test on the sentences one model gets right and the other wrong, and a paired
bootstrap of the weighted-F1 difference).

The point estimates come from `metrics.classification_metrics` (scikit-learn), so they are the numbers that
metrics.json holds. The resamples are scored from per-resample confusion matrices built with one numpy
`bincount`, by the same conventions: an UNPARSED (or any out-of-label) prediction counts as wrong; weighted
F1 divides by all n sentences; macro F1 averages over the labels present in that resample's y_true. Calling
scikit-learn's f1_score once per resample costs ~1.5 ms, i.e. minutes for a table of several models and
test sets on a 2-core machine; tests/test_benchtable.py checks the two agree on random resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

from finsent.evaluation.metrics import classification_metrics

__all__ = [
    "METRICS",
    "bootstrap_intervals",
    "mcnemar_exact",
    "paired_bootstrap_f1",
    "paired_tests",
    "resample_indices",
]

METRICS = ("accuracy", "weighted_f1", "macro_f1")
_CHUNK = 100  # resamples scored at once: bounds memory to ~100 x n x 8 bytes per array


def resample_indices(n: int, n_resamples: int = 1000, seed: int = 0):
    """The (n_resamples, n) row indices drawn with replacement: the same seed and n give the same draws, so
    every model scored on one test set is resampled identically (the intervals are paired too)."""
    import numpy as np

    if n < 1:
        raise ValueError("bootstrap: the test set is empty")
    if n_resamples < 1:
        raise ValueError(f"bootstrap: n_resamples must be 1 or more, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _encode(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]):
    """Label strings -> integer codes: true labels 0..K-1, a prediction outside the labels -> K (wrong)."""
    import numpy as np

    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({t for t in y_true if t not in index})
    if unknown:
        raise ValueError(f"true labels {unknown} are not in the label set {list(labels)}")
    k = len(index)
    t = np.fromiter((index[x] for x in y_true), dtype=np.int64, count=len(y_true))
    p = np.fromiter((index.get(x, k) for x in y_pred), dtype=np.int64, count=len(y_pred))
    return t, p, k


def _scores(t, p, k: int, idx) -> dict:
    """accuracy, weighted F1 and macro F1 of every resample (rows of `idx`), as arrays of shape (B,)."""
    import numpy as np

    b, n = idx.shape
    c = k + 1  # prediction columns: the labels, then "wrong answer outside the labels"
    out = {m: np.empty(b) for m in METRICS}
    codes = t * c + p
    for start in range(0, b, _CHUNK):
        rows = idx[start : start + _CHUNK]
        m = len(rows)
        flat = (np.arange(m)[:, None] * (k * c) + codes[rows]).ravel()
        cm = np.bincount(flat, minlength=m * k * c).reshape(m, k, c)  # rows true, columns predicted
        diag = np.arange(k)
        tp = cm[:, diag, diag]
        support = cm.sum(axis=2)
        predicted = cm[:, :, :k].sum(axis=1)
        denom = 2 * tp + (predicted - tp) + (support - tp)  # 2tp + fp + fn
        # zero_division=0, as metrics.py: a label neither in y_true nor predicted scores F1 0
        f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)
        present = support > 0  # never all False: every resample holds n >= 1 true labels
        sl = slice(start, start + m)
        out["accuracy"][sl] = tp.sum(axis=1) / n
        out["weighted_f1"][sl] = (f1 * support).sum(axis=1) / n
        out["macro_f1"][sl] = (f1 * present).sum(axis=1) / present.sum(axis=1)
    return out


def _interval(values, confidence: float) -> tuple[float, float]:
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])  # the percentile bootstrap
    return float(low), float(high)


def bootstrap_intervals(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """{'n', 'accuracy', 'weighted_f1', 'macro_f1'}: each metric as {'value', 'low', 'high'}, the value
    from `classification_metrics` and the percentile-bootstrap interval from `n_resamples` resamples."""
    t, p, k = _encode(y_true, y_pred, labels)
    idx = resample_indices(len(t), n_resamples, seed)
    boot = _scores(t, p, k, idx)
    point = classification_metrics(list(y_true), list(y_pred), list(labels))
    out: dict = {"n": len(t)}
    for m in METRICS:
        low, high = _interval(boot[m], confidence)
        out[m] = {"value": point[m], "low": low, "high": high}
    return out


def _exact_binomial_p(k: int, n: int) -> float:
    """Two-sided exact binomial p-value for k successes of n at p=0.5 (scipy's binomtest)."""
    if n == 0:
        return 1.0  # no discordant sentence: nothing tells the two models apart
    # scipy is a hard dependency of scikit-learn, which finsent requires, so it is always installed
    from scipy.stats import binomtest

    return float(binomtest(k, n, 0.5, alternative="two-sided").pvalue)


def mcnemar_exact(y_true: Sequence[str], pred_a: Sequence[str], pred_b: Sequence[str]) -> dict:
    """McNemar's exact test: of the sentences exactly one model gets right, is A's share 1/2?

    Returns {'n', 'a_right_b_wrong', 'a_wrong_b_right', 'p_value'}; p is the two-sided exact binomial
    p-value of the discordant counts (1.0 when there are none).
    """
    if not len(y_true) == len(pred_a) == len(pred_b):
        raise ValueError(
            f"paired test: {len(y_true)} true labels, {len(pred_a)} and {len(pred_b)} predictions"
        )
    b = sum(a == y and p != y for y, a, p in zip(y_true, pred_a, pred_b))
    c = sum(a != y and p == y for y, a, p in zip(y_true, pred_a, pred_b))
    return {
        "n": len(y_true),
        "a_right_b_wrong": b,
        "a_wrong_b_right": c,
        "p_value": _exact_binomial_p(b, b + c),
    }


def paired_bootstrap_f1(
    y_true: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    labels: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Weighted F1 of A minus that of B, both scored on the same resamples of the test sentences.

    Returns {'value', 'low', 'high', 'p_value'}: the difference on the whole test set, its percentile
    interval, and a two-sided bootstrap p-value (twice the smaller share of resamples on either side of
    0, capped at 1; its resolution is 1/n_resamples).
    """
    import numpy as np

    t, pa, k = _encode(y_true, pred_a, labels)
    _, pb, _ = _encode(y_true, pred_b, labels)
    idx = resample_indices(len(t), n_resamples, seed)
    diff = _scores(t, pa, k, idx)["weighted_f1"] - _scores(t, pb, k, idx)["weighted_f1"]
    y, labs = list(y_true), list(labels)
    value = (
        classification_metrics(y, list(pred_a), labs)["weighted_f1"]
        - classification_metrics(y, list(pred_b), labs)["weighted_f1"]
    )
    low, high = _interval(diff, confidence)
    p = min(1.0, 2 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0))))
    return {"value": value, "low": low, "high": high, "p_value": p}


def paired_tests(
    y_true: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    labels: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """{'mcnemar': mcnemar_exact(...), 'weighted_f1_diff': paired_bootstrap_f1(...)} for A against B."""
    return {
        "mcnemar": mcnemar_exact(y_true, pred_a, pred_b),
        "weighted_f1_diff": paired_bootstrap_f1(
            y_true, pred_a, pred_b, labels, n_resamples=n_resamples, seed=seed, confidence=confidence
        ),
    }
