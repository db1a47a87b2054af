"""Data: read labelled sentences from any supported file, report their flaws, split them.

    finsent data --data ../shared/data/kaggle_all_data/all-data.csv --split notebook --export runs/data

Every example keeps `source_row`, its 0-based data row in the source file, so a split can always be
traced back to the file it came from.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from finsent.errors import FinsentError
from finsent.labels import LabelMapper, normalise_label

FPB_FILES = {
    "50agree": "Sentences_50Agree.txt",
    "66agree": "Sentences_66Agree.txt",
    "75agree": "Sentences_75Agree.txt",
    "allagree": "Sentences_AllAgree.txt",
}
DATA_DIR_ENV = "FINSENT_DATA_DIR"
HUB_DATASET = "takala/financial_phrasebank"


@dataclass
class Example:
    source_row: int
    text: str
    label: str


@dataclass
class Dataset:
    """Examples read from one file, with what was wrong with the file."""

    path: str
    examples: list[Example]
    malformed: list[str] = field(default_factory=list)  # "file:line: why", rows skipped
    invalid: list[str] = field(default_factory=list)  # rows skipped by --skip-invalid
    duplicates: int = 0  # extra copies of a sentence with the same label
    conflicts: int = 0  # sentences that appear with more than one label
    dropped_by_dedupe: int = 0
    in_train_and_test: int = 0  # --split file: sentences of the test file also in the training data
    thin_eval: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (distinct, rows)

    def flaws(self) -> list[str]:
        out = [f"malformed: {m}" for m in self.malformed]
        out += [f"skipped: {m}" for m in self.invalid]
        if self.duplicates:
            out.append(f"duplicate sentences: {self.duplicates} extra copies")
        if self.conflicts:
            out.append(f"conflicting labels: {self.conflicts} sentences have more than one label")
        if self.dropped_by_dedupe:
            out.append(f"--dedupe dropped {self.dropped_by_dedupe} rows")
        if self.in_train_and_test:
            out.append(
                f"leak: {self.in_train_and_test} sentences of the test file are also in the training data"
                + (
                    " (--dedupe removed them from train and eval)"
                    if self.dropped_by_dedupe
                    else " (--dedupe removes them)"
                )
            )
        for label, (distinct, rows) in self.thin_eval.items():
            out.append(
                f"eval split: {rows} '{label}' rows hold only {distinct} distinct sentence(s) (the notebook"
                " split samples eval with replacement from what train and test leave); the eval split fits"
                " the temperature and is what training's eval metrics and the parity checks of `merge` and"
                " `export` without examples measure: lower data.train_per_label / data.test_per_label or use"
                " --split stratified"
            )
        return out


# ---------------------------------------------------------------- readers


def _check_binary(path: Path, raw: bytes) -> bytes:
    """Latin-1 decodes any bytes, so a UTF-16 or binary file must be caught by its NUL bytes."""
    if b"\x00" in raw[:65536]:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise FinsentError(
            f"{path}:{line}: unreadable encoding (NUL bytes: UTF-16 or binary?); save it as UTF-8"
        )
    return raw


def _rows_phrasebank(path: Path):
    """`sentence@label` lines (the authors' files are Latin-1; a UTF-8 copy is read as UTF-8); split on
    the last '@'."""
    for i, line in enumerate(_decode_any(path).splitlines()):
        if not line.strip():
            continue
        if "@" not in line:
            yield i, None, None, f"{path}:{i + 1}: no '@label' in {line[:40]!r}"
            continue
        text, label = line.rsplit("@", 1)
        yield i, text, label, None


def _rows_headerless_csv(path: Path, text: str):
    """The notebooks' all-data.csv: `label,sentence`, no header, CR line ends, Latin-1 bytes."""
    for i, row in enumerate(csv.reader(io.StringIO(text, newline=""))):
        if len(row) != 2:
            yield i, None, None, f"{path}:{i + 1}: expected 2 fields (label,sentence), got {len(row)}"
            continue
        yield i, row[1], row[0], None


def _decode_any(path: Path) -> str:
    raw = _check_binary(path, _read_bytes(path))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # every byte string is valid Latin-1: the PhraseBank's own encoding


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FinsentError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FinsentError(f"{path}: is a folder, expected a file") from None


def _records(path: Path, text_column: str, label_column: str | None):
    """CSV/TSV with a header, JSONL or Parquet; yields (row, record with every column, error)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        try:
            df = pd.read_parquet(path)
        except FileNotFoundError:
            raise FinsentError(f"{path}: file not found") from None
        except Exception as e:
            raise FinsentError(f"{path}: not a readable Parquet file ({type(e).__name__})") from None
        _check_columns(path, list(df.columns), text_column, label_column)
        for i, rec in enumerate(df.to_dict("records")):
            yield i, rec, None
        return
    content = _decode_any(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        seen_cols = False
        for i, line in enumerate(content.splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, None, f"{path}:{i + 1}: invalid JSON ({e.msg})"
                continue
            if not isinstance(rec, dict):
                yield i, None, f"{path}:{i + 1}: expected a JSON object"
                continue
            if not seen_cols:
                _check_columns(path, list(rec), text_column, label_column)
                seen_cols = True
            yield i, rec, None
        return
    delimiter = "\t" if suffix in (".tsv", ".tab") else ","
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise FinsentError(f"{path}: empty file")
    header = [h.strip() for h in header]
    _check_columns(path, header, text_column, label_column)
    for i, row in enumerate(reader):
        if not row:
            continue
        if len(row) != len(header):
            yield i, None, f"{path}:{i + 2}: expected {len(header)} fields, got {len(row)}"
            continue
        yield i, dict(zip(header, row)), None


def _rows_table(path: Path, text_column: str, label_column: str | None):
    """(row, text, label, error) from _records."""
    for i, rec, error in _records(path, text_column, label_column):
        if rec is None:
            yield i, None, None, error
        else:
            yield i, rec.get(text_column), rec.get(label_column) if label_column else None, None


TABLES = (".csv", ".tsv", ".tab", ".jsonl", ".json", ".ndjson", ".parquet")


def is_missing(value: object) -> bool:
    """No text: absent, None, a pandas/Parquet null (NaN, NA), or only whitespace."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:  # NaN, Parquet's null in a pandas frame
        return True
    if type(value).__name__ in ("NAType", "NaTType"):
        return True
    return not str(value).strip()


def iter_records(path: str | os.PathLike, text_column: str = "text"):
    """Unlabelled rows for prediction, through the same readers and decoding as labelled data:
    (where, record with every column, error) for CSV/TSV/JSONL/Parquet (header row), or a .txt file
    (one text a line, record {text_column: line}). UTF-8, else Latin-1; other suffixes are an error."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        with open(path, "rb", buffering=1 << 16) as fh:  # peek() sees the first 64 KiB
            yield from text_lines(fh, str(path), text_column)
    elif suffix in TABLES:
        header_lines = 1 if suffix in (".csv", ".tsv", ".tab") else 0
        for i, rec, error in _records(path, text_column, None):
            yield f"{path}: row {i}" if suffix == ".parquet" else f"{path}:{i + 1 + header_lines}", rec, error
    else:
        raise FinsentError(
            f"{path}: unsupported file type '{suffix}' (use .txt, .csv, .tsv, .jsonl or .parquet)"
        )


def text_lines(stream, name: str, text_column: str = "text"):
    """(where, {text_column: line}, None) for each line of a binary stream of one text a line: a .txt
    file or stdin, one rule for both. A line ends at \\n, \\r\\n or a lone \\r (all-data.csv ends its
    lines with \\r alone; nothing else ends one: str.splitlines() would also cut at \\x85, which is how
    Latin-1 decodes cp1252's '...'). Each line is UTF-8, else Latin-1. Streamed: a pipe's rows are
    classified while it is still being written."""
    head = stream.peek(65536)[:65536] if hasattr(stream, "peek") else b""
    _check_binary(Path(name), head)
    n = 0
    for raw in stream:  # a binary stream's lines end at b"\n" only
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        for part in raw.split(b"\r"):
            n += 1
            try:
                line = part.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                line = part.decode("latin-1")
            yield f"{name}:{n}", {text_column: line}, None


def _check_columns(path: Path, columns: list[str], text_column: str, label_column: str | None) -> None:
    repeated = sorted({str(c) for c in columns if list(columns).count(c) > 1})
    if repeated:
        raise FinsentError(f"{path}: column name repeated in the header: {', '.join(repeated)}")
    for col, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if col and col not in columns:
            raise FinsentError(
                f"{path}: no column '{col}' ({flag}); columns are: {', '.join(map(str, columns))}"
            )


def _looks_headerless_labelled(text: str, mapper: LabelMapper) -> bool:
    first = next(csv.reader(io.StringIO(text, newline="")), [])
    return len(first) == 2 and mapper(first[0]) is not None


def read_file(
    path: str | os.PathLike,
    labels: list[str],
    label_map: str = "",
    text_column: str = "text",
    label_column: str = "label",
    skip_invalid: bool = False,
    dedupe: bool = False,
) -> Dataset:
    """Read labelled sentences from a PhraseBank file, all-data.csv, CSV/TSV/JSONL/Parquet."""
    path = Path(path)
    mapper = LabelMapper(labels, label_map)
    suffix = path.suffix.lower()
    header_lines = 0  # lines before data row 0, for messages
    if suffix == ".txt":
        rows = _rows_phrasebank(path)
    elif suffix == ".csv" and _looks_headerless_labelled(content := _decode_any(path), mapper):
        rows = _rows_headerless_csv(path, content)
    elif suffix in TABLES:
        rows = _rows_table(path, text_column, label_column)
        header_lines = 1 if suffix in (".csv", ".tsv", ".tab") else 0
    else:
        raise FinsentError(
            f"{path}: unsupported file type '{suffix}' (use .txt, .csv, .tsv, .jsonl or .parquet)"
        )

    ds = Dataset(str(path), [])
    for i, text, raw_label, error in rows:
        if error:
            ds.malformed.append(error)
            continue
        where = f"{path}:{i + 1 + header_lines}" if suffix != ".parquet" else f"{path}: row {i}"
        problem = None
        if is_missing(text):
            problem = f"{where}: empty text"
        else:
            label = mapper(raw_label)
            if label is None:
                problem = (
                    f"{where}: label {raw_label!r} is not one of {', '.join(mapper.labels)}"
                    " (set --labels or --label-map)"
                )
        if problem:
            if not skip_invalid:
                raise FinsentError(problem + " (or pass --skip-invalid)")
            ds.invalid.append(problem)
            continue
        ds.examples.append(Example(i, str(text).strip(), label))
    if not ds.examples:
        raise FinsentError(f"{path}: no usable rows")
    _find_repeats(ds, dedupe)
    return ds


def _find_repeats(ds: Dataset, dedupe: bool) -> None:
    by_text: dict[str, list[Example]] = defaultdict(list)
    for ex in ds.examples:
        by_text[ex.text].append(ex)
    conflicting = {t for t, exs in by_text.items() if len({e.label for e in exs}) > 1}
    ds.conflicts = len(conflicting)
    ds.duplicates = sum(len(exs) - len({e.label for e in exs}) for exs in by_text.values())
    if dedupe:
        seen: set[str] = set()
        kept = []
        for ex in ds.examples:
            if ex.text in conflicting or ex.text in seen:
                continue
            seen.add(ex.text)
            kept.append(ex)
        ds.dropped_by_dedupe = len(ds.examples) - len(kept)
        ds.examples = kept


# ---------------------------------------------------------------- data specs


def resolve_data(spec: str) -> Path:
    """A path, or `fpb[:subset]`: found under $FINSENT_DATA_DIR, else fetched from the hub (online) or a
    local mirror of the hub's layout ($FINSENT_FPB_MIRROR)."""
    if not spec.lower().startswith("fpb"):
        return Path(spec).expanduser()
    subset = spec.split(":", 1)[1].lower() if ":" in spec else "50agree"
    if subset not in FPB_FILES:
        raise FinsentError(f"--data {spec}: unknown subset '{subset}' (use {', '.join(FPB_FILES)})")
    name = FPB_FILES[subset]
    root = os.environ.get(DATA_DIR_ENV)
    if root:
        for cand in (
            Path(root) / name,
            Path(root) / "financial_phrasebank" / name,
            Path(root) / "FinancialPhraseBank-v1.0" / name,
        ):
            if cand.is_file():
                return cand
    try:
        return fetch_fpb(subset)
    except Exception as e:  # offline, hub refused, layout changed: say how to fix it
        raise FinsentError(
            f"--data {spec}: {name} not found"
            + (f" under ${DATA_DIR_ENV}={root}" if root else f" (${DATA_DIR_ENV} is not set)")
            + f" and fetching {HUB_DATASET} failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            f"set {DATA_DIR_ENV} to the folder holding the Financial PhraseBank files (FinancialPhraseBank-v1.0"
            ".zip from the authors), or go online once (unset HF_HUB_OFFLINE), or pass --data PATH"
        ) from None


# The hub's copy is a loading script, which datasets 4+ refuses to run; the hub's own parquet conversion
# of it (branch refs/convert/parquet, one folder per configuration) needs no script. Set
# FINSENT_FPB_REVISION to a commit of that branch to pin it; the commit used is recorded beside the data.
HUB_REVISION = "refs/convert/parquet"
HUB_LABELS = ("negative", "neutral", "positive")  # the dataset's ClassLabel order


def fetch_fpb(subset: str) -> Path:
    """The PhraseBank subset as a local `sentence@label` file (the format of the authors' own files) in
    finsent's cache, from the hub's parquet conversion or from $FINSENT_FPB_MIRROR, a local folder of
    the same layout (<config>/<split>/*.parquet)."""
    import pandas as pd

    from finsent.fsio import cache_root, write_json

    config = f"sentences_{subset}"
    mirror = os.environ.get("FINSENT_FPB_MIRROR")
    revision = os.environ.get("FINSENT_FPB_REVISION", HUB_REVISION)
    if mirror:
        files = sorted((Path(mirror) / config).rglob("*.parquet"))
        source = {"mirror": str(Path(mirror).resolve())}
    else:
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
            raise ConnectionError("offline mode (HF_HUB_OFFLINE=1)")
        from huggingface_hub import HfApi, hf_hub_download

        info = HfApi().dataset_info(HUB_DATASET, revision=revision, files_metadata=False)
        names = [f.rfilename for f in info.siblings or [] if f.rfilename.startswith(config + "/")]
        files = [
            Path(hf_hub_download(HUB_DATASET, f, repo_type="dataset", revision=info.sha))
            for f in sorted(names)
            if f.endswith(".parquet")
        ]
        source = {"dataset": HUB_DATASET, "revision": revision, "commit": info.sha}
    if not files:
        raise FileNotFoundError(f"no {config}/*.parquet")
    frame = pd.concat([pd.read_parquet(f, columns=["sentence", "label"]) for f in files], ignore_index=True)
    lines = [f"{text}@{HUB_LABELS[int(label)]}\n" for text, label in zip(frame.sentence, frame.label)]
    out = cache_root() / "data" / FPB_FILES[subset]
    from finsent.fsio import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_bytes("".join(lines).encode("latin-1", "replace"))  # the authors' encoding
    write_json(
        out.with_suffix(".source.json"), source | {"files": [str(f) for f in files], "rows": len(lines)}
    )
    return out


def load_dataset_from_config(dc) -> Dataset:
    """Read `dc.data` (a DataConfig) with its column, label and cleaning options."""
    return read_file(
        resolve_data(dc.data),
        dc.labels,
        dc.label_map,
        dc.text_column,
        dc.label_column,
        dc.skip_invalid,
        dc.dedupe,
    )


# ---------------------------------------------------------------- splits


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


def split_stratified(
    examples: list[Example], test_size: float, eval_size: float, seed: int
) -> dict[str, list[Example]]:
    from sklearn.model_selection import train_test_split

    y = [e.label for e in examples]
    rest, test = train_test_split(examples, test_size=test_size, random_state=seed, stratify=y)
    train, ev = train_test_split(
        rest, test_size=eval_size / (1 - test_size), random_state=seed, stratify=[e.label for e in rest]
    )
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


def make_splits(dc, ds: Dataset | None = None) -> tuple[Dataset, dict[str, list[Example]]]:
    """Read the data named by a DataConfig and split it as it asks."""
    ds = ds or load_dataset_from_config(dc)
    labels = [normalise_label(x) for x in dc.labels]
    ds.thin_eval = {}  # (a Dataset split again with other options keeps no stale report)
    if dc.split == "notebook":
        splits = split_notebook(
            ds.examples, labels, dc.train_per_label, dc.test_per_label, dc.eval_per_label, dc.seed
        )
        # The notebooks sample eval with replacement (kept, for their exact rows). With little left of a
        # label, as all-data.csv's 4 spare negatives, that is a few sentences counted many times: say so.
        # Half: n draws from n spare rows already repeat about a third of them, so this fires only when
        # fewer than about 0.6 n rows are left. Distinct by text, as duplicate rows are one sentence.
        texts = {lab: [e.text for e in splits["eval"] if e.label == lab] for lab in labels}
        ds.thin_eval = {lab: (len(set(t)), len(t)) for lab, t in texts.items() if 2 * len(set(t)) < len(t)}
    elif dc.split == "stratified":
        splits = split_stratified(ds.examples, dc.test_size, dc.eval_size, dc.seed)
    elif dc.split == "random":
        splits = split_random(ds.examples, dc.test_size, dc.eval_size, dc.seed)
    else:
        if not dc.test_data:
            raise FinsentError("--split file needs --test-data FILE")
        test = read_file(
            dc.test_data, dc.labels, dc.label_map, dc.text_column, dc.label_column, dc.skip_invalid
        )
        from sklearn.model_selection import train_test_split

        test_texts = {e.text for e in test.examples}
        pool = ds.examples
        ds.in_train_and_test = len({e.text for e in pool} & test_texts)
        if dc.dedupe and ds.in_train_and_test:
            kept = [e for e in pool if e.text not in test_texts]
            ds.dropped_by_dedupe += len(pool) - len(kept)
            pool = ds.examples = kept
        train, ev = train_test_split(
            pool, test_size=dc.eval_size, random_state=dc.seed, stratify=[e.label for e in pool]
        )
        splits = {"train": train, "eval": ev, "test": test.examples}
    return ds, splits


def counts_table(splits: dict[str, list[Example]], labels: list[str]) -> str:
    lines = [f"{'split':<8}" + "".join(f"{lab:>10}" for lab in labels) + f"{'total':>10}"]
    for name, exs in splits.items():
        c = Counter(e.label for e in exs)
        lines.append(f"{name:<8}" + "".join(f"{c.get(lab, 0):>10}" for lab in labels) + f"{len(exs):>10}")
    return "\n".join(lines)


def export_splits(splits: dict[str, list[Example]], folder: str | Path) -> list[Path]:
    from finsent.fsio import atomic_path

    out = []
    for name, exs in splits.items():
        path = Path(folder) / f"{name}.csv"
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["source_row", "text", "label"])
            w.writerows([e.source_row, e.text, e.label] for e in exs)
        out.append(path)
    return out
