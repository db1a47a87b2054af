"""Named corpora: short names for the published files under $FINSENT_DATA_DIR, their official test files,
and the benchmark suite's test sets.

    finsent data --data semeval-headlines        # the training file; semeval-headlines:test its test file
    corpora.test_file("semeval-headlines")       # for a mixture or benchmark step
    bench.load_bench_set("fpb")                  # (train, test): FinGPT's FPB split of Sentences_50Agree.txt

Local files only: nothing here downloads. The hub-hosted sets of FinGPT's benchmark (HUB_SETS: `tfns`,
`fiqa-sa`, `nwgi`) are declared here with their hub ids and recipes; data/hub.py finds, downloads (when
named with --data) and converts them. The rows of a benchmark set: data/bench.py's load_bench_set (it
reads and splits, which import this module).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError

# The folder holding the data files in the shared layout (`fpb` reads it too). The same name as
# phrasebank.DATA_DIR_ENV: this module imports nothing of finsent.data, so that resolve_data can use it.
DATA_DIR_ENV = "FINSENT_DATA_DIR"


@dataclass(frozen=True)
class Corpus:
    name: str
    train: str  # its file, relative to the data folder (the folder of the shared data's layout)
    test: str | None  # its official test file, where the corpus publishes one
    about: str


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "semeval-headlines",
            "semeval2017_task5/Headline_Trainingdata.json",
            "semeval2017_task5/Headlines_Testdata_withscores.json",
            "SemEval-2017 Task 5 subtask 2, news headlines scored per company (one row per title)",
        ),
        Corpus(
            "semeval-microblogs",
            "semeval2017_task5/Microblog_Trainingdata.json",
            "semeval2017_task5/Microblogs_Testdata_withscores.json",
            "SemEval-2017 Task 5 subtask 1, StockTwits/Twitter posts scored per cashtag (training text: spans)",
        ),
        Corpus(
            "fiqa-posts",
            "fiqa_2018/FiQA_post.json",
            None,
            "FiQA 2018 task 1 microblog posts, labelled by their mean snippet score",
        ),
        Corpus(
            "sentfin",
            "sentfin/SEntFiN.csv",
            None,
            "SEntFiN 1.0 headlines whose entities agree",
        ),
        Corpus(
            "all-data",
            "kaggle_all_data/all-data.csv",
            None,
            "the notebooks' all-data.csv (the 50% agreement Financial PhraseBank)",
        ),
    )
}


def fpb_paths(name: str) -> list[str]:
    """Where a PhraseBank file (Sentences_50Agree.txt, ...) may lie in a data folder: its root, the shared
    layout, the authors' zip."""
    return [name, f"financial_phrasebank/{name}", f"FinancialPhraseBank-v1.0/{name}"]


def find_local(paths: list[str], data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first of `paths` (relative to the data folder, or just their file name at its root) that is a
    file under `data_dir`, else $FINSENT_DATA_DIR; None when there is none or no folder is set."""
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    if not root:
        return None
    for rel in paths:
        for cand in (Path(root) / rel, Path(root) / Path(rel).name):
            if cand.is_file():
                return cand
    return None


def is_named(spec: str) -> bool:
    return spec.split(":", 1)[0].strip().lower() in CORPORA


def resolve(spec: str, data_dir: str | os.PathLike | None = None) -> Path:
    """`NAME` (its training file) or `NAME:test` (its official test file) as a local path, else a
    one-line error saying where it looked and how to fix it."""
    name, _, part = spec.strip().lower().partition(":")
    if name not in CORPORA:
        raise FinsentError(f"--data {spec}: unknown corpus '{name}' (known: {', '.join(CORPORA)})")
    corpus = CORPORA[name]
    if part not in ("", "train", "test"):
        raise FinsentError(f"--data {spec}: unknown part '{part}' (use {name} or {name}:test)")
    rel = corpus.test if part == "test" else corpus.train
    if rel is None:
        raise FinsentError(
            f"--data {spec}: {name} publishes no official test file (split it: --split stratified)"
        )
    found = find_local([rel], data_dir)
    if found is None:
        root = data_dir or os.environ.get(DATA_DIR_ENV)
        raise FinsentError(
            f"--data {spec}: {rel} not found"
            + (f" under {root}" if root else f" (${DATA_DIR_ENV} is not set)")
            + f"; set {DATA_DIR_ENV} to the folder holding {Path(rel).parent}/ ({corpus.about}), or pass "
            "--data PATH"
        )
    return found


def test_file(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The official test file of a named corpus, where it has one (else None); an error if the corpus
    has one but it is not found locally."""
    if CORPORA[name].test is None:
        return None
    return resolve(f"{name}:test", data_dir)


@dataclass(frozen=True)
class BenchSet:
    name: str
    corpus: str  # a named corpus, a hub-hosted one (HUB_SETS), or fpb:SUBSET
    split: str  # official (its test file), random (datasets' train_test_split), notebook, stratified, hub
    about: str
    test_size: float = 0.25
    seed: int = 42


BENCH_SETS: list[BenchSet] = [
    BenchSet(
        "fpb",
        "fpb:50agree",
        "random",
        "FinGPT's FPB split: Sentences_50Agree.txt, datasets' train_test_split(test_size=0.25, seed=42) "
        "(finsent's --split random): 3,634 train / 1,212 test",
    ),
    BenchSet(
        "fpb-notebook",
        "all-data",
        "notebook",
        "the notebooks' split of all-data.csv: 300 train and 300 test sentences a label (random_state=42)",
    ),
    BenchSet(
        "semeval-headlines", "semeval-headlines", "official", "SemEval-2017 headlines: the official test file"
    ),
    BenchSet(
        "semeval-microblogs",
        "semeval-microblogs",
        "official",
        "SemEval-2017 microblogs: the official test file (full posts; the training text is spans only)",
    ),
    BenchSet(
        "fiqa-posts",
        "fiqa-posts",
        "stratified",
        "FiQA 2018 posts: no official split, stratified 25% (seed 42)",
    ),
    BenchSet("sentfin", "sentfin", "stratified", "SEntFiN 1.0: no official split, stratified 25% (seed 42)"),
    # hub-hosted: the local files, a mirror or an earlier `--data NAME` download (never fetched here)
    BenchSet(
        "tfns",
        "tfns",
        "hub",
        "FinGPT's TFNS: the hub's validation split (2,388 tweets) as test, its train split to train",
    ),
    BenchSet(
        "fiqa-sa",
        "fiqa-sa",
        "hub",
        "FinGPT's FiQA-SA: the hub's three splits concatenated, train_test_split(0.226, seed=42)",
    ),
    BenchSet("nwgi", "nwgi", "hub", "FinGPT's NWGI: the hub's test split; seven grades folded into three"),
]


@dataclass(frozen=True)
class HubSet:
    """A corpus of FinGPT's benchmark hosted on the Hugging Face hub, with FinGPT's recipe (its module of
    the set in FinGPT's FinGPT_Benchmark/benchmarks folder): which hub splits are its training and test
    parts, the text and label columns, and how labels map. Fetched only when named (`--data tfns`):
    data/hub.py."""

    name: str
    hub_id: str
    recipe: str
    text: str  # the text column
    label: str  # the label column (a score column where `labels` is None)
    train: tuple[str, ...]  # the hub splits (concatenated, in this order) of the training part
    test: tuple[str, ...]  # ... and of the test part
    labels: dict[str, str] | None  # raw label (as lower-cased text) -> label; None: scores, by -0.1/0.1
    cut: float | None = None  # FinGPT re-splits train+test: datasets' train_test_split(cut, seed=42)
    config: str = "default"  # the configuration (the folder of the hub's parquet conversion)
    about: str = ""


# Verified (hub dataset cards, read through the search tool): TFNS has splits train and validation (9.54k
# and 2.39k rows in the hub viewer) and labels LABEL_0 Bearish, LABEL_1 Bullish, LABEL_2 Neutral; NWGI has
# columns news and label (a string) and splits train (16,184) and test (4,047); pauri32/fiqa-2018 is
# train.csv, validation.csv and test.csv, converted to default/<split>/0000.parquet. Assumed from
# FinGPT's benchmark code, not verified against the hub: TFNS's text column `text`, FiQA's columns
# `sentence` and `sentiment_score`, and NWGI's seven label strings below. FiQA's repository was re-split by
# its author ("Update partitions", May 2023): FinGPT's copy was saved from the hub (load_from_disk) at a
# time not stated, so its test rows are reproduced only if the hub's rows are the same.
HUB_SETS: list[HubSet] = [
    HubSet(
        "fiqa-sa",
        "pauri32/fiqa-2018",
        "train+validation+test concatenated, train_test_split(0.226, seed=42)['test']; `sentiment_score` by "
        "the thresholds",
        "sentence",
        "sentiment_score",
        ("train", "validation", "test"),
        ("train", "validation", "test"),
        None,
        cut=0.226,
        about="FiQA 2018 task 1 (headlines and posts) as FinGPT's FiQA-SA",
    ),
    HubSet(
        "tfns",
        "zeroshot/twitter-financial-news-sentiment",
        "the `validation` split; label 0 negative, 1 positive, 2 neutral",
        "text",
        "label",
        ("train",),
        ("validation",),
        {"0": "negative", "1": "positive", "2": "neutral"},  # Bearish, Bullish, Neutral
        about="Twitter Financial News Sentiment (TFNS) tweets",
    ),
    HubSet(
        "nwgi",
        "oliverwang15/news_with_gpt_instructions",
        "the `test` split, text `news`; strong/moderately negative -> negative, mildly negative/neutral/mildly "
        "positive -> neutral, moderately/strong positive -> positive",
        "news",
        "label",
        ("train",),
        ("test",),
        {
            "strong negative": "negative",
            "moderately negative": "negative",
            "mildly negative": "neutral",
            "neutral": "neutral",
            "mildly positive": "neutral",
            "moderately positive": "positive",
            "strong positive": "positive",
        },
        about="News With GPT Instructions (NWGI), labelled by GPT in seven grades",
    ),
]


def hub_set(name: str) -> HubSet | None:
    """The hub-hosted corpus of a short name (`tfns`, `tfns:test`), else None."""
    name = name.split(":", 1)[0].strip().lower()
    return next((h for h in HUB_SETS if h.name == name), None)


def is_hub(spec: str) -> bool:
    return hub_set(spec) is not None
