"""Bootstrap intervals, paired tests, the two baselines and the benchmark table files."""

from __future__ import annotations

import json
import random
from math import comb

import pytest

from finsent.data.dataset import Example
from finsent.evaluation.baselines import C_GRID, choose_c, majority_baseline, tfidf_logreg_baseline
from finsent.evaluation.benchtable import (
    PUBLISHED_WEIGHTED_F1,
    build_table,
    format_interval,
    format_markdown,
    write_benchtable,
)
from finsent.evaluation.metrics import UNPARSED, classification_metrics
from finsent.evaluation.uncertainty import (
    METRICS,
    _encode,
    _scores,
    bootstrap_intervals,
    mcnemar_exact,
    paired_bootstrap_f1,
    resample_indices,
)

LABELS = ["positive", "neutral", "negative"]


def _predictions(n: int, right: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """n true labels (all three) and predictions that are right about `right` of the time."""
    rng = random.Random(seed)
    y = [LABELS[i % 3] for i in range(n)]
    p = [t if rng.random() < right else rng.choice([x for x in LABELS if x != t]) for t in y]
    return y, p


def test_resampled_scores_are_classification_metrics_of_each_resample():
    # the vectorised scorer must give, resample by resample, what metrics.py (scikit-learn) gives,
    # with a rare label that some resamples lack and UNPARSED / out-of-label predictions
    rng = random.Random(1)
    y = [rng.choice(["positive", "neutral"]) for _ in range(38)] + ["negative", "negative"]
    p = [rng.choice([*LABELS, UNPARSED, "mixed"]) if rng.random() < 0.4 else t for t in y]
    t_codes, p_codes, k = _encode(y, p, LABELS)
    idx = resample_indices(len(y), 60, seed=3)
    boot = _scores(t_codes, p_codes, k, idx)
    lacking = 0
    for b, rows in enumerate(idx):
        yt, yp = [y[i] for i in rows], [p[i] for i in rows]
        lacking += "negative" not in yt
        ref = classification_metrics(yt, yp, LABELS)
        for m in METRICS:
            assert boot[m][b] == pytest.approx(ref[m], abs=1e-12), (m, b)
    assert lacking > 0  # the macro-F1 convention (labels present in y_true) was exercised


def test_interval_contains_the_point_estimate_and_shrinks_with_n():
    small = bootstrap_intervals(*_predictions(60, 0.8), LABELS)
    large = bootstrap_intervals(*_predictions(2400, 0.8), LABELS)
    assert (small["n"], large["n"]) == (60, 2400)
    for m in METRICS:
        for s in (small, large):
            assert s[m]["low"] <= s[m]["value"] <= s[m]["high"], (m, s[m])
        # 40 times the sentences: about sqrt(40) = 6.3 times narrower
        assert (large[m]["high"] - large[m]["low"]) < (small[m]["high"] - small[m]["low"]) / 3, m
    assert large["accuracy"]["value"] == pytest.approx(0.8, abs=0.03)


def test_perfect_predictor_gives_one_one():
    y = [LABELS[i % 3] for i in range(30)]
    out = bootstrap_intervals(y, list(y), LABELS, n_resamples=200)
    for m in METRICS:
        assert (out[m]["value"], out[m]["low"], out[m]["high"]) == (1.0, 1.0, 1.0)


def test_interval_is_reproducible_with_the_seed():
    y, p = _predictions(200, 0.7)
    a = bootstrap_intervals(y, p, LABELS, seed=7)
    assert a == bootstrap_intervals(y, p, LABELS, seed=7)
    other = bootstrap_intervals(y, p, LABELS, seed=8)
    assert other["weighted_f1"]["value"] == a["weighted_f1"]["value"]
    assert (other["weighted_f1"]["low"], other["weighted_f1"]["high"]) != (
        a["weighted_f1"]["low"],
        a["weighted_f1"]["high"],
    )


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        bootstrap_intervals(["positive", "neutral"], ["positive"], LABELS)
    with pytest.raises(ValueError, match="not in the label set"):
        bootstrap_intervals(["bullish"], ["positive"], LABELS)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_intervals([], [], LABELS)


def test_mcnemar_identical_predictions_give_p_one():
    y, p = _predictions(100, 0.6)
    out = mcnemar_exact(y, p, list(p))
    assert (out["a_right_b_wrong"], out["a_wrong_b_right"], out["p_value"]) == (0, 0, 1.0)


def test_mcnemar_against_a_hand_computed_binomial():
    # 12 sentences only A gets right, 2 only B gets right, 20 both right, 6 both wrong
    y = ["positive"] * 40
    a = ["positive"] * 12 + ["negative"] * 2 + ["positive"] * 20 + ["neutral"] * 6
    b = ["neutral"] * 12 + ["positive"] * 2 + ["positive"] * 20 + ["negative"] * 6
    out = mcnemar_exact(y, a, b)
    assert (out["a_right_b_wrong"], out["a_wrong_b_right"]) == (12, 2)
    # two-sided: 2 * P(X <= 2), X ~ Binomial(14, 1/2) = 2 * (1 + 14 + 91) / 2**14 = 0.012939453125
    hand = 2 * sum(comb(14, k) for k in range(3)) / 2**14
    assert hand == 0.012939453125
    assert out["p_value"] == pytest.approx(hand, rel=1e-12)
    assert mcnemar_exact(y, b, a)["p_value"] == pytest.approx(hand, rel=1e-12)
    # 10 to 0: 2 / 2**10
    assert mcnemar_exact(y[:10], ["positive"] * 10, ["neutral"] * 10)["p_value"] == pytest.approx(2 / 1024)


def test_paired_bootstrap_of_the_f1_difference():
    y, good = _predictions(300, 0.9, seed=1)
    _, bad = _predictions(300, 0.5, seed=2)
    same = paired_bootstrap_f1(y, good, list(good), LABELS)
    assert same == {"value": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}
    d = paired_bootstrap_f1(y, good, bad, LABELS)
    expected = (
        classification_metrics(y, good, LABELS)["weighted_f1"]
        - classification_metrics(y, bad, LABELS)["weighted_f1"]
    )
    assert d["value"] == pytest.approx(expected)
    assert 0 < d["low"] <= d["value"] <= d["high"]
    assert d["p_value"] < 0.01
    flipped = paired_bootstrap_f1(y, bad, good, LABELS)
    assert flipped["value"] == pytest.approx(-d["value"])
    assert flipped["high"] == pytest.approx(-d["low"])


TRAIN = (
    [
        (f"{w} {v} sharply this quarter", "positive")
        for w in ("profit", "sales", "revenue")
        for v in ("rose", "grew")
    ]
    + [
        (f"{w} {v} sharply this quarter", "negative")
        for w in ("profit", "sales", "revenue")
        for v in ("fell", "dropped")
    ]
    + [
        (f"the {w} is held in {c}", "neutral")
        for w in ("meeting", "office", "board", "report")
        for c in ("helsinki", "espoo")
    ]
)
TEST = [
    ("operating profit rose", "positive"),
    ("net sales grew", "positive"),
    ("operating profit fell", "negative"),
    ("net sales dropped", "negative"),
    ("the annual meeting is held in espoo", "neutral"),
]


def test_tfidf_baseline_beats_the_majority_class_on_a_separable_toy_set():
    texts, y = [t for t, _ in TEST], [lab for _, lab in TEST]
    majority = majority_baseline(TRAIN, texts)
    assert majority == ["neutral"] * len(TEST)  # 8 neutral training rows against 6 and 6
    tfidf = tfidf_logreg_baseline(TRAIN, texts)
    acc = {
        name: classification_metrics(y, pred, LABELS)["accuracy"]
        for name, pred in (("maj", majority), ("tf", tfidf))
    }
    assert acc["tf"] == 1.0 and acc["maj"] == pytest.approx(0.2)
    # Example rows (the data layer's) work as well as (text, label) pairs
    examples = [Example(source_row=i, text=t, label=lab) for i, (t, lab) in enumerate(TRAIN)]
    assert tfidf_logreg_baseline(examples, texts) == tfidf
    assert tfidf_logreg_baseline(TRAIN, []) == []
    assert choose_c(TRAIN) in C_GRID


def test_majority_tie_goes_to_the_alphabetically_first_label():
    assert majority_baseline([("a", "positive"), ("b", "negative")], ["x"]) == ["negative"]
    with pytest.raises(ValueError, match="no training rows"):
        majority_baseline([], ["x"])


def _results():
    y1, ref1 = _predictions(120, 0.85, seed=1)
    _, zero1 = _predictions(120, 0.4, seed=2)
    y2, ref2 = _predictions(90, 0.8, seed=3)
    _, zero2 = _predictions(90, 0.5, seed=4)
    return {
        ("finsent", "fpb"): (y1, ref1),
        ("zero-shot", "fpb"): (y1, zero1),
        ("majority", "fpb"): (y1, majority_baseline([("x", "neutral")], y1)),
        ("finsent", "tfns"): (y2, ref2),
        ("zero-shot", "tfns"): (y2, zero2),
    }


def test_table_files_are_written_and_parse(tmp_path):
    import matplotlib.pyplot as plt

    table = build_table(_results(), LABELS, reference="finsent", n_resamples=300)
    assert table["models"] == ["finsent", "zero-shot", "majority"] and table["test_sets"] == ["fpb", "tfns"]
    assert len(table["rows"]) == 5 and len(table["paired"]) == 3
    paths = write_benchtable(table, tmp_path / "bench")
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == [
        "benchmark.json",
        "benchmark.md",
        "benchmark.png",
    ]

    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(table))
    assert "FinGPT" not in paths["json"].read_text()  # published figures: Markdown only

    md = paths["markdown"].read_text()
    row = next(r for r in table["rows"] if (r["model"], r["test_set"]) == ("finsent", "fpb"))
    assert format_interval(row["weighted_f1"]) in md
    assert "| majority | " in md and " - |" in md  # majority has no tfns result: a dash, not a zero
    assert "Paired tests against finsent" in md
    published = md.split("## Published figures (NOT measured here)")
    assert len(published) == 2 and "0.882" in published[1] and "0.882" not in published[0]
    assert "| GPT-4 | 0.833 | 0.630 | 0.808 | - |" in published[1]
    assert "Published" not in format_markdown(table)

    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.imread(paths["plot"]).ndim == 3


def test_format_interval():
    assert format_interval({"value": 0.8421, "low": 0.8179, "high": 0.8651}) == "0.842 [0.818, 0.865]"
    assert set(PUBLISHED_WEIGHTED_F1) >= {"FinBERT", "GPT-4"}


def test_table_refuses_what_cannot_be_paired():
    results = _results()
    with pytest.raises(ValueError, match="reference model 'gpt' has no results"):
        build_table(results, LABELS, reference="gpt")
    y, p = results["zero-shot", "fpb"]
    results["zero-shot", "fpb"] = (list(reversed(y)), p)
    with pytest.raises(ValueError, match="zero-shot and finsent on fpb have different true labels"):
        build_table(results, LABELS, reference="finsent", n_resamples=50)


def test_a_mixture_run_report_has_the_by_source_table_with_intervals():
    """report.md of a `finsent run` on several sources: each model's weighted F1 per source and overall,
    each with its interval, then the published figures marked as not measured here."""
    from finsent.evaluation.evaluate import uncertainty
    from finsent.pipeline.run import _by_source

    labels = ["positive", "neutral", "negative"]
    rng = random.Random(1)
    rows = [Example(i, f"t{i}", labels[i % 3], "fpb" if i < 60 else "semeval-headlines") for i in range(90)]
    summary = {}
    for key, right in (("baseline", 0.3), ("finetuned", 0.9)):
        preds = [e.label if rng.random() < right else labels[(labels.index(e.label) + 1) % 3] for e in rows]
        summary[key] = uncertainty(rows, preds, labels)
    lines = _by_source(summary, {"baseline": "zero-shot", "finetuned": "fine-tuned"})
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| model | fpb (n=60) | semeval-headlines (n=30) | all |"
    tuned = summary["finetuned"]
    assert table[2].startswith("| fine-tuned | ") and table[2].count("[") == 3
    assert format_interval(tuned["by_source"]["fpb"]["weighted_f1"]) in table[2]
    assert format_interval(tuned["intervals"]["weighted_f1"]) in table[2]
    assert "## Published figures (NOT measured here)" in lines
    # one source: no section
    assert (
        _by_source({"baseline": uncertainty(rows[:10], ["positive"] * 10, labels)}, {"baseline": "x"}) == []
    )
