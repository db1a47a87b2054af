"""Several data sources in one run (`data.sources`): each split on its own, then combined, with no text of
any test split in any training or eval split.

    finsent train --config smollm2-cpu --sources "all-data,sentfin cap=1600,semeval-headlines"

    data:
      sources:
        - all-data                    # split as alone: --split auto, the notebooks' split here
        - sentfin cap=1600            # at most 1,600 training rows (a seeded sample, label shares kept)
        - semeval-headlines weight=2  # its training rows twice
        - fpb split=random test_size=0.25  # its own split (FinGPT's FPB split), whatever data.* says
        - all-data test-only          # only tested on (the notebooks' 900 test sentences), never trained on
        - my_posts.csv                # any file finsent reads

A source with an official test file (SemEval-2017) is tested on it, and its training file gives train and
eval (stratified, data.eval_size); any other source is split as it would be alone. Then every training and
eval row whose text is in some source's test split is left out, matched exactly and after normalising
(case, whitespace, punctuation): the corpora share texts (186 FiQA posts are SemEval test microblogs).
Each row keeps its source's name (`Example.source`), so evaluations report every source and the whole.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.fields import current_name, not_a_choice, out_of_range
from finsent.data.dataset import Example, LabelledData
from finsent.data.phrasebank import is_fpb_name

Splits = dict[str, list[Example]]


@dataclass(frozen=True)
class Source:
    spec: str  # a path, a corpus name or fpb[:subset]
    name: str  # how reports name it: the corpus name or the file's stem
    cap: int | None = None  # at most this many training rows
    weight: float = 1.0  # training rows x weight (2 = each twice; 0.5 = a seeded half)
    split: str | None = None  # its own data.split (else the run's)
    test_size: float | None = None  # its own data.test_size (stratified/random splits; else the run's)
    test_only: bool = False  # its test split is scored (and kept out of training); nothing else is used


# a source's own options, checked by the options' one range check (core/fields.out_of_range)
# (a weight past 100 copies a source's rows beyond any use: weight=1e9 was a MemoryError)
SOURCE_RANGES = {"cap": {"at_least": 1}, "weight": {"at_least": 1e-9, "at_most": 100}}


def _data_field(name: str) -> dict:
    from finsent.core.options import DataConfig

    return DataConfig.__dataclass_fields__[name].metadata


def parse_source(text: str, field: str = "data.sources") -> Source:
    """'SPEC [cap=N] [weight=W] [split=S] [test_size=X] [name=NAME] [test-only]' as a Source, or a
    one-line error naming the entry."""
    from finsent.data import corpora

    parts = text.split()
    if not parts:
        raise FinsentError(f"{field}: an empty entry")
    spec, options = parts[0], {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if part == "test-only":
            options["test_only"] = True
            continue
        if key == "split" and eq:  # data.split's values and earlier names, less file (a source's own)
            meta = _data_field("split")
            if value == "file" or not_a_choice(meta, value):
                choices = ", ".join(c for c in meta["choices"] if c != "file")
                raise FinsentError(f"{field}: {text!r}: split={value} is not one of {choices}")
            options["split"] = current_name(meta, value)
            continue
        if key == "name" and eq:  # how reports name it: two files with one stem need two names
            if not re.fullmatch(r"[\w.-]+", value):
                raise FinsentError(
                    f"{field}: {text!r}: name={value!r} is not letters, digits, '.', '-' or '_'"
                )
            options["name"] = value
            continue
        if not eq or key not in ("cap", "weight", "test_size"):
            raise FinsentError(
                f"{field}: {text!r}: {part!r} is not cap=N, weight=W, split=S, test_size=X, name=NAME or "
                "test-only"
            )
        try:
            options[key] = int(value) if key == "cap" else float(value)
        except ValueError:
            raise FinsentError(f"{field}: {text!r}: {key}={value!r} is not a number") from None
        problem = out_of_range(SOURCE_RANGES.get(key) or _data_field(key), options[key])
        if problem or not math.isfinite(options[key]):
            raise FinsentError(f"{field}: {text!r}: {key}={problem or value}")
    named = corpora.is_named(spec) or corpora.is_hub(spec) or is_fpb_name(spec)
    name = options.get("name") or (spec.split(":")[0].lower() if named else Path(spec).stem or spec)
    return Source(
        spec, name, options.get("cap"), options.get("weight", 1.0), options.get("split"),
        options.get("test_size"), options.get("test_only", False),
    )  # fmt: skip


def normalised(text: str) -> str:
    """A text as compared for leaks: case folded, only letters and digits, single spaces (`\\w` alone
    keeps '_', and all-data.csv writes one PhraseBank sentence's '-' as '-_')."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())


def make_mixture(
    dc, split_one: Callable[[object], tuple[LabelledData, Splits]]
) -> tuple[LabelledData, Splits]:
    """Read and split every source of `dc.sources` (split_one: data.splits.make_splits for one source),
    leave out the training and eval rows whose text is in a test split, apply caps and weights, and
    combine them. The LabelledData's notes hold each source's split line and flaws, and the leak counts."""
    if dc.data:
        raise FinsentError(
            "data.data and data.sources both name data: use one (a source list, or one file; "
            "--sources '' drops a config's list)"
        )
    sources = [parse_source(s) for s in dc.sources]
    names = [s.name for s in sources]
    if len(set(names)) < len(names):
        raise FinsentError(
            f"data.sources: a source is named twice ({', '.join(names)}); name=NAME names one apart"
        )
    parts = [(src, *_split_source(dc, src, split_one)) for src in sources]
    files: dict[Path, str] = {}
    for src, ds, _ in parts:  # one file under two names would be trained on twice and tested twice
        path = Path(ds.path).resolve() if Path(ds.path).is_file() else None
        if path in files:
            raise FinsentError(f"data.sources: {files[path]} and {src.name} are the same file ({ds.path})")
        if path:
            files[path] = src.name
    # a test-only source: its test part is all that is used, so its train/eval split and their flaws
    # (a thin notebook eval split) are not reported as if it trained
    for src, ds, _ in parts:
        if src.test_only:
            ds.thin_eval = {}
    notes = [
        f"{src.name}: test {len(splits['test'])} (test-only: scored, never trained on)"
        if src.test_only
        else f"{src.name}: {ds.split_line()}"
        for src, ds, splits in parts
    ]
    notes += [f"{src.name}: {flaw}" for src, ds, _ in parts for flaw in ds.flaws()]
    notes += _drop_test_texts([splits for _, _, splits in parts])
    combined: Splits = {"train": [], "eval": [], "test": []}
    for i, (src, _, splits) in enumerate(parts):
        if src.test_only:
            splits["train"], splits["eval"] = [], []
        train = _cap_and_weigh(splits["train"], src, dc.seed + i)
        if len(train) != len(splits["train"]):
            notes.append(f"{src.name}: {len(splits['train'])} training rows -> {len(train)} (cap/weight)")
        if src.cap is not None and len(train) < len(splits["train"]) and splits["eval"]:
            # a capped source keeps the same share of its eval rows: the eval split is scored every epoch
            keep = max(1, round(len(splits["eval"]) * len(train) / len(splits["train"])))
            splits["eval"] = _cap_and_weigh(splits["eval"], Source(src.spec, src.name, cap=keep), dc.seed + i)
        for name, rows in (("train", train), ("eval", splits["eval"]), ("test", splits["test"])):
            combined[name] += [_tagged(e, src.name) for e in rows]
    ds = LabelledData(f"mixture of {len(sources)} sources ({', '.join(names)})", [])
    ds.examples = [e for rows in combined.values() for e in rows]
    ds.notes = notes
    ds.split, ds.sizes = "mixture", {k: len(v) for k, v in combined.items()}
    return ds, combined


def _split_source(dc, src: Source, split_one) -> tuple[LabelledData, Splits]:
    from finsent.data import corpora

    one = copy.deepcopy(dc)
    one.sources, one.data, one.test_data = [], src.spec, ""  # (a source's test file is its own)
    one.split = src.split or dc.split
    one.test_size = src.test_size or dc.test_size
    whole = ":" not in src.spec  # NAME, not NAME:test
    if whole and not src.split and corpora.is_hub(src.spec):  # the hub set's test part (FinGPT's)
        one.split, one.test_data = "file", f"{src.name}:test"
    test_file = corpora.test_file(src.name) if corpora.is_named(src.spec) and whole else None
    if test_file is not None and not src.split:  # its official test file; train and eval: its training file
        one.split, one.test_data = "file", str(test_file)
    ds, splits = split_one(one)
    if one.split == "file":
        ds.test_from = Path(one.test_data).name if Path(one.test_data).suffix else one.test_data
    return ds, splits


def _drop_test_texts(all_splits: list[Splits]) -> list[str]:
    """Leave out of every train and eval split the rows whose text is in any test split; the counts."""
    exact = {e.text for splits in all_splits for e in splits["test"]}
    loose = {normalised(t) for t in exact}
    dropped_exact = dropped_loose = 0
    for splits in all_splits:
        for name in ("train", "eval"):
            kept = []
            for e in splits[name]:
                if e.text in exact:
                    dropped_exact += 1
                elif normalised(e.text) in loose:
                    dropped_loose += 1
                else:
                    kept.append(e)
            splits[name] = kept
    if not dropped_exact + dropped_loose:
        return ["test texts: none is in a training or eval split"]
    return [
        f"test texts: {dropped_exact + dropped_loose} training/eval rows were left out because their text is in"
        f" a test split ({dropped_exact} exact matches, {dropped_loose} more after normalising case, spaces"
        " and punctuation)"
    ]


def _cap_and_weigh(rows: list[Example], src: Source, seed: int) -> list[Example]:
    """Training rows x weight (whole copies, then a seeded sample for the fraction), then at most `cap`,
    sampled per label so that label shares are kept."""
    rng = random.Random(seed)
    target = round(len(rows) * src.weight)
    out = rows * (target // len(rows)) if rows else []
    out += rng.sample(rows, target - len(out)) if rows else []
    if src.cap is not None and len(out) > src.cap:
        by_label: dict[str, list[int]] = {}
        for i, e in enumerate(out):  # by position: a weighted source holds the same row several times
            by_label.setdefault(e.label, []).append(i)
        # largest remainder: each label's share of the cap, rounded so that the total is exactly `cap`
        quota = {lab: src.cap * len(ix) / len(out) for lab, ix in by_label.items()}
        take = {lab: math.floor(q) for lab, q in quota.items()}
        for lab in sorted(quota, key=lambda k: take[k] - quota[k])[: src.cap - sum(take.values())]:
            take[lab] += 1
        chosen = sorted(i for lab, ix in by_label.items() for i in rng.sample(ix, take[lab]))
        out = [out[i] for i in chosen]
    return out


def _tagged(e: Example, source: str) -> Example:
    return Example(e.source_row, e.text, e.label, source)
