"""Batch prediction over texts, files or stdin, streamed in chunks.

    finsent predict --model runs/demo/merged_model "Operating profit rose to EUR 13.1 mn ."
    finsent predict --model runs/demo/merged_model --input news.csv --text-column sentence --out out.jsonl
    cat headlines.txt | finsent predict --model runs/demo/merged_model --out out.csv

Input: CSV/TSV (header row), JSONL, Parquet, or TXT (one text a line), read by the data layer's reader
(UTF-8, else Latin-1, the PhraseBank's own encoding); another suffix is an error. Output: CSV or JSONL by suffix (CSV on
stdout without --out): the id column when the input has one, the text, the predicted label and one
probability per label. A bad row (empty text, broken JSON) is reported with its line number and
skipped, unless --strict; the output is written atomically.

Corpora larger than one process (one GPU per process on CUDA, by LOCAL_RANK):

    torchrun --nproc_per_node 8 -m finsent predict --model M --input big.csv --out out.csv

Under torchrun (or alone with --shard-rows N) the rows are cut into contiguous shards, dealt to the
ranks in turn (shard j to rank j mod WORLD_SIZE); each shard is written atomically to
OUTPUT.shards/part-00003-of-00012.csv with a small .json marker beside it, rank 0 waits for the others,
then concatenates the shards in order into OUTPUT (atomically) and removes the folder: the same rows,
order and labels as one process. OUTPUT.shards/manifest.json records the input's fingerprint, the
options and the shard plan, so a restarted run (any number of processes) skips the shards already
written, and a changed input or option is refused instead of mixed in.
"""

from __future__ import annotations

import os
import sys

from finsent.core.errors import FinsentError
from finsent.serving.rows import Input, Writer, _limit, all_bad, classify_rows, settle_id_column
from finsent.serving.sharded import SHARD_ROWS, _rank_env, predict_sharded


def predict(
    clf, source: Input, output: str | None, shard_rows: int | None = None, adapter: str | None = None
) -> dict:
    """Classify every row of `source` into `output` (stdout when None), holding the output's lock: two
    predictions never write one file (under torchrun rank 0 holds it for every rank). See _predict."""
    with output_lock(output):
        if output and output != "-" and _rank_env()[0] == 0:  # a killed predict's `.NAME.*.tmp` (our lock)
            from pathlib import Path

            from finsent.core.fsio import remove_leftovers

            remove_leftovers(Path(output).parent, name=Path(output).name)
        summary = _predict(clf, source, output, shard_rows, adapter)
    if summary["bad"] and not summary["predicted"]:  # (the sharded path's check; see _predict's)
        raise all_bad(summary["bad"])
    return summary


def output_lock(output: str | None):
    """The lock beside a predict output (core/lock.py), taken by rank 0; nothing for stdout."""
    import contextlib

    from finsent.core.lock import hold

    if not output or output == "-" or _rank_env()[0] != 0:
        return contextlib.nullcontext()
    return hold(output, "predict", beside=True)


def _predict(clf, source: Input, output: str | None, shard_rows: int | None, adapter: str | None) -> dict:
    """Classify every row; returns counts {rows, predicted, bad, sentences_per_second}.

    Under torchrun (WORLD_SIZE set) with a file input and output, or with `shard_rows`, the work is
    sharded and resumable (predict_sharded); `adapter` is then recorded in the shard manifest.
    A text whose prompt is over `source.max_tokens` (default: the server's limit, MAX_TOKENS) or the
    model's context is a bad row: reported with its line and reason, skipped and counted, or the end of
    the run if `source.strict`."""
    import time

    # torchrun with one process still shards when it can (resumable); with several it must
    under_torchrun = "WORLD_SIZE" in os.environ and source.path not in (None, "-") and bool(output)
    if shard_rows or under_torchrun or _rank_env()[1] > 1:
        return predict_sharded(clf, source, output, shard_rows or SHARD_ROWS, adapter)

    from finsent.core.console import progress_bar

    # one shard of the sharded loop, streamed: the whole input, into the output itself
    id_column, rows = settle_id_column(source.id_column, source.rows())
    if rows is None:
        if source.path not in (None, "-"):
            raise FinsentError(f"{source.path}: no rows to classify")
        raise FinsentError("no input: pass texts, --input FILE, or pipe text on stdin")
    limit = _limit(clf, source.max_tokens)
    start = time.perf_counter()
    with Writer(output, clf.labels, id_column) as writer, progress_bar(0, "predicting") as bar:
        numbered = enumerate(rows)
        done, bad = classify_rows(clf, numbered, writer, source.text_column, source.strict, limit, bar)
        if bad and not done:  # raised inside the writer's block: no output file of a header alone
            raise all_bad(bad)
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
