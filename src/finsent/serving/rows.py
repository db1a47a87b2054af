"""Prediction's input rows and output writer, shared by plain and sharded prediction.

Rows come from texts, a file (through the data readers) or stdin; each bad row is reported with its
line and skipped, or stops the run under --strict. Output is CSV or JSONL by suffix, written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.data.readers import FILE_KINDS
from finsent.serving.errors import MAX_TOKENS

# rows per classify() call, counted in input rows (bad ones too): chunks then start at the same rows in
# one process and in a sharded run (shards are whole chunks), so both make the same batches and write
# byte-identical outputs
CHUNK = 256

Row = tuple[str, dict | None, str]  # (where, record or None when bad, error), as iter_rows yields it


@dataclass(frozen=True)
class Input:
    """What prediction reads and how each row becomes a text: texts given on the command line, else a
    file (`path`; None or '-' for stdin), its text and id columns, --strict, and the token limit."""

    texts: list[str] = field(default_factory=list)
    path: str | None = None
    text_column: str = "text"
    id_column: str | None = None
    strict: bool = False
    max_tokens: int | None = MAX_TOKENS

    def rows(self) -> Iterator[Row]:
        return iter_rows(self.path, self.text_column, self.texts)


def iter_rows(path: str | None, text_column: str, texts: list[str]) -> Iterator[Row]:
    """(where, record or None when bad, error) for every input row: texts given on the command line,
    stdin (a text a line), or a file read by the data layer's own reader (finsent.data.iter_records)."""
    if texts:
        for i, t in enumerate(texts, 1):
            yield f"argument {i}", {text_column: t}, ""
        return
    from finsent.data.readers import iter_records, text_lines

    if path in (None, "-"):
        for where, rec, _ in text_lines(sys.stdin.buffer, "stdin", text_column):
            yield where, rec, ""
        return

    for where, rec, error in iter_records(path, text_column):
        yield where, rec, error or ""


def all_bad(n: int) -> FinsentError:
    return FinsentError(f"every one of the {n} input rows was bad (each reported above)")


def settle_id_column(id_column: str | None, rows: Iterator[Row], look: int = 1000):
    """(the output's id column, the same rows): --id-column, else that of the first good row among the
    first `look` (a broken first line must not take every row's id away). None rows: an empty input."""
    import itertools

    seen: list[Row] = []
    for row in rows:
        seen.append(row)
        if row[1] is not None or len(seen) >= look:
            break
    if not seen:
        return None, None
    first = next((rec for _, rec, _ in seen if rec is not None), None)
    return default_id_column(id_column, first), itertools.chain(seen, rows)


def default_id_column(id_column: str | None, first: dict | None) -> str | None:
    """--id-column when given (an error if the first row has no such column), else the first row's id,
    ID or source_row column when it has one."""
    if id_column is None and first is not None:
        return next((c for c in ("id", "ID", "source_row") if c in first), None)
    if id_column is not None and first is not None and id_column not in first:
        raise FinsentError(f"--id-column {id_column}: the input has no such column ({', '.join(first)})")
    return id_column


def classify_rows(
    clf, numbered: Iterable[tuple[int, Row]], writer: Writer, text_column: str, strict: bool, limit, bar
) -> tuple[int, int]:
    """The one row loop of prediction: plain predict runs it once over the whole input, sharded predict
    once a shard. Each row's text (a bad row reported and skipped, or an error if `strict`: _text) is
    classified in chunks that end after input row i when (i + 1) % CHUNK == 0, and written to `writer`.
    The numbers are the input's own row numbers, not the shard's: a shard's batches, and so its bytes,
    are those of the same rows in one plain run. Returns (predicted, bad rows)."""
    done = bad = 0
    chunk: list[tuple[dict, str]] = []
    for i, (where, rec, err) in numbered:
        text = _text(where, rec, err, text_column, strict, clf.codec, limit)
        if text is None:
            bad += 1
        else:
            chunk.append((rec, text))
        if (i + 1) % CHUNK == 0 and chunk:
            done += _write_chunk(clf, chunk, writer, bar)
    if chunk:
        done += _write_chunk(clf, chunk, writer, bar)
    return done, bad


def _write_chunk(clf, chunk: list[tuple[dict, str]], writer: Writer, bar) -> int:
    """Classify the chunk's texts in one call, write their rows, empty the chunk: how many were written."""
    results = clf.predict([t for _, t in chunk])
    for (rec, text), r in zip(chunk, results):
        writer.write(rec, text, r["label"], list(r["probabilities"].values()))
    n = len(chunk)
    bar.update(n)
    chunk.clear()
    return n


class Writer:
    """CSV or JSONL rows to a file (atomically: renamed into place only when its block ends without an
    error) or to stdout."""

    def __init__(self, output: str | None, labels: list[str], id_column: str | None, header: bool = True):
        self.labels, self.id_column = labels, id_column
        self.jsonl = bool(output) and FILE_KINDS.get(Path(output).suffix.lower()) == "jsonl"
        self._files = contextlib.ExitStack()
        if output:
            from finsent.core.fsio import atomic_path

            tmp = self._files.enter_context(atomic_path(output))
            self.fh = self._files.enter_context(open(tmp, "w", newline="", encoding="utf-8"))  # noqa: SIM115
        else:
            self.fh = sys.stdout
        if not self.jsonl:
            self.csv = csv.writer(self.fh)
        # a shard has no header (shards are concatenated under one); the header waits for the first row
        # or a clean end, so that stdout gets nothing before an error (--strict)
        self._header = header and not self.jsonl

    def write_header(self) -> None:
        """The CSV header, once (a JSONL output and a shard have none)."""
        if self._header:
            self._header = False
            self.csv.writerow(
                ([self.id_column] if self.id_column else [])
                + ["text", "predicted"]
                + [f"p_{x}" for x in self.labels]
            )

    def write(self, rec: dict, text: str, label: str, probs: list[float]) -> None:
        self.write_header()
        if self.jsonl:
            out = ({self.id_column: rec.get(self.id_column)} if self.id_column else {}) | {
                "text": text,
                "predicted": label,
                "probabilities": dict(zip(self.labels, probs)),
            }
            self.fh.write(json.dumps(out, ensure_ascii=False, default=_plain) + "\n")
        else:
            self.csv.writerow(
                ([rec.get(self.id_column)] if self.id_column else [])
                + [text, label]
                + [f"{p:.6f}" for p in probs]
            )

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        """Flush; a file output is renamed into place, or deleted when the block raised."""
        if exc[0] is None:
            self.write_header()  # an output with no rows still has its header
        self.fh.flush()
        self._files.__exit__(*exc)


def _limit(clf, max_tokens: int | None) -> tuple[int | None, str]:
    """(most prompt tokens per text, why): --max-tokens or the model's context (PromptCodec.prompt_limit)."""
    from finsent.modeling.scoring import model_context

    return clf.codec.prompt_limit(model_context(clf.model), max_tokens)


def _text(where: str, rec: dict | None, err: str, text_column: str, strict: bool, codec, limit) -> str | None:
    """The row's text, or None for a bad row: empty, unreadable, or a prompt over `limit` (reported on
    stderr; with `strict`, an error)."""
    from finsent.data.readers import is_missing

    value = None if rec is None else rec.get(text_column)
    if not err and rec is not None and text_column not in rec:
        err = f"{where}: no '{text_column}' field"
    elif not err and not is_missing(value) and not isinstance(value, str):  # JSON 5, [..], {..}
        err = f"{where}: '{text_column}' is not a string ({type(value).__name__})"
    text = None if err or is_missing(value) else str(value).strip()
    if text is not None:
        err = codec.too_long(text, *limit)
        err = err and f"{where}: {err}"
    if err or text is None:
        msg = err or f"{where}: empty text"
        if strict:
            raise FinsentError(msg + " (--strict)")
        print(f"skipped {msg}", file=sys.stderr)
        return None
    return text


def _plain(value):
    """Parquet ids arrive as numpy scalars or timestamps: JSON gets their plain value."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
