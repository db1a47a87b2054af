"""FinGPT's hub-hosted corpora by short name (tfns, fiqa-sa, nwgi): local files first, then a local mirror of
the hub's parquet layout, then (faked here: never the network) the hub's conversion, each converted into
finsent's cache with its source recorded; their recipes' splits and labels; the benchmark sets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from finsent.cli import main
from finsent.core.errors import FinsentError
from finsent.data import bench, corpora, hub
from finsent.data.phrasebank import resolve_data
from finsent.data.readers import read_file

LABELS = ["positive", "neutral", "negative"]
NWGI_GRADES = [
    "strong negative",
    "moderately negative",
    "mildly negative",
    "neutral",
    "mildly positive",
    "moderately positive",
    "strong positive",
]
NWGI_FOLDED = ["negative", "negative", "neutral", "neutral", "neutral", "positive", "positive"]


def _tfns(split: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"text": [f"$X tweet {split} {i}" for i in range(n)], "label": [i % 3 for i in range(n)]}
    )


def _fiqa(split: str, n: int) -> pd.DataFrame:
    scores = [-0.5, -0.1001, -0.1, 0.0, 0.0999, 0.1, 0.6]  # FinGPT's make_label at and beside its cuts
    return pd.DataFrame(
        {
            "sentence": [f"FiQA {split} sentence {i}" for i in range(n)],
            "snippets": ["['x']"] * n,
            "target": ["X"] * n,
            "sentiment_score": [scores[i % len(scores)] for i in range(n)],
            "aspects": ["['Stock']"] * n,
            "format": ["post" if i % 2 else "headline" for i in range(n)],
        }
    )


def _nwgi(split: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "news": [f"NWGI {split} news {i}" for i in range(n)],
            "prompt": ["p"] * n,
            "out": ["o"] * n,
            "label": [NWGI_GRADES[i % 7] for i in range(n)],
        }
    )


FRAMES = {
    "zeroshot/twitter-financial-news-sentiment": {"train": _tfns("train", 12), "validation": _tfns("val", 7)},
    "pauri32/fiqa-2018": {
        "train": _fiqa("train", 30),
        "validation": _fiqa("val", 5),
        "test": _fiqa("test", 9),
    },
    "oliverwang15/news_with_gpt_instructions": {"train": _nwgi("train", 14), "test": _nwgi("test", 7)},
}


def build_mirror(root: Path, frames=FRAMES) -> Path:
    """The hub's parquet layout, HUB_ID/default/SPLIT/NNNN.parquet; a split of over 10 rows in two shards."""
    for hub_id, splits in frames.items():
        for split, frame in splits.items():
            folder = root / hub_id / "default" / split
            folder.mkdir(parents=True)
            cut = len(frame) // 2 if len(frame) > 10 else len(frame)
            for i, part in enumerate((frame[:cut], frame[cut:])):
                if len(part):
                    part.to_parquet(folder / f"{i:04d}.parquet")
    return root


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty data folder, a private cache, offline, no mirror yet."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("FINSENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FINSENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FINSENT_HUB_MIRROR", raising=False)
    monkeypatch.delenv("FINSENT_FPB_MIRROR", raising=False)
    return tmp_path


@pytest.fixture
def mirror(env, monkeypatch):
    monkeypatch.setenv("FINSENT_HUB_MIRROR", str(build_mirror(env / "mirror")))
    return env / "mirror"


def rows(spec: str) -> list[tuple[str, str]]:
    return [(e.text, e.label) for e in read_file(resolve_data(spec), LABELS).examples]


def source(path: Path) -> dict:
    return json.loads(path.with_suffix(".source.json").read_text())


def test_tfns_from_a_mirror_train_and_validation_labels_mapped(env, mirror):
    path = resolve_data("tfns:test")
    assert path == env / "cache" / "data" / "tfns" / "test.csv"
    names = {0: "negative", 1: "positive", 2: "neutral"}  # Bearish, Bullish, Neutral
    val = FRAMES["zeroshot/twitter-financial-news-sentiment"]["validation"]
    assert rows("tfns:test") == [(t, names[y]) for t, y in zip(val.text, val.label)]
    train = FRAMES["zeroshot/twitter-financial-news-sentiment"]["train"]
    assert rows("tfns") == [(t, names[y]) for t, y in zip(train.text, train.label)]  # both shards, in order
    src = source(path)
    assert src["mirror"] == str((mirror / "zeroshot/twitter-financial-news-sentiment").resolve())
    assert src["rows"] == 7 and src["part"] == "test" and src["splits"] == ["validation"]
    assert [Path(f).parent.name for f in src["files"]] == ["validation"]


def test_finsent_data_trains_on_tfns_and_tests_on_its_test_part(env, mirror, capsys):
    argv = ["data", "--data", "tfns", "--split", "file", "--test-data", "tfns:test", "--eval-size", "0.25"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tfns/train.csv: train 9, eval 3, test 7, test from --test-data (file split)" in out


def test_fiqa_sa_follows_fingpts_recipe_exactly(env, mirror):
    """FinGPT's own calls (datasets' concatenate_datasets + train_test_split(0.226, seed=42), make_label)
    run on the same frames pick the same test rows, in the same order, with the same labels."""
    import datasets

    frames = FRAMES["pauri32/fiqa-2018"]
    whole = datasets.concatenate_datasets(
        [datasets.Dataset.from_pandas(frames[s]) for s in ("train", "validation", "test")]
    )
    cut = whole.train_test_split(0.226, seed=42)

    def make_label(x):  # FinGPT's fiqa.py
        return "negative" if x < -0.1 else "neutral" if x < 0.1 else "positive"

    expected = {
        part: list(zip(cut[part]["sentence"], map(make_label, cut[part]["sentiment_score"]))) for part in cut
    }
    assert rows("fiqa-sa:test") == expected["test"]
    assert rows("fiqa-sa") == expected["train"]
    assert len(expected["test"]) == 10  # ceil(0.226 * 44)
    assert Counter(lab for _, lab in expected["test"] + expected["train"]) == Counter(
        {"negative": 16, "neutral": 18, "positive": 10}
    )
    assert source(resolve_data("fiqa-sa:test"))["splits"] == ["train", "validation", "test"]


def test_fingpt_cut_is_the_random_split(env):
    from finsent.data.splits import split_random

    for n, size in ((44, 0.226), (1173, 0.226), (4846, 0.25)):
        ours, theirs = hub.fingpt_cut(n, size), split_random(list(range(n)), size, 0, 42)
        assert (ours["test"], ours["train"]) == (theirs["test"], theirs["train"])
        assert sorted(ours["test"] + ours["train"]) == list(range(n))


def test_nwgi_seven_grades_folded_into_three(env, mirror):
    test = FRAMES["oliverwang15/news_with_gpt_instructions"]["test"]
    assert rows("nwgi:test") == list(zip(test.news, NWGI_FOLDED))
    assert len(rows("nwgi")) == 14


def test_local_files_come_before_the_mirror(env, mirror):
    """NAME/SPLIT.parquet in the data folder, or the hub's layout there, wins over the mirror."""
    mine = pd.DataFrame({"text": ["local tweet"], "label": [1]})
    (env / "data" / "tfns").mkdir()
    mine.to_parquet(env / "data" / "tfns" / "validation.parquet")
    assert rows("tfns:test") == [("local tweet", "positive")]
    assert source(resolve_data("tfns:test"))["local"] == str((env / "data" / "tfns").resolve())
    assert len(rows("tfns")) == 12  # no tfns/train.parquet there: the train part still from the mirror
    build_mirror(env / "data", {"oliverwang15/news_with_gpt_instructions": {"test": _nwgi("here", 3)}})
    assert rows("nwgi:test") == [(f"NWGI here news {i}", lab) for i, lab in enumerate(NWGI_FOLDED[:3])]
    assert "local" in source(resolve_data("nwgi:test"))


def test_offline_without_files_is_one_line_saying_how_to_get_them(env, capsys):
    with pytest.raises(FinsentError) as e:
        resolve_data("tfns:test")
    msg = str(e.value)
    assert "\n" not in msg and "tfns/validation.parquet not found under" in msg
    assert "offline mode (HF_HUB_OFFLINE=1)" in msg and "FINSENT_HUB_MIRROR" in msg and "--data PATH" in msg
    assert not (env / "cache" / "data" / "tfns").exists()
    assert main(["data", "--data", "fiqa-sa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "fiqa-sa/train.parquet + fiqa-sa/validation.parquet + fiqa-sa/test.parquet" in err[0]
    )


def test_bad_parts_labels_and_columns_are_one_line(env, mirror, tmp_path):
    with pytest.raises(
        FinsentError, match=r"--data tfns:validation: unknown part 'validation' \(use tfns or"
    ):
        resolve_data("tfns:validation")
    (env / "data" / "nwgi").mkdir()
    bad = _nwgi("bad", 3)
    bad.loc[2, "label"] = "very bullish"
    bad.to_parquet(env / "data" / "nwgi" / "test.parquet")
    with pytest.raises(FinsentError, match=r"nwgi/test.parquet: row 2: label 'very bullish' is not one of"):
        resolve_data("nwgi:test")
    (env / "data" / "tfns").mkdir()
    pd.DataFrame({"tweet": ["x"], "label": [0]}).to_parquet(env / "data" / "tfns" / "train.parquet")
    with pytest.raises(FinsentError, match=r"tfns/train.parquet: no column 'text' \(columns: tweet, label\)"):
        resolve_data("tfns")


class FakeHub:
    """huggingface_hub's HfApi and hf_hub_download over a local folder of the conversion's layout."""

    SHA = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def api(self):
        fake = self

        class Api:
            def dataset_info(self, repo_id, revision=None, files_metadata=False):
                fake.calls.append(("info", repo_id, revision))
                files = sorted((fake.root / repo_id).rglob("*.parquet"))
                siblings = [
                    type("S", (), {"rfilename": str(f.relative_to(fake.root / repo_id))}) for f in files
                ]
                return type("Info", (), {"sha": fake.SHA, "siblings": siblings})()

        return Api

    def download(self, repo_id, filename, repo_type=None, revision=None):
        assert repo_type == "dataset" and revision == self.SHA  # the commit, not the moving branch
        self.calls.append(("file", filename))
        return str(self.root / repo_id / filename)


def test_download_records_the_commit_and_is_reused_offline(env, monkeypatch):
    import huggingface_hub

    fake = FakeHub(build_mirror(env / "hub"))
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.download)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    path = resolve_data("nwgi:test")
    src = source(path)
    assert src["dataset"] == "oliverwang15/news_with_gpt_instructions" and src["commit"] == FakeHub.SHA
    assert src["revision"] == "refs/convert/parquet" and src["rows"] == 7
    assert ("file", "default/test/0000.parquet") in fake.calls and (
        "file",
        "default/train/0000.parquet",
    ) not in fake.calls
    # offline later: the earlier download (pinned by its commit) is used, nothing is fetched
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake.calls.clear()
    assert resolve_data("nwgi:test") == path and fake.calls == []
    assert rows("nwgi:test")[0] == ("NWGI test news 0", "negative")
    with pytest.raises(FinsentError, match="offline mode"):  # its train part was never downloaded
        resolve_data("nwgi")


def test_fpb_through_the_hub_mirror_and_its_own_mirror(env, monkeypatch):
    """The PhraseBank shares the mechanism: $FINSENT_HUB_MIRROR/takala/financial_phrasebank/CONFIG/SPLIT."""
    frame = pd.DataFrame({"sentence": ["Profit rose .", "Sales fell ."], "label": [2, 0]})
    folder = env / "mirror" / "takala" / "financial_phrasebank" / "sentences_66agree" / "train"
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "0000.parquet")
    monkeypatch.setenv("FINSENT_HUB_MIRROR", str(env / "mirror"))
    path = resolve_data("fpb:66agree")
    assert path == env / "cache" / "data" / "Sentences_66Agree.txt"
    assert [(e.text, e.label) for e in read_file(path, LABELS).examples] == [
        ("Profit rose .", "positive"),
        ("Sales fell .", "negative"),
    ]
    assert source(path)["mirror"].endswith("takala/financial_phrasebank") and source(path)["rows"] == 2
    monkeypatch.delenv("FINSENT_HUB_MIRROR")
    with pytest.raises(FinsentError, match="offline mode"):  # a mirror's conversion is not a download
        resolve_data("fpb:66agree")


def test_bench_sets_load_hub_corpora_only_when_local(env, mirror, monkeypatch):
    assert {b.name for b in corpora.BENCH_SETS if b.split == "hub"} == {"tfns", "fiqa-sa", "nwgi"}
    assert all(bench.missing(bench.bench_set(n)) is None for n in ("tfns", "fiqa-sa", "nwgi"))
    train, test = bench.load_bench_set("tfns")
    assert (len(train), len(test)) == (12, 7) and test[0].label == "negative"
    train, test = bench.load_bench_set("fiqa-sa")
    assert (len(train), len(test)) == (34, 10) and not {e.text for e in train} & {e.text for e in test}
    monkeypatch.delenv("FINSENT_HUB_MIRROR")
    assert bench.missing(bench.bench_set("nwgi")) == "nwgi/train.parquet"
    assert bench.missing(bench.bench_set("fiqa-sa")) == (
        "fiqa-sa/train.parquet + fiqa-sa/validation.parquet + fiqa-sa/test.parquet"
    )
    assert "oliverwang15/news_with_gpt_instructions: `finsent data --data nwgi`" in bench.hub_source(
        bench.bench_set("nwgi")
    )
    assert bench.hub_source(bench.bench_set("fpb")) is None
    with pytest.raises(FinsentError, match="local files only"):  # the benchmark never downloads
        bench.load_bench_set("nwgi")
    assert bench.missing(bench.bench_set("semeval-headlines"), env / "data") == (
        "semeval2017_task5/Headline_Trainingdata.json"
    )
