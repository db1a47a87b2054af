"""The benchmark suite's test sets (corpora.BENCH_SETS) as rows: (train, test) from local files only, so
that every baseline trains on the same training split and is scored on the same test rows.

    train, test = load_bench_set("semeval-headlines")
"""

from __future__ import annotations

import os
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.data.corpora import BENCH_SETS, DATA_DIR_ENV, BenchSet, find_local, fpb_paths, resolve
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


def load_bench_set(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[list[Example], list[Example]]:
    """(train rows, test rows) of a benchmark set, from local files only, so that baselines train on the
    same training split. Official test files: the training rows whose text is in the test file are
    dropped (124 SemEval test headlines are also training headlines)."""
    from finsent.data.readers import read_file
    from finsent.data.splits import split_notebook, split_random

    bs = bench_set(name)
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
