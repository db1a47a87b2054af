"""Reading labelled sentences from any supported file, with one registry of file suffixes.

Every example keeps `source_row`, its 0-based data row in the source file, so a split can always be
traced back to the file it came from.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.labels import LabelMapper
from finsent.data.dataset import Example, LabelledData, _find_repeats
from finsent.data.formats import (
    DEFAULT_THRESHOLDS,
    Invalid,
    corpus_rows,
    detect_json,
    is_number,
    is_sentfin,
    json_items,
    parse_thresholds,
    score_label,
    score_value,
)

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
            yield i, None, None, None, f"{path}:{i + 1}: no '@label' in {line[:40]!r}"
            continue
        text, label = line.rsplit("@", 1)
        yield i, None, text, label, None


def _rows_headerless_csv(path: Path, text: str):
    """The notebooks' all-data.csv: `label,sentence`, no header, CR line ends, Latin-1 bytes."""
    for i, row in enumerate(csv.reader(io.StringIO(text, newline=""))):
        if len(row) != 2:
            yield i, None, None, None, f"{path}:{i + 1}: expected 2 fields (label,sentence), got {len(row)}"
            continue
        yield i, None, row[1], row[0], None


def _decode_any(path: Path) -> str:
    raw = _check_binary(path, _read_bytes(path))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # every byte string is valid Latin-1, the PhraseBank's own encoding; but a UTF-8 file with one bad
        # byte is then read wrong everywhere ('€' as 'â\x82¬'): say where the first one is
        lenient = raw.decode("utf-8", errors="replace")
        if re.search("[^\x00-\x7f\ufffd]", lenient):  # a UTF-8 character decoded (pure Latin-1 has none)
            from finsent.core.console import note

            line = raw[: e.start].count(b"\n") + 1
            note(
                f"{path}: not UTF-8 (line {line}: byte 0x{raw[e.start]:02x}), so read as Latin-1: its other "
                "UTF-8 characters (é, €, ...) come out garbled; fix that byte, or save the file as UTF-8"
            )
        return raw.decode("latin-1")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FinsentError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FinsentError(f"{path}: is a folder, expected a file") from None


def _records(path: Path, text_column: str, label_column: str | None):
    """CSV/TSV with a header, JSONL or Parquet; yields (row, where, record with every column, error), where
    is the row's first line (a quoted CSV field may hold line breaks)."""
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
            yield i, where(path, kind, i), rec, None
        return
    content = _decode_any(path)
    if kind == "jsonl":
        seen_cols = False
        # lines end at \n, \r\n or a lone \r (text_lines' rule): str.splitlines also breaks at U+2028 and
        # U+0085, which json.dumps leaves raw inside strings (ensure_ascii=False)
        for i, line in enumerate(re.split(r"\r\n|\r|\n", content)):
            if not line.strip():
                continue
            at = f"{path}:{i + 1}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, at, None, f"{at}: invalid JSON ({e.msg})"
                continue
            if not isinstance(rec, dict):
                yield i, at, None, f"{at}: expected a JSON object"
                continue
            if not seen_cols:
                _check_columns(path, list(rec), text_column, label_column)
                seen_cols = True
            yield i, at, rec, None
        return
    delimiter = "\t" if kind == "tsv" else ","
    csv.field_size_limit(1 << 30)  # (the default, 131,072 characters, made a long field a traceback)
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise FinsentError(f"{path}: empty file")
    header = [h.strip() for h in header]
    _check_columns(path, header, text_column, label_column)
    total = sum(1 for _ in io.StringIO(content, newline=""))  # the file's lines, as the reader counts them
    last = reader.line_num
    for i, row in enumerate(reader):
        first, last = last + 1, reader.line_num
        at = f"{path}:{first}"
        if not row:
            continue
        # a quote never closed swallows every line after it, to the file's end, whether or not the field
        # count then looks right: say so, and stop (the lines it took are lost, not one bad row) unless
        # --skip-invalid
        runs_off = last > first and last >= total
        unclosed = runs_off and _quote_never_closed(content, first, delimiter)
        if len(row) != len(header) or unclosed:
            error = f"{at}: expected {len(header)} fields, got {len(row)}" if len(row) != len(header) else at
            if runs_off:
                error = Invalid(
                    f"{error}: the row runs on to line {last}, the file's end (a quote opened here never "
                    "closed?)"
                )
            yield i, at, None, error
            continue
        yield i, at, dict(zip(header, row)), None


def _quote_never_closed(content: str, first: int, delimiter: str) -> bool:
    """Whether the row starting on line `first` ends inside a quoted field (csv's strict mode says
    "unexpected end of data"; the lenient reader used for the file keeps such a row, whatever lines it
    swallowed). Only asked of the row that runs to the file's end."""
    import itertools

    row_text = "".join(itertools.islice(io.StringIO(content, newline=""), first - 1, None))
    try:
        list(csv.reader(io.StringIO(row_text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


def _rows_table(path: Path, text_column: str, label_column: str | None):
    """(row, where, text, label, error) from _records."""
    for i, at, rec, error in _records(path, text_column, label_column):
        missing = [c for c in (text_column, label_column) if rec is not None and c and c not in rec]
        if rec is None:
            yield i, at, None, None, error
        elif missing:  # a JSON Lines record without the field (the first record's fields were checked)
            yield i, at, None, None, Invalid(f"{at}: no '{missing[0]}' field")
        else:
            yield i, at, rec.get(text_column), rec.get(label_column) if label_column else None, None


def _rows_json_array(path: Path, content: str, text_column: str, label_column: str | None):
    """A JSON array of records (not JSON Lines): like JSONL, each record at the line it starts on."""
    for i, line, _key, rec, error in json_items(path, content):
        at = f"{path}:{line}"
        if error:
            yield i, at, None, None, Invalid(f"{at}: record {i}: {error}")
        elif not isinstance(rec, dict):
            yield i, at, None, None, f"{at}: record {i}: expected a JSON object"
        else:
            if i == 0:
                _check_columns(path, list(rec), text_column, label_column)
            yield i, at, rec.get(text_column), rec.get(label_column) if label_column else None, None


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
    (where, record with every column, error) for CSV/TSV (header row), JSONL or a JSON array of records,
    Parquet, or a .txt file (one text a line, record {text_column: line}). UTF-8, else Latin-1; other
    suffixes are an error."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "txt":
        with open(path, "rb", buffering=1 << 16) as fh:  # peek() sees the first 64 KiB
            yield from text_lines(fh, str(path), text_column)
    elif kind == "jsonl" and _starts_an_array(path):  # a JSON array of records, not JSON Lines
        for i, line, _key, rec, error in json_items(path, _decode_any(path)):
            at = f"{path}:{line}"
            if error or not isinstance(rec, dict):
                yield at, None, f"{at}: record {i}: {error or 'expected a JSON object'}"
            else:
                yield at, rec, None
    else:
        for _i, at, rec, error in _records(path, text_column, None):
            yield at, rec, error


def _starts_an_array(path: Path) -> bool:
    """Whether the file's first character (past a BOM and white space) opens a JSON array: decided on
    its first bytes, so that JSON Lines is not read and decoded twice."""
    with open(path, "rb") as fh:
        head = fh.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


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


def _rows(path: Path, kind: str, mapper: LabelMapper, text_column: str, label_column: str, cuts, notes):
    """The reader for `path`, by its suffix and then its content, and the kind `where` locates rows by:
    a PhraseBank .txt, all-data.csv (no header), one of the published corpora (formats.py), a JSON array
    of records, or a CSV/TSV/JSONL/Parquet table with a header."""
    if kind == "txt":
        return _rows_phrasebank(path), "phrasebank"
    if kind == "csv":
        content = _decode_any(path)
        if is_sentfin(content):
            return corpus_rows(path, "sentfin", content, cuts, notes), "csv"
        if _looks_headerless_labelled(content, mapper):
            return _rows_headerless_csv(path, content), "headerless"  # all-data.csv: no header line
    if kind == "jsonl":
        content = _decode_any(path)
        corpus = detect_json(path, content)
        if corpus == "array":
            return _rows_json_array(path, content, text_column, label_column), kind
        if corpus:
            return corpus_rows(path, corpus, content, cuts, notes), kind
    return _rows_table(path, text_column, label_column), kind


def _label_problem(raw_label: object, mapper: LabelMapper, scores: bool, cuts=DEFAULT_THRESHOLDS) -> str:
    """Why a raw label is refused, and what to pass instead."""
    if scores:
        try:
            named = score_label(raw_label, cuts)
        except ValueError:
            return f"label {raw_label!r} is not a number (--label-map scores: the label column holds scores)"
        return (
            f"score {raw_label!r} means {named!r}, which is not one of {', '.join(mapper.labels)} "
            "(--label-map scores labels positive, neutral and negative)"
        )
    why = f"label {raw_label!r} is not one of {', '.join(mapper.labels)}"
    if is_number(raw_label) and not float(str(raw_label).strip()).is_integer():
        return why + (
            ": the labels are numbers; if they are sentiment scores pass --label-map scores "
            "(--score-thresholds sets where negative, neutral and positive begin)"
        )
    return why + " (set --labels or --label-map, e.g. '0=negative,1=neutral,2=positive')"


def _why_no_rows(path: Path, ds: LabelledData) -> str:
    """`no usable rows` and why: what the rows were refused for, or that there were none."""
    why = [f"{len(ds.invalid)} bad rows skipped (first: {ds.invalid[0]})"] if ds.invalid else []
    if ds.malformed:
        why.append(f"{len(ds.malformed)} malformed rows (first: {ds.malformed[0]})")
    why += ds.notes
    return f"{path}: no usable rows: " + ("; ".join(why) if why else "the file holds no data rows")


def read_file(
    path: str | os.PathLike,
    labels: list[str],
    label_map: str = "",
    text_column: str = "text",
    label_column: str = "label",
    skip_invalid: bool = False,
    dedupe: bool = False,
    score_thresholds: str | tuple = "-0.1,0.1",
) -> LabelledData:
    """Read labelled sentences from a PhraseBank file, all-data.csv, SemEval-2017 Task 5, FiQA 2018 or
    SEntFiN file, or CSV/TSV/JSONL/Parquet. `label_map='scores'`: the label column holds sentiment
    scores, labelled by `score_thresholds` (as the score-labelled corpora always are)."""
    path = Path(path)
    scores = label_map.strip().lower() == "scores"
    cuts = parse_thresholds(score_thresholds)
    mapper = LabelMapper(labels, "" if scores else label_map)
    ds = LabelledData(str(path), [])
    rows, kind = _rows(path, file_kind(path), mapper, text_column, label_column, cuts, ds.notes)
    lo, hi = math.inf, -math.inf  # the scores' range (--label-map scores), reported when past [-1, 1]
    for i, at, text, raw_label, error in rows:
        if error and not isinstance(error, Invalid):
            ds.malformed.append(error)
            continue
        at = at or where(path, kind, i)
        problem, label = error, None
        if problem is None and is_missing(text):
            problem = f"{at}: empty text"
        elif problem is None and not isinstance(text, str):  # {"text": 5} or a list: not a sentence
            problem = f"{at}: text {text!r:.60} is not a string"
        elif problem is None:
            try:
                if scores:  # the score read once: its label, and the range it widens
                    x = score_value(raw_label)
                    lo, hi = min(lo, x), max(hi, x)
                label = mapper(score_label(x, cuts) if scores else raw_label)
            except ValueError:
                label = None
            if label is None:
                problem = f"{at}: {_label_problem(raw_label, mapper, scores, cuts)}"
        if problem:
            if not skip_invalid:
                raise FinsentError(problem + " (or pass --skip-invalid)")
            ds.invalid.append(problem)
            continue
        ds.examples.append(Example(i, str(text).strip(), label))
    if not ds.examples:
        raise FinsentError(_why_no_rows(path, ds))
    if lo < -1 or hi > 1:  # a rating on another scale labelled by thresholds meant for [-1, 1]?
        ds.notes.append(
            f"--label-map scores: the scores run from {lo:g} to {hi:g}, labelled by thresholds "
            f"{cuts[0]:g},{cuts[1]:g} (set --score-thresholds for another scale)"
        )
    _find_repeats(ds, dedupe)
    return ds
