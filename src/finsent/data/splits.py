"""Train/eval/test splits: the notebooks' split, stratified, random, or an explicit test file.

finsent data --data ../shared/data/kaggle_all_data/all-data.csv --split notebook --out runs/data
"""

from __future__ import annotations

import contextlib
import csv
from collections import Counter
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.labels import normalise_label
from finsent.data.dataset import Example, LabelledData
from finsent.data.phrasebank import is_phrasebank, resolve_data
from finsent.data.readers import read_file


def load_dataset_from_config(dc) -> LabelledData:
    """Read `dc.data` (a DataConfig) with its column, label and cleaning options."""
    return read_file(
        resolve_data(dc.data),
        dc.labels,
        dc.label_map,
        dc.text_column,
        dc.label_column,
        dc.skip_invalid,
        dc.dedupe,
        dc.score_thresholds,
    )


def split_notebook(
    examples: list[Example],
    labels: list[str],
    train_per_label: int = 300,
    test_per_label: int = 300,
    eval_per_label: int = 50,
    seed: int = 42,
) -> dict[str, list[Example]]:
    """The notebooks' split, reproduced exactly (same scikit-learn and pandas calls)."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    df = pd.DataFrame(
        {
            "source_row": [e.source_row for e in examples],
            "text": [e.text for e in examples],
            "label": [e.label for e in examples],
        }
    )
    train, test = [], []
    for lab in labels:
        part = df[df.label == lab]
        if len(part) < train_per_label + test_per_label:
            raise FinsentError(
                f"notebook split: label '{lab}' has {len(part)} rows, needs {train_per_label + test_per_label}"
                " (lower data.train_per_label / data.test_per_label or use --split stratified)"
            )
        tr, te = train_test_split(
            part, train_size=train_per_label, test_size=test_per_label, random_state=seed
        )
        train.append(tr)
        test.append(te)
    x_train = pd.concat(train).sample(frac=1, random_state=10)
    x_test = pd.concat(test)
    used = set(x_train.index) | set(x_test.index)
    rest = df[~df.index.isin(used)]
    # the notebooks' groupby("sentiment").apply(sample): groups in sorted order, each sampled afresh
    parts = [
        rest[rest.label == lab].sample(n=eval_per_label, random_state=10, replace=True)
        for lab in sorted(set(rest.label))
    ]
    x_eval = pd.concat(parts) if parts else rest  # nothing left over (or eval_per_label 0): no eval split
    return {
        name: _to_examples(frame) for name, frame in (("train", x_train), ("eval", x_eval), ("test", x_test))
    }


def _to_examples(frame) -> list[Example]:
    return [Example(int(r.source_row), r.text, r.label) for r in frame.itertuples(index=False)]


def _stratified_cut(rows: list[Example], size: float, seed: int, what: str) -> tuple[list, list]:
    """scikit-learn's stratified train_test_split, its refusals (a label with one row, a share smaller
    than the number of labels) as one line naming the split."""
    from collections import Counter

    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(rows, test_size=size, random_state=seed, stratify=[e.label for e in rows])
    except ValueError as e:
        counts = ", ".join(f"{lab} {n}" for lab, n in sorted(Counter(e.label for e in rows).items()))
        raise FinsentError(
            f"stratified split ({what}): cannot cut {size:g} of {len(rows)} rows ({counts}) keeping label shares"
            f" ({str(e).splitlines()[0]}); use more rows, other data.test_size / data.eval_size, or --split random"
        ) from None


def split_stratified(
    examples: list[Example], test_size: float, eval_size: float, seed: int
) -> dict[str, list[Example]]:
    rest, test = _stratified_cut(examples, test_size, seed, "test")
    train, ev = _stratified_cut(rest, eval_size / (1 - test_size), seed, "eval")
    return {"train": train, "eval": ev, "test": test}


def split_random(
    examples: list[Example], test_size: float, eval_size: float, seed: int
) -> dict[str, list[Example]]:
    """The public FPB benchmark's split (FinGPT, FinLoRA): `datasets.Dataset.train_test_split(test_size,
    seed=seed)`, re-implemented in numpy so that it needs no Arrow table: the permutation of
    np.random.default_rng(seed), ceil(test_size * n) test rows first, the rest train. The eval split is
    the last eval_size share of that train part (eval_size 0 keeps the benchmark's train rows whole)."""
    import math

    import numpy as np

    n = len(examples)
    n_test = math.ceil(test_size * n)
    order = np.random.default_rng(seed).permutation(n)
    test = [examples[i] for i in order[:n_test]]
    rest = [examples[i] for i in order[n_test:]]
    n_eval = math.ceil(eval_size * n) if eval_size else 0
    return {"train": rest[: len(rest) - n_eval], "eval": rest[len(rest) - n_eval :], "test": test}


def make_splits(dc, ds: LabelledData | None = None) -> tuple[LabelledData, dict[str, list[Example]]]:
    """Read the data named by a DataConfig and split it as it asks (several sources: data/mixture.py)."""
    if getattr(dc, "sources", None) and ds is None:
        from finsent.data.mixture import make_mixture

        return make_mixture(dc, make_splits)
    ds = ds or load_dataset_from_config(dc)
    labels = [normalise_label(x) for x in dc.labels]
    ds.thin_eval = {}  # (a LabelledData split again with other options keeps no stale report)
    split = dc.split
    if dc.test_data and split not in ("auto", "file"):  # (a note: configs saved so before still load)
        from finsent.core.console import note

        note(
            f"--test-data {dc.test_data} is not read: a test file is the test split with --split file, not {split}"
        )
    if split == "auto" and dc.test_data:  # a test file given: it is the test split
        split = "file"
    if split == "auto":
        # the notebooks' split where their data can fill it; a PhraseBank subset too small for 300 + 300
        # a label (Sentences_AllAgree.txt: 570 positives) is split like any other file
        counts = Counter(e.label for e in ds.examples)
        fits = all(counts[lab] >= dc.train_per_label + dc.test_per_label for lab in labels)
        split = "notebook" if is_phrasebank(dc.data, ds.path) and fits else "stratified"
    if split == "notebook":
        splits = split_notebook(
            ds.examples, labels, dc.train_per_label, dc.test_per_label, dc.eval_per_label, dc.seed
        )
        # The notebooks sample eval with replacement (kept, for their exact rows). With little left of a
        # label, as all-data.csv's 4 spare negatives, that is a few sentences counted many times: say so.
        # Half: n draws from n spare rows already repeat about a third of them, so this fires only when
        # fewer than about 0.6 n rows are left. Distinct by text, as duplicate rows are one sentence.
        texts = {lab: [e.text for e in splits["eval"] if e.label == lab] for lab in labels}
        ds.thin_eval = {lab: (len(set(t)), len(t)) for lab, t in texts.items() if 2 * len(set(t)) < len(t)}
    elif split == "stratified":
        splits = split_stratified(ds.examples, dc.test_size, dc.eval_size, dc.seed)
    elif split == "random":
        splits = split_random(ds.examples, dc.test_size, dc.eval_size, dc.seed)
    else:
        if not dc.test_data:
            raise FinsentError("--split file needs --test-data FILE")
        test = read_file(
            resolve_data(dc.test_data), dc.labels, dc.label_map, dc.text_column, dc.label_column,
            dc.skip_invalid, score_thresholds=dc.score_thresholds,
        )  # fmt: skip
        test_texts = {e.text for e in test.examples}
        pool = ds.examples
        ds.in_train_and_test = len({e.text for e in pool} & test_texts)
        if dc.dedupe and ds.in_train_and_test:
            kept = [e for e in pool if e.text not in test_texts]
            ds.dropped_by_dedupe += len(pool) - len(kept)
            pool = ds.examples = kept
        train, ev = _stratified_cut(pool, dc.eval_size, dc.seed, "eval")
        splits = {"train": train, "eval": ev, "test": test.examples}
    ds.split, ds.sizes = split, {name: len(exs) for name, exs in splits.items()}
    # rows of the file in no split, by source row (--split file: the test rows are another file's)
    used = {e.source_row for name, exs in splits.items() if split != "file" or name != "test" for e in exs}
    ds.unused = sum(e.source_row not in used for e in ds.examples)
    return ds, splits


def spread(rows: list, limit: int) -> list:
    """`limit` rows evenly spaced through `rows` (all of them for 0 or at least their number): a split
    ordered by label keeps each label's share, where its first N rows would hold one label only."""
    n = len(rows)
    return list(rows) if not limit or limit >= n else [rows[i * n // limit] for i in range(limit)]


def counts_table(splits: dict[str, list[Example]], labels: list[str]) -> str:
    """Label counts per split; for a mixture, per source within each split too."""
    width = max([8, *(len(n) + len(e.source) + 3 for n, exs in splits.items() for e in exs)])
    lines = [f"{'split':<{width}}" + "".join(f"{lab:>10}" for lab in labels) + f"{'total':>10}"]

    def row(name: str, exs: list[Example]) -> str:
        c = Counter(e.label for e in exs)
        return f"{name:<{width}}" + "".join(f"{c.get(lab, 0):>10}" for lab in labels) + f"{len(exs):>10}"

    for name, exs in splits.items():
        lines.append(row(name, exs))
        sources = list(dict.fromkeys(e.source for e in exs if e.source))
        lines += [row(f"  {name}/{src}", [e for e in exs if e.source == src]) for src in sources]
    return "\n".join(lines)


def export_splits(splits: dict[str, list[Example]], folder: str | Path) -> list[Path]:
    """Write each split as FOLDER/NAME.csv. The files are one set: all are written under temporary names
    first, and only then renamed into place, so a failed write leaves the earlier set whole."""
    from finsent.core.fsio import atomic_path, out_folder

    out_folder(folder, model_ok=False)
    paths = [Path(folder) / f"{name}.csv" for name in splits]
    for path in paths:  # the one failure a rename would meet after the others were done
        if path.is_dir():
            raise FinsentError(f"--out {folder}: {path.name} is a folder; choose another --out")
    with contextlib.ExitStack() as stack:  # each atomic_path renames on its exit, after every write
        for path, exs in zip(paths, splits.values()):
            tmp = stack.enter_context(atomic_path(path))
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                if any(e.source for e in exs):  # a mixture: which source each row comes from
                    w.writerow(["source_row", "text", "label", "source"])
                    w.writerows([e.source_row, e.text, e.label, e.source] for e in exs)
                else:
                    w.writerow(["source_row", "text", "label"])
                    w.writerows([e.source_row, e.text, e.label] for e in exs)
    return paths
