"""Batch prediction over texts, files or stdin, streamed in chunks.

    finsent predict --model runs/demo/merged_model "Operating profit rose to EUR 13.1 mn ."
    finsent predict --model runs/demo/merged_model --input news.csv --text-column sentence --output out.jsonl
    cat headlines.txt | finsent predict --model runs/demo/merged_model --output out.csv

Input: CSV/TSV (header row), JSONL, Parquet, or TXT (one text a line), read by the data layer's reader
(UTF-8, else Latin-1, the PhraseBank's own encoding); another suffix is an error. Output: CSV or JSONL by suffix (CSV on
stdout without --output): the id column when the input has one, the text, the predicted label and one
probability per label. A bad row (empty text, broken JSON) is reported with its line number and
skipped, unless --strict; the output is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from finsent.errors import FinsentError

CHUNK = 256


def iter_rows(path: str | None, text_column: str, texts: list[str]) -> Iterator[tuple[str, dict | None, str]]:
    """(where, record or None when bad, error) for every input row: texts given on the command line,
    stdin (a text a line), or a file read by the data layer's own reader (finsent.data.iter_records)."""
    if texts:
        for i, t in enumerate(texts, 1):
            yield f"argument {i}", {text_column: t}, ""
        return
    if path in (None, "-"):
        for i, line in enumerate(sys.stdin, 1):
            yield f"stdin:{i}", {text_column: line.rstrip("\r\n")}, ""
        return
    from finsent.data import iter_records

    for where, rec, error in iter_records(path, text_column):
        yield where, rec, error or ""


class Writer:
    """CSV or JSONL rows to a file (atomically: renamed into place only by close(ok=True)) or to stdout."""

    def __init__(self, output: str | None, labels: list[str], id_column: str | None):
        self.labels, self.id_column = labels, id_column
        self.jsonl = bool(output) and Path(output).suffix.lower() in (".jsonl", ".json", ".ndjson")
        self._files = contextlib.ExitStack()
        if output:
            from finsent.fsio import atomic_path

            tmp = self._files.enter_context(atomic_path(output))
            self.fh = self._files.enter_context(open(tmp, "w", newline="", encoding="utf-8"))  # noqa: SIM115
        else:
            self.fh = sys.stdout
        if not self.jsonl:
            self.csv = csv.writer(self.fh)
            self.csv.writerow(
                ([id_column] if id_column else []) + ["text", "predicted"] + [f"p_{x}" for x in labels]
            )

    def write(self, rec: dict, text: str, label: str, probs: list[float]) -> None:
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
        self.fh.flush()
        self._files.__exit__(*exc)


def predict(
    clf,
    texts: list[str],
    input_path: str | None,
    output: str | None,
    text_column: str = "text",
    id_column: str | None = None,
    strict: bool = False,
) -> dict:
    """Classify every row; returns counts {rows, predicted, bad, sentences_per_second}."""
    import time

    from finsent.console import progress_bar
    from finsent.data import is_missing

    rows = iter_rows(input_path, text_column, texts)
    first = next(rows, None)
    if first is None:
        raise FinsentError("no input: pass texts, --input FILE, or pipe text on stdin")
    if id_column is None and first[1] is not None:
        id_column = next((c for c in ("id", "ID", "source_row") if c in first[1]), None)
    bad, done = 0, 0
    start = time.perf_counter()
    chunk: list[tuple[dict, str]] = []

    def flush():
        nonlocal done
        results = clf.predict([t for _, t in chunk])
        for (rec, text), r in zip(chunk, results):
            writer.write(rec, text, r["label"], list(r["probabilities"].values()))
        done += len(chunk)
        bar.update(len(chunk))
        chunk.clear()

    with Writer(output, clf.labels, id_column) as writer, progress_bar(0, "predicting") as bar:
        for where, rec, err in _chain(first, rows):
            value = None if rec is None else rec.get(text_column)
            if err or is_missing(value):
                msg = err or f"{where}: empty text"
                if strict:
                    raise FinsentError(msg + " (--strict)")
                print(f"skipped {msg}", file=sys.stderr)
                bad += 1
                continue
            chunk.append((rec, str(value).strip()))
            if len(chunk) >= CHUNK:
                flush()
        if chunk:
            flush()
    seconds = time.perf_counter() - start
    summary = {
        "rows": done + bad,
        "predicted": done,
        "bad": bad,
        "sentences_per_second": done / seconds if seconds else 0.0,
    }
    print(
        f"{done} predicted, {bad} bad rows skipped, {summary['sentences_per_second']:.1f} sentences/s",
        file=sys.stderr,
    )
    return summary


def _plain(value):
    """Parquet ids arrive as numpy scalars or timestamps: JSON gets their plain value."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _chain(first, rest):
    yield first
    yield from rest
