"""Batch prediction over texts, files or stdin, streamed in chunks.

    finsent predict --model runs/demo/merged_model "Operating profit rose to EUR 13.1 mn ."
    finsent predict --model runs/demo/merged_model --input news.csv --text-column sentence --output out.jsonl
    cat headlines.txt | finsent predict --model runs/demo/merged_model --output out.csv

Input: CSV/TSV (header row), JSONL, or TXT (one text a line). Output: CSV or JSONL by suffix (CSV on
stdout without --output): the id column when the input has one, the text, the predicted label and one
probability per label. A bad row (empty text, broken JSON) is reported with its line number and
skipped, unless --strict; the output is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from finsent.errors import FinsentError

CHUNK = 256


def iter_rows(path: str | None, text_column: str, texts: list[str]) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, record or None when bad, error) for every input row, read lazily."""
    if texts:
        for i, t in enumerate(texts, 1):
            yield i, {text_column: t}, ""
        return
    if path in (None, "-"):
        stream, suffix = sys.stdin, ".txt"
    else:
        p = Path(path)
        if not p.is_file():
            raise FinsentError(f"{path}: file not found")
        stream, suffix = open(p, encoding="utf-8", errors="replace", newline=""), p.suffix.lower()  # noqa: SIM115
    with stream if stream is not sys.stdin else io.nullcontext(stream):
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(stream, delimiter="\t" if suffix == ".tsv" else ",")
            if text_column not in (reader.fieldnames or []):
                raise FinsentError(
                    f"{path}: no column '{text_column}' (--text-column); columns are: "
                    f"{', '.join(reader.fieldnames or [])}"
                )
            for rec in reader:
                yield reader.line_num, rec, ""
        elif suffix in (".jsonl", ".json", ".ndjson"):
            for i, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not an object")
                except ValueError as e:
                    yield i, None, f"invalid JSON ({e})"
                    continue
                yield i, rec, ""
        else:
            for i, line in enumerate(stream, 1):
                yield i, {text_column: line.rstrip("\r\n")}, ""


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
            self.fh.write(json.dumps(out, ensure_ascii=False) + "\n")
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
        for line, rec, err in _chain(first, rows):
            text = "" if rec is None else str(rec.get(text_column) or "").strip()
            if err or not text:
                msg = f"{input_path or 'input'}:{line}: {err or 'empty text'}"
                if strict:
                    raise FinsentError(msg + " (--strict)")
                print(f"skipped {msg}", file=sys.stderr)
                bad += 1
                continue
            chunk.append((rec, text))
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


def _chain(first, rest):
    yield first
    yield from rest
