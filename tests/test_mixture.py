"""Several sources in one run: each split on its own (official test files where published), no test text
in any training or eval split (exact or normalised), caps and weights, per-source tables and evaluations."""

from collections import Counter

import pytest

from finsent.core.config import build_config
from finsent.core.errors import FinsentError
from finsent.data.dataset import Example
from finsent.data.mixture import Source, _cap_and_weigh, normalised, parse_source
from finsent.data.splits import counts_table, make_splits


@pytest.fixture(scope="module")
def mixture(all_data):
    cfg = build_config(
        overrides={"data.sources": "all-data,semeval-headlines,semeval-microblogs,fiqa-posts cap=300"}
    )
    return make_splits(cfg.data)


def test_each_source_is_split_on_its_own_and_tagged(mixture):
    ds, splits = mixture
    test_sources = Counter(e.source for e in splits["test"])
    # the notebooks' 900 test sentences, SemEval's official test files (one row per distinct text), FiQA 25%
    assert test_sources["all-data"] == 900
    assert test_sources["semeval-headlines"] == 459 and test_sources["semeval-microblogs"] == 661
    assert {e.source for name in splits for e in splits[name]} == {
        "all-data", "semeval-headlines", "semeval-microblogs", "fiqa-posts",
    }  # fmt: skip
    lines = "\n".join(ds.flaws())
    assert "all-data: train 900, eval 150, test 900" in lines
    assert "semeval-headlines: train" in lines and "(file split)" in lines
    assert "test from Headlines_Testdata_withscores.json (file split)" in lines  # not "--test-data"
    assert Counter(e.source for e in splits["train"])["fiqa-posts"] <= 300
    table = counts_table(splits, ["positive", "neutral", "negative"])
    assert "train/semeval-microblogs" in table and "test/all-data" in table


def test_no_test_text_in_any_training_or_eval_split(mixture):
    ds, splits = mixture
    test = {e.text for e in splits["test"]}
    loose = {normalised(t) for t in test}
    for name in ("train", "eval"):
        assert not [e for e in splits[name] if e.text in test or normalised(e.text) in loose]
    # FiQA posts are SemEval test microblogs word for word, and SemEval headlines repeat across its files
    leak = next(f for f in ds.flaws() if f.startswith("test texts:"))
    assert "exact matches" in leak and int(leak.split()[2]) > 100


def test_cap_keeps_label_shares_and_weight_repeats():
    rows = [
        Example(i, f"t{i}", lab)
        for i, lab in enumerate(["positive"] * 60 + ["neutral"] * 30 + ["negative"] * 10)
    ]
    capped = _cap_and_weigh(rows, Source("x", "x", cap=50), seed=0)
    assert len(capped) == 50 and Counter(e.label for e in capped) == {
        "positive": 30,
        "neutral": 15,
        "negative": 5,
    }
    assert len(_cap_and_weigh(rows, Source("x", "x", weight=2.0), seed=0)) == 200
    half = _cap_and_weigh(rows, Source("x", "x", weight=0.5), seed=0)
    assert len(half) == 50 and len({e.text for e in half}) == 50
    both = _cap_and_weigh(rows, Source("x", "x", weight=3.0, cap=120), seed=1)
    assert len(both) == 120 and Counter(e.label for e in both)["negative"] == 12


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("sentfin cap=0", r"cap=0 is out of range \(must be at least 1\)"),
        ("sentfin weight=0", "weight=0 is out of range"),
        ("sentfin cap=many", "cap='many' is not a number"),
        ("sentfin size=3", "is not cap=N, weight=W, split=S, test_size=X, name=NAME or test-only"),
        ("fpb split=sideways", "split=sideways is not one of"),
        ("fpb test_size=1.5", r"test_size=1.5 is out of range \(must be above 0 and below 1\)"),
        ("fpb split=file", "split=file is not one of auto, notebook, stratified, random"),
    ],
)
def test_bad_source_entries_are_one_line_errors(entry, message):
    with pytest.raises(FinsentError, match=message):
        parse_source(entry)


def test_data_and_sources_together_and_a_source_twice_are_refused():
    with pytest.raises(FinsentError, match="both name data"):
        make_splits(build_config(overrides={"data.data": "sentfin", "data.sources": "fiqa-posts"}).data)
    with pytest.raises(FinsentError, match="named twice"):
        make_splits(build_config(overrides={"data.sources": "fiqa-posts,fiqa-posts cap=3"}).data)


def test_an_evaluation_of_a_mixture_reports_every_source_with_intervals(tiny_model_dir, tmp_path):
    from finsent.core.options import Config
    from finsent.evaluation.evaluate import evaluate

    cfg = Config()
    cfg.model.model, cfg.model.dtype = str(tiny_model_dir), "float32"
    rows = [
        Example(i, f"Sales rose {i} % .", lab, src)
        for i, (lab, src) in enumerate([("positive", "a"), ("negative", "b"), ("neutral", "a")] * 6)
    ]
    ev = evaluate(cfg, rows, tmp_path / "ev", batch_size=8)
    by = ev.metrics["by_source"]
    assert set(by) == {"a", "b"} and by["a"]["n"] == 12 and by["b"]["n"] == 6
    for part in (*by.values(), ev.metrics["intervals"]):
        for m in ("accuracy", "weighted_f1", "macro_f1"):
            assert part[m]["low"] <= part[m]["value"] <= part[m]["high"]
    assert "source" in (tmp_path / "ev" / "report.txt").read_text()
    header = (tmp_path / "ev" / "predictions.csv").read_text().splitlines()[0]
    assert header.endswith(",source")


def test_a_source_can_have_its_own_split_or_be_only_tested_on(all_data):
    cfg = build_config(
        overrides={
            "data.sources": ["fpb split=random test_size=0.25", "all-data test-only", "fiqa-posts cap=100"]
        }
    )
    ds, splits = make_splits(cfg.data)
    test = Counter(e.source for e in splits["test"])
    assert test["fpb"] == 1212 and test["all-data"] == 900  # FinGPT's FPB test split; the notebooks' 900
    assert "all-data" not in {e.source for e in splits["train"] + splits["eval"]}
    nb_test = {e.text for e in splits["test"] if e.source == "all-data"}
    assert not nb_test & {e.text for e in splits["train"]}  # the notebooks' test sentences never trained on
    fiqa_eval = [e for e in splits["eval"] if e.source == "fiqa-posts"]
    assert 0 < len(fiqa_eval) < 30  # capped with its training rows (100 of about 400)
    # a test-only source reports only what is used: no train/eval split, no thin-eval warning
    lines = ds.flaws()
    assert "all-data: test 900 (test-only: scored, never trained on)" in lines
    assert not [x for x in lines if x.startswith("all-data: eval split:") or x.startswith("all-data: train")]
