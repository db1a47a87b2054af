"""How far to trust a probability, and what to do when the label shares change.

- Temperature scaling (Guo et al. 2017): one number T, fitted on the eval split after training, divides
  the label scores before the softmax. It changes probabilities, never the predicted label. Saved as
  calibration.json beside the adapter (training/train.py) and copied into a merged model
  (deploy/merge.py).
- Expected calibration error (ECE, 15 equal-width confidence bins) and the reliability diagram.
- Prior shift: a model trained on a balanced split over-predicts the minority labels on data that is,
  say, 70% neutral. Given the new label shares, each probability is re-weighted by new share / training
  share and renormalised; with `auto` the new shares are estimated on the unlabeled input itself by EM
  (Saerens, Latinne and Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori
  probabilities"). These change the predicted labels; that is their point.

scikit-learn has no temperature scaling or prior-shift EM for precomputed probabilities
(CalibratedClassifierCV refits an estimator), so the few lines are written here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finsent.core.artefacts import CALIBRATION_FILE
from finsent.core.errors import FinsentError
from finsent.core.labels import best_label, normalise_label

BINS = 15


@dataclass
class Calibration:
    temperature: float = 1.0
    train_priors: list[float] = field(default_factory=list)  # label shares of the training split
    labels: list[str] = field(default_factory=list)
    fitted_on: str = ""
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None

    def save(self, folder: str | Path) -> Path:
        from finsent.core.fsio import write_json

        return write_json(Path(folder) / CALIBRATION_FILE, asdict(self))

    @classmethod
    def load(cls, folder: str | Path | None, labels: Sequence[str] | None = None) -> Calibration | None:
        """The calibration saved in `folder` (None without one); with `labels`, for those labels
        (for_labels: --labels may name fewer, or reorder them)."""
        path = Path(folder) / CALIBRATION_FILE if folder else None
        if not path or not path.is_file():
            return None
        raw = json.loads(path.read_text())
        loaded = cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        return loaded.for_labels(labels) if labels is not None else loaded

    def for_labels(self, labels: Sequence[str]) -> Calibration:
        """This calibration for a model asked for `labels` (--labels), whose order or number may differ
        from those it was fitted with: the training shares of those labels, renormalised, in their order
        (none, so uniform, when a label is new to it); the temperature holds either way."""
        labels = list(labels)
        if not self.labels or labels == self.labels:
            return self
        mine = [normalise_label(x) for x in self.labels] if len(self.train_priors) == len(self.labels) else []
        asked = [normalise_label(x) for x in labels]  # (Positive is positive, as everywhere else)
        shares = [self.train_priors[mine.index(x)] for x in asked if x in mine]
        total = sum(shares)
        fitted = [s / total for s in shares] if len(shares) == len(labels) and total > 0 else []
        return dataclasses.replace(self, train_priors=fitted, labels=labels)


def _log(probs):
    import numpy as np

    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))


def _softmax(z):
    import numpy as np

    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def scale(probs, temperature: float):
    """softmax(log p / T): the same as dividing the label scores by T (the shift per row cancels)."""
    return _softmax(_log(probs) / temperature)


def nll(probs, gold: Sequence[int]) -> float:
    import numpy as np

    p = np.asarray(probs, dtype=np.float64)
    return float(-_log(p[np.arange(len(gold)), gold]).mean())


def fit_temperature(probs, gold: Sequence[int]) -> float:
    """The T minimising the negative log-likelihood of the gold labels (a 1-D convex problem in log T)."""
    from scipy.optimize import minimize_scalar

    logp = _log(probs)
    idx = list(range(len(gold)))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[idx, gold] - _logsumexp(z)).mean())

    return float(math.exp(minimize_scalar(loss, bounds=(-4.0, 4.0), method="bounded").x))


def _logsumexp(z):
    import numpy as np

    return np.log(np.exp(z).sum(axis=1))


def ece(probs, gold: Sequence[int], bins: int = BINS) -> float:
    """Expected calibration error: |accuracy - confidence| per confidence bin, weighted by bin size."""
    n = len(probs)
    return (
        sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, gold, bins)) / n
        if n
        else 0.0
    )


def reliability(probs, gold: Sequence[int], bins: int = BINS) -> list[dict]:
    """Per non-empty bin: its range, count, mean confidence and accuracy (the diagram's points)."""
    import numpy as np

    p = np.asarray(probs, dtype=np.float64)
    conf, hit = p.max(axis=1), p.argmax(axis=1) == np.asarray(gold)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return [
        {
            "low": b / bins,
            "high": (b + 1) / bins,
            "n": int((which == b).sum()),
            "confidence": float(conf[which == b].mean()),
            "accuracy": float(hit[which == b].mean()),
        }
        for b in range(bins)
        if (which == b).any()
    ]


def reweight(probs, train_priors: Sequence[float], priors: Sequence[float]):
    """p(y|x) * priors(y) / train_priors(y), renormalised (Bayes' rule with the new label shares)."""
    import numpy as np

    w = np.asarray(priors, dtype=np.float64) / np.clip(
        np.asarray(train_priors, dtype=np.float64), 1e-12, None
    )
    q = np.asarray(probs, dtype=np.float64) * w
    return q / np.clip(q.sum(axis=1, keepdims=True), 1e-300, None)


def em_priors(probs, train_priors: Sequence[float], iterations: int = 1000, tol: float = 1e-8) -> list[float]:
    """Saerens et al. (2002): alternate re-weighting the posteriors with the current shares and taking the
    shares as the mean re-weighted posterior, until they stop moving."""
    import numpy as np

    p = np.asarray(probs, dtype=np.float64)
    prior = np.asarray(train_priors, dtype=np.float64)
    for _ in range(iterations):
        new = reweight(p, train_priors, prior).mean(axis=0)
        if np.abs(new - prior).max() < tol:
            prior = new
            break
        prior = new
    return prior.tolist()


def parse_priors(spec: str | None, labels: Sequence[str]) -> list[float] | str | None:
    """--priors: None/'none', 'auto' (EM on the input), or one share per label ('0.15,0.7,0.15' or
    'positive=0.15,neutral=0.7,negative=0.15'); shares are normalised to sum to 1."""
    if spec is None or spec.strip() in ("", "none"):
        return None
    if spec.strip() == "auto":
        return "auto"
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    try:
        if all("=" in p for p in parts):
            named = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in parts)}
            if set(named) != set(labels):
                raise ValueError
            shares = [named[lab] for lab in labels]
        else:
            shares = [float(p) for p in parts]
    except ValueError:
        shares = []
    if len(shares) != len(labels) or any(s < 0 or not math.isfinite(s) for s in shares) or not sum(shares):
        raise FinsentError(
            f"--priors: {spec!r} is not none, auto or {len(labels)} non-negative shares "
            f"(one per label: {', '.join(labels)})"
        )
    return [s / sum(shares) for s in shares]


def prior_offsets(labels: Sequence[str], calibration: Calibration | None, priors) -> list[float] | None:
    """What fixed `priors` add to each label's raw log-score, in the scorer's units (the temperature
    divides the scores first, so it multiplies the offset back): adjust()'s re-weighting as a shift, for
    the bf16 guard (scoring.Recheck). None without priors, or with 'auto' (estimated after scoring)."""
    import math

    if priors is None or isinstance(priors, str):
        return None
    train = list((calibration.train_priors if calibration else []) or []) or [1 / len(labels)] * len(labels)
    t = calibration.temperature if calibration else 1.0
    return [t * math.log(max(p, 1e-12) / max(q, 1e-12)) for p, q in zip(priors, train)]


def adjust(
    probs,
    labels: Sequence[str],
    calibration: Calibration | None = None,
    priors: list[float] | str | None = None,
    train_priors: Sequence[float] | None = None,
) -> tuple[list[list[float]], list[str], list[float] | None]:
    """Calibrated (and, with `priors`, prior-corrected) probabilities, their labels, and the priors used.
    The training shares come from `train_priors`, else the calibration, else are taken as uniform
    (finsent's default split is balanced)."""
    import numpy as np

    p = np.asarray(probs, dtype=np.float64)
    if not len(p):
        return [], [], None
    if calibration and calibration.temperature != 1.0:
        p = scale(p, calibration.temperature)
    used = None
    if priors is not None:
        train = list(train_priors or (calibration.train_priors if calibration else []) or [])
        train = train or [1 / len(labels)] * len(labels)
        used = em_priors(p, train) if priors == "auto" else list(priors)
        p = reweight(p, train, used)
    rows = p.tolist()
    return rows, [best_label(r, labels) for r in rows], used


def fit(
    probs, gold_labels: Sequence[str], labels: Sequence[str], train_counts: dict, split: str
) -> Calibration:
    """A Calibration fitted on (probs, gold) of a held-out split: temperature, NLL and ECE before/after."""
    gold = [labels.index(g) for g in gold_labels]
    total = sum(train_counts.get(lab, 0) for lab in labels)
    t = fit_temperature(probs, gold) if len(gold) else 1.0
    scaled = scale(probs, t) if len(gold) else probs
    return Calibration(
        temperature=t,
        train_priors=[train_counts.get(lab, 0) / total for lab in labels] if total else [],
        labels=list(labels),
        fitted_on=f"{split} ({len(gold)} sentences)",
        nll_before=nll(probs, gold) if gold else None,
        nll_after=nll(scaled, gold) if gold else None,
        ece_before=ece(probs, gold) if gold else None,
        ece_after=ece(scaled, gold) if gold else None,
    )


def plot_reliability(before: list[dict], after: list[dict] | None, path: Path, title: str = "") -> None:
    """The reliability diagram: accuracy against confidence per bin, before and after scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finsent.core.fsio import atomic_path

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfectly calibrated")
    for bins, name in ((before, "before"), (after, "after temperature scaling")):
        if bins:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label=name)
    ax.set_xlabel("confidence (highest probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title or "reliability")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
