"""Temperature scaling, ECE, prior shift (Saerens et al. 2002) and how evaluate/predict apply them.

The references are written out independently: a grid search for the temperature, ECE by explicit loops,
Bayes' rule by hand, and data drawn from known class-conditional distributions for EM."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from finsent.core.errors import FinsentError
from finsent.modeling.calibration import (
    Calibration,
    adjust,
    ece,
    em_priors,
    fit,
    fit_temperature,
    parse_priors,
    reweight,
    scale,
)

LABELS = ["positive", "neutral", "negative"]


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _overconfident(n=4000, t_true=2.5, seed=0):
    """Labels drawn from softmax(z); the 'model' reports softmax(z * t_true): too sure by t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    gold = [int(rng.choice(3, p=p)) for p in _softmax(z)]
    return _softmax(z * t_true), gold


def test_temperature_recovers_the_overconfidence_and_lowers_ece():
    probs, gold = _overconfident()
    t = fit_temperature(probs, gold)
    # the reference: the NLL-minimising temperature on a fine grid
    grid = np.linspace(1.0, 4.0, 601)
    nll = [-np.log(scale(probs, g)[np.arange(len(gold)), gold]).mean() for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(nll))], abs=0.01)
    assert t == pytest.approx(2.5, rel=0.1)
    assert ece(scale(probs, t), gold) < ece(probs, gold) / 3
    # the predicted labels never change
    assert (scale(probs, t).argmax(1) == probs.argmax(1)).all()


def test_ece_by_hand():
    probs = [[0.9, 0.05, 0.05], [0.95, 0.03, 0.02], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]]
    gold = [0, 1, 1, 0]
    # bins of width 1/15: 0.9 and 0.95 share bin 13 (0.867-0.933)? 0.9*15 = 13.5 -> 13, 0.95*15 = 14.25 -> 14
    expected = (abs(1 - 0.9) + abs(0 - 0.95) + abs(1 - 0.5) + abs(0 - 0.7)) / 4
    assert ece(probs, gold) == pytest.approx(expected)


def test_reweight_is_bayes_rule():
    p = np.array([[0.5, 0.3, 0.2]])
    out = reweight(p, [1 / 3] * 3, [0.1, 0.8, 0.1])
    raw = np.array([0.5 * 0.1, 0.3 * 0.8, 0.2 * 0.1]) * 3
    np.testing.assert_allclose(out[0], raw / raw.sum())


def test_em_recovers_shifted_priors():
    """Scores from fixed class-conditional Gaussians; the classifier's posteriors assume equal shares;
    the test set is 70% neutral. EM from the posteriors alone finds the shares."""
    rng = np.random.default_rng(1)
    means = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    shares = np.array([0.15, 0.7, 0.15])
    y = rng.choice(3, size=6000, p=shares)
    x = means[y] + rng.normal(0, 1.2, (len(y), 3))
    # exact posteriors under equal priors for isotropic Gaussians: softmax(x . mu / sigma^2)
    post = _softmax(x @ means.T / 1.2**2)
    est = em_priors(post, [1 / 3] * 3)
    np.testing.assert_allclose(est, shares, atol=0.02)
    before = (post.argmax(1) == y).mean()
    after = (reweight(post, [1 / 3] * 3, est).argmax(1) == y).mean()
    assert after > before + 0.02


def test_parse_priors():
    assert parse_priors(None, LABELS) is None and parse_priors("none", LABELS) is None
    assert parse_priors("auto", LABELS) == "auto"
    assert parse_priors("1,2,1", LABELS) == [0.25, 0.5, 0.25]
    assert parse_priors("neutral=0.7, positive=0.15,negative=0.15", LABELS) == pytest.approx(
        [0.15, 0.7, 0.15]
    )
    for bad in ("1,2", "x,y,z", "-1,1,1", "0,0,0", "neutral=1,positive=1", "nan,1,1"):
        with pytest.raises(FinsentError, match="--priors"):
            parse_priors(bad, LABELS)


def test_adjust_orders_temperature_then_priors():
    probs = [[0.6, 0.3, 0.1], [0.2, 0.45, 0.35]]
    cal = Calibration(temperature=2.0, train_priors=[0.5, 0.25, 0.25])
    out, labels, used = adjust(probs, LABELS, cal, [0.2, 0.6, 0.2])
    expected = reweight(scale(probs, 2.0), [0.5, 0.25, 0.25], [0.2, 0.6, 0.2])
    np.testing.assert_allclose(out, expected)
    assert labels == [LABELS[i] for i in expected.argmax(1)] and used == [0.2, 0.6, 0.2]


def test_fit_saves_and_loads(tmp_path):
    probs, gold = _overconfident(600)
    cal = fit(
        probs, [LABELS[g] for g in gold], LABELS, {"positive": 2, "neutral": 6, "negative": 2}, "eval split"
    )
    assert cal.train_priors == [0.2, 0.6, 0.2] and cal.fitted_on == "eval split (600 sentences)"
    assert cal.ece_after < cal.ece_before and cal.nll_after < cal.nll_before
    cal.save(tmp_path)
    assert Calibration.load(tmp_path) == cal and Calibration.load(tmp_path / "none") is None


def test_classifier_applies_temperature_and_priors(clf, tmp_path):
    """The tiny classifier: its saved temperature rescales the probabilities without changing a label;
    priors that give a label all the weight make every prediction that label."""
    import copy

    texts = ["Profit rose .", "Sales fell sharply .", "The company said so .", "Net loss widened ."]
    raw = [[r["probabilities"][lab] for lab in clf.labels] for r in clf(texts)]
    hot = copy.copy(clf)
    hot.calibration = Calibration(temperature=3.0, train_priors=[1 / 3] * 3)
    got = [[r["probabilities"][lab] for lab in clf.labels] for r in hot(texts)]
    np.testing.assert_allclose(got, scale(raw, 3.0), atol=1e-6)
    assert [r["label"] for r in hot(texts)] == [r["label"] for r in clf(texts)]
    hot.priors = [0.0, 1.0, 0.0]
    assert {r["label"] for r in hot(texts)} == {"neutral"}
    hot.priors = "auto"
    auto = hot(texts)
    assert all(math.isclose(sum(r["probabilities"].values()), 1.0, rel_tol=1e-9) for r in auto)


def test_evaluate_writes_errors_calibration_and_priors(tiny_model_dir, tmp_path, all_data):
    """`finsent evaluate` on a model folder with calibration.json: ECE before/after in metrics.json, the
    reliability diagram, errors.csv = exactly the misclassified rows of predictions.csv, most confident
    first; with --priors the shares used are recorded."""
    import shutil

    from finsent.cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    Calibration(temperature=1.7, train_priors=[1 / 3] * 3, fitted_on="eval split (9 sentences)").save(model)
    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(model), "--data", str(all_data), "--limit", "24", "--batch-size", "8"]
    assert main([*args, "--out", str(out), "--priors", "auto"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    c = m["calibration"]
    assert c["temperature"] == 1.7 and c["ece_before"] >= 0 and c["ece_after"] >= 0
    assert m["priors"]["mode"] == "auto (EM)" and sum(m["priors"][lab] for lab in LABELS) == pytest.approx(1)
    assert (out / "reliability.png").stat().st_size > 1000
    rows = list(csv.DictReader((out / "predictions.csv").read_text(encoding="utf-8").splitlines()))
    errors = list(csv.DictReader((out / "errors.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["source_row"] for r in errors} == {
        r["source_row"] for r in rows if r["label"] != r["predicted"]
    }
    conf = [float(r["confidence"]) for r in errors]
    assert conf == sorted(conf, reverse=True)
    assert len(rows) - len(errors) == round(m["accuracy"] * len(rows))
    assert "most confident mistakes" in (out / "report.txt").read_text()
    # the ECE of the probabilities written (the priors move them), beside those before the priors
    written = [[float(r[f"p_{lab}"]) for lab in LABELS] for r in rows]
    gold = [LABELS.index(r["label"]) for r in rows]
    assert c["ece_with_priors"] == pytest.approx(ece(written, gold), abs=1e-5)
    assert f"{c['ece_with_priors']:.3f} with the priors" in (out / "report.txt").read_text()
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert (
        "ece_with_priors" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())["calibration"]
    )
