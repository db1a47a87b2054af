"""Reading labelled sentences from any supported file, with one registry of file suffixes.

Every example keeps `source_row`, its 0-based data row in the source file, so a split can always be
traced back to the file it came from.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.labels import LabelMapper
from finsent.data.dataset import Dataset, Example, _find_repeats

# The one registry of file types: suffix -> kind. Readers, the location of a row in messages (line
# numbers count a CSV/TSV header; Parquet rows have no line) and predict's output format all use it.
FILE_KINDS = {
    ".txt": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
HEADER_LINES = {"csv": 1, "tsv": 1}  # lines before data row 0


def file_kind(path: str | os.PathLike) -> str:
    """The registry's kind of `path` by its suffix, else a one-line error naming the file."""
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_KINDS:
        raise FinsentError(
            f"{path}: unsupported file type '{suffix}' (use .txt, .csv, .tsv, .jsonl or .parquet)"
        )
    return FILE_KINDS[suffix]


def where(path, kind: str, row: int) -> str:
    """A data row's place for messages: file:line, or file: row N for Parquet."""
    return f"{path}: row {row}" if kind == "parquet" else f"{path}:{row + 1 + HEADER_LINES.get(kind, 0)}"


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
    kind = file_kind(path)
    if kind == "parquet":
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
    if kind == "jsonl":
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
    delimiter = "\t" if kind == "tsv" else ","
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
    kind = file_kind(path)
    if kind == "txt":
        with open(path, "rb", buffering=1 << 16) as fh:  # peek() sees the first 64 KiB
            yield from text_lines(fh, str(path), text_column)
    else:
        for i, rec, error in _records(path, text_column, None):
            yield where(path, kind, i), rec, error


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
    kind = file_kind(path)
    if kind == "txt":
        rows, kind = _rows_phrasebank(path), "phrasebank"
    elif kind == "csv" and _looks_headerless_labelled(content := _decode_any(path), mapper):
        rows, kind = _rows_headerless_csv(path, content), "headerless"  # all-data.csv: no header line
    else:
        rows = _rows_table(path, text_column, label_column)

    ds = Dataset(str(path), [])
    for i, text, raw_label, error in rows:
        if error:
            ds.malformed.append(error)
            continue
        at = where(path, kind, i)
        problem = None
        if is_missing(text):
            problem = f"{at}: empty text"
        else:
            label = mapper(raw_label)
            if label is None:
                problem = (
                    f"{at}: label {raw_label!r} is not one of {', '.join(mapper.labels)}"
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
