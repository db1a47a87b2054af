"""The benchmark suite's test sets (corpora.BENCH_SETS) as rows: (train, test) from local files only, so
that every baseline trains on the same training split and is scored on the same test rows. A hub-hosted set
(split "hub": tfns, fiqa-sa, nwgi) is local when its parquet files are in the data folder or a mirror, or an
earlier `--data NAME` downloaded it (data/hub.py); it is never downloaded here.

    train, test = load_bench_set("semeval-headlines")
    missing(bench_set("tfns"))   # None, or what is not there: the set is skipped
"""

from __future__ import annotations

import os
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.data import hub
from finsent.data.corpora import (
    BENCH_SETS,
    CORPORA,
    DATA_DIR_ENV,
    BenchSet,
    find_local,
    fpb_paths,
    hub_set,
    resolve,
)
from finsent.data.dataset import Example
from finsent.data.phrasebank import FPB_FILES

LABELS = ["positive", "neutral", "negative"]


def bench_set(name: str) -> BenchSet:
    for bs in BENCH_SETS:
        if bs.name == name:
            return bs
    raise FinsentError(f"unknown benchmark set '{name}' (known: {', '.join(b.name for b in BENCH_SETS)})")


def _local(spec: str, data_dir) -> Path:
    if spec.startswith("fpb:"):
        found = find_local(fpb_paths(FPB_FILES[spec[4:]]), data_dir)
        if found is None:  # the benchmark never downloads: the same file every run
            raise FinsentError(
                f"{spec}: {FPB_FILES[spec[4:]]} not found under the data folder (${DATA_DIR_ENV})"
            )
        return found
    return resolve(spec, data_dir)


def missing(bs: BenchSet, data_dir: str | os.PathLike | None = None) -> str | None:
    """The first file of a benchmark set that is not local (relative to the data folder; for a hub set,
    the files of its first part missing, joined by ' + '), else None: such a set is skipped."""
    if bs.split == "hub":
        hs = hub_set(bs.corpus)
        for spec, splits in ((bs.corpus, hs.train), (f"{bs.corpus}:test", hs.test)):
            if not hub.available(spec, data_dir):
                return " + ".join(hub.local_names(hs, splits)[: len(splits)])
        return None
    if bs.corpus.startswith("fpb:"):
        name = FPB_FILES[bs.corpus[4:]]
        return None if find_local(fpb_paths(name), data_dir) else f"financial_phrasebank/{name}"
    corpus = CORPORA[bs.corpus]
    files = [corpus.train] + ([corpus.test] if bs.split == "official" and corpus.test else [])
    return next((rel for rel in files if find_local([rel], data_dir) is None), None)


def hub_source(bs: BenchSet) -> str | None:
    """Where a hub set comes from and how to get it (for the note on a skipped set); None for the others."""
    hs = hub_set(bs.corpus) if bs.split == "hub" else None
    if hs is None:
        return None
    return (
        f"the hub's {hs.hub_id}: `finsent data --data {hs.name}` and `--data {hs.name}:test` download it once, "
        f"or set ${hub.HUB_MIRROR_ENV} to a folder of the hub's parquet layout"
    )


def load_bench_set(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[list[Example], list[Example]]:
    """(train rows, test rows) of a benchmark set, from local files only, so that baselines train on the
    same training split. Official test files: the training rows whose text is in the test file are
    dropped (124 SemEval test headlines are also training headlines)."""
    from finsent.data.readers import read_file
    from finsent.data.splits import split_notebook, split_random

    bs = bench_set(name)
    if bs.split == "hub":  # FinGPT's recipe's two parts, converted from local files (never downloaded)
        train, test = (
            read_file(hub.resolve_hub(spec, data_dir, download_ok=False), LABELS).examples
            for spec in (bs.corpus, f"{bs.corpus}:test")
        )
        texts = {e.text for e in test}
        return [e for e in train if e.text not in texts], test
    # a seeded split of a corpus with repeated sentences could put one sentence on both sides: dedupe
    # there; the FPB and notebook splits reproduce their sources row for row, repeats included
    rows = read_file(_local(bs.corpus, data_dir), LABELS, dedupe=bs.split == "stratified").examples
    if bs.split == "official":
        test = read_file(_local(f"{bs.corpus}:test", data_dir), LABELS).examples
        texts = {e.text for e in test}
        return [e for e in rows if e.text not in texts], test
    if bs.split == "random":
        parts = split_random(rows, bs.test_size, 0, bs.seed)
    elif bs.split == "notebook":
        parts = split_notebook(rows, LABELS, seed=bs.seed)
    else:
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(
            rows, test_size=bs.test_size, random_state=bs.seed, stratify=[e.label for e in rows]
        )
        parts = {"train": train, "test": test}
    return parts["train"], parts["test"]
