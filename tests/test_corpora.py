"""The published corpora (SemEval-2017 Task 5, FiQA 2018, SEntFiN) read through read_file as labelled rows,
with what each reader left out; their short names; the benchmark sets; scores as labels; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from conftest import DATA_DIR

from finsent.cli import main
from finsent.core.errors import FinsentError
from finsent.data import bench, corpora
from finsent.data.formats import parse_thresholds, score_label
from finsent.data.phrasebank import DATA_DIR_ENV, resolve_data
from finsent.data.readers import read_file

LABELS = ["positive", "neutral", "negative"]
SEMEVAL = DATA_DIR / "semeval2017_task5"


def counts(ds) -> tuple[int, int, int]:
    c = Counter(e.label for e in ds.examples)
    return c["positive"], c["neutral"], c["negative"]


def one_flaw(ds, start: str) -> str:
    found = [f for f in ds.flaws() if f.startswith(start)]
    assert len(found) == 1, ds.flaws()
    return found[0]


def test_semeval_headlines_one_row_per_title_and_disagreeing_titles_left_out():
    train = read_file(SEMEVAL / "Headline_Trainingdata.json", LABELS)
    # the README's label counts are the (title, company) rows': 588 / 414 / 154
    note = one_flaw(train, "SemEval-2017 headlines:")
    assert "1,156 (title, company) rows (588 positive, 154 neutral, 414 negative by score)" in note
    assert (
        "966 distinct titles" in note and "39 titles whose companies' labels disagree were left out" in note
    )
    assert len(train.examples) == 966 - 39 and counts(train) == (459, 116, 352)
    assert len({e.text for e in train.examples}) == len(train.examples)  # one row per title
    # "Morrisons book second consecutive quarter..." is record 0, on line 2 of the file
    assert train.examples[0].source_row == 0 and train.examples[0].label == "positive"
    test = read_file(SEMEVAL / "Headlines_Testdata_withscores.json", LABELS)
    note = one_flaw(test, "SemEval-2017 headlines:")
    assert (
        "491 (title, company) rows (251 positive, 60 neutral, 180 negative by score) hold 461 distinct"
        in note
    )
    assert "2 titles whose companies' labels disagree were left out" in note
    assert counts(test) == (229, 56, 174)
    shared = {e.text for e in test.examples} & {e.text for e in train.examples}
    assert len(shared) == 117  # of the 124 titles in both files, 7 are left out as disagreeing


def test_semeval_microblogs_spans_as_text_and_the_test_files_full_text():
    train = read_file(SEMEVAL / "Microblog_Trainingdata.json", LABELS)
    spans = one_flaw(train, "SemEval-2017 microblogs: 1,700 rows have no full text")
    assert "their text is the `spans` fragments joined with ' '" in spans
    assert "20 rows whose spans are empty were left out" in spans
    assert "11 texts whose cashtags' labels disagree" in one_flaw(
        train, "SemEval-2017 microblogs: 1,700 (post"
    )
    assert len(train.examples) == 1240 and counts(train) == (741, 83, 416)
    raw = json.loads((SEMEVAL / "Microblog_Trainingdata.json").read_text())
    two = next(e for e in train.examples if len(raw[e.source_row]["spans"]) == 2)
    assert two.text == " ".join(s.strip() for s in raw[two.source_row]["spans"])
    test = read_file(SEMEVAL / "Microblogs_Testdata_withscores.json", LABELS)
    note = one_flaw(test, "SemEval-2017 microblogs:")  # no spans note: the test file has `text`
    assert "794 (post, cashtag) rows (507 positive, 49 neutral, 238 negative by score)" in note
    assert "672 distinct texts" in note
    assert len(test.examples) == 661 and counts(test) == (423, 40, 198)


def test_fiqa_posts_and_sentfin_counts():
    fiqa = read_file(DATA_DIR / "fiqa_2018" / "FiQA_post.json", LABELS)
    assert counts(fiqa) == (427, 30, 218) and fiqa.flaws() == []  # one snippet a post: nothing averaged
    sentfin = read_file(DATA_DIR / "sentfin" / "SEntFiN.csv", LABELS)
    assert len(sentfin.examples) == 9518 and counts(sentfin) == (3364, 3443, 2711)
    assert (
        sentfin.flaws()[0]
        == "SEntFiN: 1,235 headlines whose entities disagree were left out (2,850 name several entities)"
    )
    assert sentfin.examples[0].text == "SpiceJet to issue 6.4 crore warrants to promoters"


def test_fiqa_averages_a_posts_snippet_scores(tmp_path):
    post = {"sentence": "Buy $X, sell $Y", "info": [{"sentiment_score": "0.5"}, {"sentiment_score": "-0.35"}]}
    path = tmp_path / "FiQA_post.json"
    path.write_text(json.dumps({"1": post, "2": {"sentence": "Sell", "info": [{"sentiment_score": -0.6}]}}))
    ds = read_file(path, LABELS)
    assert [(e.text, e.label) for e in ds.examples] == [("Buy $X, sell $Y", "neutral"), ("Sell", "negative")]
    assert ds.flaws() == ["FiQA 2018: 1 posts hold several snippets: each is labelled by their mean score"]


def test_named_corpora_resolve_under_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(DATA_DIR))
    assert resolve_data("semeval-headlines") == SEMEVAL / "Headline_Trainingdata.json"
    assert resolve_data("SEMEVAL-microblogs:test") == SEMEVAL / "Microblogs_Testdata_withscores.json"
    assert resolve_data("sentfin") == DATA_DIR / "sentfin" / "SEntFiN.csv"
    assert corpora.test_file("semeval-headlines") == SEMEVAL / "Headlines_Testdata_withscores.json"
    assert corpora.test_file("fiqa-posts") is None
    with pytest.raises(FinsentError, match="fiqa-posts publishes no official test file"):
        resolve_data("fiqa-posts:test")
    # a flat folder (the files at its root) is found too, as `fpb` finds Sentences_*.txt
    (tmp_path / "FiQA_post.json").write_bytes((DATA_DIR / "fiqa_2018" / "FiQA_post.json").read_bytes())
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data("fiqa-posts") == tmp_path / "FiQA_post.json"
    with pytest.raises(FinsentError, match=r"sentfin/SEntFiN.csv not found under .*set FINSENT_DATA_DIR"):
        resolve_data("sentfin")
    monkeypatch.delenv(DATA_DIR_ENV)
    with pytest.raises(FinsentError, match=r"\$FINSENT_DATA_DIR is not set"):
        resolve_data("semeval-headlines")
    assert corpora.DATA_DIR_ENV == DATA_DIR_ENV


def test_bench_sets_train_and_test_rows():
    from finsent.data.splits import split_random

    assert {b.name for b in corpora.BENCH_SETS} >= {"fpb", "fpb-notebook", "semeval-headlines"}
    train, test = bench.load_bench_set("fpb", DATA_DIR)
    assert (len(train), len(test)) == (3634, 1212)  # FinGPT's: ceil(0.25 * 4846) test rows
    rows = read_file(DATA_DIR / "financial_phrasebank" / "Sentences_50Agree.txt", LABELS).examples
    assert test == split_random(rows, 0.25, 0, 42)["test"]
    train, test = bench.load_bench_set("fpb-notebook", DATA_DIR)
    assert len(train) == len(test) == 900 and Counter(e.label for e in test)["negative"] == 300
    train, test = bench.load_bench_set("semeval-headlines", DATA_DIR)
    assert len(test) == 459 and len(train) == 927 - 117  # test headlines left out of training
    assert not {e.text for e in train} & {e.text for e in test}
    train, test = bench.load_bench_set("sentfin", DATA_DIR)
    assert not {e.text for e in train} & {e.text for e in test}  # deduplicated before the split
    assert {h.hub_id for h in corpora.HUB_SETS} == {
        "pauri32/fiqa-2018",
        "zeroshot/twitter-financial-news-sentiment",
        "oliverwang15/news_with_gpt_instructions",
    }


def test_scores_as_labels_by_thresholds(tmp_path):
    assert [score_label(x) for x in (-0.1001, -0.1, 0.0999, 0.1, "0.366", 1)] == [
        "negative",
        "neutral",
        "neutral",
        "positive",
        "positive",
        "positive",
    ]
    assert parse_thresholds("0.2") == (-0.2, 0.2) and parse_thresholds("0,0") == (0.0, 0.0)
    for bad in ("0.3,-0.3", "a,b", "1,2,3", "-0.5"):
        with pytest.raises(FinsentError, match="data.score_thresholds"):
            parse_thresholds(bad)
    path = tmp_path / "scores.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": t, "s": s}) + "\n" for t, s in [("up", 0.5), ("flat", 0.15), ("down", "-0.3")]
        )
    )
    with pytest.raises(
        FinsentError, match=r"scores.jsonl:1: label 0.5 .*the labels are numbers.*--label-map scores"
    ):
        read_file(path, LABELS, label_column="s")
    ds = read_file(path, LABELS, "scores", label_column="s")
    assert [e.label for e in ds.examples] == ["positive", "positive", "negative"]
    ds = read_file(path, LABELS, "scores", label_column="s", score_thresholds="-0.2,0.2")
    assert [e.label for e in ds.examples] == ["positive", "neutral", "negative"]
    path.write_text(json.dumps({"text": "up", "s": "n/a"}) + "\n")
    with pytest.raises(FinsentError, match=r"scores.jsonl:1: label 'n/a' is not a number"):
        read_file(path, LABELS, "scores", label_column="s")


def test_a_json_array_of_records_reads_like_json_lines(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps(
            [{"text": "Profit up", "label": "positive"}, {"text": "Loss", "label": "negative"}], indent=2
        )
    )
    ds = read_file(path, LABELS)
    assert [(e.source_row, e.label) for e in ds.examples] == [(0, "positive"), (1, "negative")]


HEADLINES = [
    {"id": 1, "company": "A", "title": "A beats estimates", "sentiment": 0.4},
    {"id": 2, "company": "B", "title": "A beats estimates, B lags", "sentiment": -0.3},
    {"id": 3, "company": "A", "title": "A beats estimates, B lags", "sentiment": 0.3},
    {"id": 4, "company": "C", "title": "C holds its meeting", "sentiment": 0.0},
]


def test_truncated_json_is_an_error_or_a_counted_row(tmp_path):
    path = tmp_path / "Headline_Trainingdata.json"
    text = json.dumps(HEADLINES, indent=2)
    path.write_text(text[: text.index('"C holds')])  # cut inside the last record
    with pytest.raises(
        FinsentError, match=r"Headline_Trainingdata.json:\d+: record 3: invalid JSON .*cut short"
    ):
        read_file(path, LABELS)
    ds = read_file(path, LABELS, skip_invalid=True)
    assert [e.text for e in ds.examples] == ["A beats estimates"]
    assert ds.invalid[0].startswith(f"{path}:23: record 3")
    assert "1 titles whose companies' labels disagree were left out" in ds.flaws()[0]
    fiqa = tmp_path / "FiQA_post.json"
    fiqa.write_text('{"1": {"sentence": "Up", "info": [{"sentiment_score": "0.4"}]}, "2": {"sentence": "Do')
    with pytest.raises(FinsentError, match=r"FiQA_post.json:1: record 1: invalid JSON"):
        read_file(fiqa, LABELS)
    assert len(read_file(fiqa, LABELS, skip_invalid=True).examples) == 1


def test_a_score_that_is_not_a_number(tmp_path):
    path = tmp_path / "Microblogs_Testdata_withscores.json"
    rows = [
        {"cashtag": "$X", "sentiment score": "0.4", "text": "X up", "spans": "up"},
        {"cashtag": "$Y", "sentiment score": "high", "text": "Y up", "spans": "up"},
    ]
    path.write_text(json.dumps(rows, indent=1))
    with pytest.raises(
        FinsentError,
        match=r"Testdata_withscores.json:8: record 1: sentiment score 'high' is not a number \(or pass --skip-invalid\)",
    ):
        read_file(path, LABELS)
    ds = read_file(path, LABELS, skip_invalid=True)
    assert [e.text for e in ds.examples] == ["X up"] and len(ds.invalid) == 1
    fiqa = tmp_path / "FiQA_post.json"
    fiqa.write_text(json.dumps({"9": {"sentence": "Up", "info": [{"sentiment_score": None}]}}))
    with pytest.raises(FinsentError, match=r"FiQA_post.json:1: post 9: sentiment_score None is not a number"):
        read_file(fiqa, LABELS)
    with pytest.raises(FinsentError, match=r"no usable rows: 1 bad rows skipped \(first: .*post 9"):
        read_file(fiqa, LABELS, skip_invalid=True)


def test_a_decisions_dict_that_does_not_parse(tmp_path):
    path = tmp_path / "SEntFiN.csv"
    path.write_text(
        "S No.,Title,Decisions,Words\n"
        '1,Gold shines,"{""Gold"": ""positive""}",2\n'
        "2,Silver dull,\"{'Silver': 'negative'}\",2\n"
        '3,Broken one,"{""Gold"": ""positive""",2\n'
        '4,Mixed,"{""Gold"": ""positive"", ""Silver"": ""negative""}",1\n'
    )
    with pytest.raises(FinsentError, match=r"SEntFiN.csv:4: Decisions .* is not a dict of entity -> label"):
        read_file(path, LABELS)
    ds = read_file(path, LABELS, skip_invalid=True)
    assert [(e.text, e.label) for e in ds.examples] == [
        ("Gold shines", "positive"),
        ("Silver dull", "negative"),
    ]
    assert ds.flaws()[0].startswith("SEntFiN: 1 headlines whose entities disagree were left out")
    assert ds.flaws()[1].startswith(f"skipped: {path}:4: Decisions")


def test_microblog_spans_that_are_not_strings(tmp_path):
    path = tmp_path / "Microblog_Trainingdata.json"
    path.write_text(json.dumps([{"cashtag": "$X", "sentiment score": "0.4", "spans": [1, 2]}]))
    with pytest.raises(FinsentError, match=r"record 0: spans \[1, 2\] is not a list of strings"):
        read_file(path, LABELS)


def test_finsent_data_on_each_corpus(capsys, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(DATA_DIR))
    for spec, line in [
        ("semeval-headlines:test", "2 titles whose companies' labels disagree were left out"),
        (str(SEMEVAL / "Microblog_Trainingdata.json"), "their text is the `spans` fragments joined with ' '"),
        ("fiqa-posts", "of 675 usable rows (stratified split)"),
    ]:
        assert main(["data", "--data", spec]) == 0, spec
        assert line in capsys.readouterr().out
    done = subprocess.run(
        [sys.executable, "-m", "finsent.cli", "data", "--data", str(DATA_DIR / "sentfin" / "SEntFiN.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "  SEntFiN: 1,235 headlines whose entities disagree were left out" in done.stdout
    assert "of 9518 usable rows" in done.stdout
