"""The Financial PhraseBank: named subsets, the local data folder, the hub download."""

from __future__ import annotations

import os
from pathlib import Path

from finsent.core.errors import FinsentError

FPB_FILES = {
    "50agree": "Sentences_50Agree.txt",
    "66agree": "Sentences_66Agree.txt",
    "75agree": "Sentences_75Agree.txt",
    "allagree": "Sentences_AllAgree.txt",
}


DATA_DIR_ENV = "FINSENT_DATA_DIR"


HUB_DATASET = "takala/financial_phrasebank"


def resolve_data(spec: str) -> Path:
    """A path; a named corpus (`semeval-headlines[:test]`, `sentfin`, ... see data/corpora.py) found under
    $FINSENT_DATA_DIR; a hub-hosted one (`tfns[:test]`, `fiqa-sa[:test]`, `nwgi[:test]`) or `fpb[:subset]`:
    found there, else in a local mirror of the hub's layout ($FINSENT_HUB_MIRROR, $FINSENT_FPB_MIRROR),
    else fetched from the hub (online; data/hub.py)."""
    from finsent.data import corpora, hub

    if not spec:
        raise FinsentError(
            "no data: pass --data FILE (a CSV/TSV/JSONL/Parquet file with a header row, see --text-column and "
            f"--label-column), --data NAME for a corpus under ${DATA_DIR_ENV} ({', '.join(corpora.CORPORA)}), "
            f"--data NAME[:test] for a hub corpus ({', '.join(h.name for h in corpora.HUB_SETS)}), "
            "or --data fpb to download the Financial PhraseBank"
        )
    if corpora.is_named(spec):
        return corpora.resolve(spec)
    if corpora.is_hub(spec):
        return hub.resolve_hub(spec)
    if not is_fpb_name(spec):
        path = Path(spec).expanduser()
        if not path.exists() and not path.suffix:  # a misspelt corpus name more often than a file
            raise FinsentError(
                f"{spec}: no such file, nor a corpus name (under ${DATA_DIR_ENV}: "
                f"{', '.join(corpora.CORPORA)}; on the hub: {', '.join(h.name for h in corpora.HUB_SETS)}; "
                "or fpb)"
            )
        if path.is_dir() and path.suffix.lower() != ".parquet":  # (a partitioned Parquet set is a folder)
            raise FinsentError(f"{spec}: a folder; pass a data file in it, or a corpus name")
        return path
    subset = spec.split(":", 1)[1].lower() if ":" in spec else "50agree"
    if subset not in FPB_FILES:
        raise FinsentError(f"--data {spec}: unknown subset '{subset}' (use {', '.join(FPB_FILES)})")
    name = FPB_FILES[subset]
    root = os.environ.get(DATA_DIR_ENV)
    found = corpora.find_local(corpora.fpb_paths(name))
    if found:
        return found
    try:
        return fetch_fpb(subset)
    except Exception as e:  # offline, hub refused, layout changed: an earlier download, else how to fix it
        cached = hub.cached_download(fpb_cache_file(subset))
        if cached:
            return cached
        raise FinsentError(
            f"--data {spec}: {name} not found"
            + (f" under ${DATA_DIR_ENV}={root}" if root else f" (${DATA_DIR_ENV} is not set)")
            + f" and fetching {HUB_DATASET} failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            f"set {DATA_DIR_ENV} to the folder holding the Financial PhraseBank files (FinancialPhraseBank-v1.0"
            ".zip from the authors), or FINSENT_HUB_MIRROR to a folder of the hub's parquet layout, or go online "
            "once (unset HF_HUB_OFFLINE), or pass --data PATH"
        ) from None


def is_phrasebank(spec: str, path: str | os.PathLike) -> bool:
    """The notebooks' data: `fpb[:subset]`, a PhraseBank file (Sentences_*Agree.txt) or all-data.csv
    (the Kaggle copy of the 50% agreement subset the notebooks read): what `--split auto` gives the
    notebooks' split, so their figures stay comparable. Any other file is split stratified."""
    name = Path(path).name
    return is_fpb_name(spec) or name in FPB_FILES.values() or name == "all-data.csv"


def is_fpb_name(spec: str) -> bool:
    """`fpb` or `fpb:SUBSET` (not `fpb-notebok`: a misspelt name is an error, never the 50% subset)."""
    return spec.lower() == "fpb" or spec.lower().startswith("fpb:")


# The hub's copy is a loading script, which datasets 4+ refuses to run; the hub's own parquet conversion
# of it (data/hub.py) needs no script. Set FINSENT_FPB_REVISION to a commit of that branch to pin it; the
# commit used is recorded beside the data.
HUB_LABELS = ("negative", "neutral", "positive")  # the dataset's ClassLabel order


def fpb_cache_file(subset: str) -> Path:
    from finsent.core.fsio import cache_root

    return cache_root() / "data" / FPB_FILES[subset]


def fetch_fpb(subset: str) -> Path:
    """The PhraseBank subset as a local `sentence@label` file (the format of the authors' own files) in
    finsent's cache, from $FINSENT_FPB_MIRROR (a local folder of the hub's layout, <config>/<split>/
    *.parquet), $FINSENT_HUB_MIRROR/takala/financial_phrasebank, or the hub's parquet conversion."""
    import pandas as pd

    from finsent.data import hub

    config = f"sentences_{subset}"
    mirror = os.environ.get(hub.FPB_MIRROR_ENV)
    roots = hub.mirror_roots(HUB_DATASET, [Path(mirror).expanduser()] if mirror else [])
    revision = os.environ.get("FINSENT_FPB_REVISION", hub.REVISION)
    found = hub.parquet_files(HUB_DATASET, config, ("train",), roots, revision)
    files = found.files["train"]
    frame = pd.concat([pd.read_parquet(f, columns=["sentence", "label"]) for f in files], ignore_index=True)
    lines = [f"{text}@{HUB_LABELS[int(label)]}\n" for text, label in zip(frame.sentence, frame.label)]
    data = "".join(lines).encode("latin-1", "replace")  # the authors' encoding
    return hub.write_converted(fpb_cache_file(subset), data, found, len(lines))
