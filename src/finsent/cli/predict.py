"""finsent predict: classify texts, a file or stdin, streamed; sharded and resumable under torchrun."""

import sys
from dataclasses import dataclass
from pathlib import Path

from finsent.cli import common
from finsent.core.errors import FinsentError
from finsent.core.fields import opt
from finsent.core.options import Config
from finsent.data.readers import FILE_KINDS, file_kind
from finsent.serving.errors import MAX_TOKENS

HELP = "classify texts, a CSV/TSV/JSONL/Parquet/TXT file, or stdin"
EXAMPLE = (
    'finsent predict --model runs/demo/merged_model "Operating profit rose to EUR 13.1 mn ."\n'
    "  finsent predict --model runs/demo/merged_model --input news.csv --out out.jsonl\n"
    "  torchrun --nproc_per_node 4 -m finsent predict --model runs/demo/merged_model --input big.csv --out out.csv"
)
SECTIONS = ("model", "prompt", "data.labels")
REFUSED = {"--output": "--out FILE (one flag for every output path)"}


@dataclass
class Args:
    texts: list = opt([], "texts to classify (else --input, else stdin)", positional=True)
    config: str | None = common.config()
    adapter: str | None = common.adapter()
    input: str | None = opt(
        None, "CSV/TSV (header row), JSONL, Parquet or TXT file; '-' for stdin", metavar="FILE"
    )
    out: str | None = common.out("CSV or JSONL file (by suffix); CSV on stdout when omitted", "FILE", False)
    text_column: str = opt("text", "text column of a CSV/JSONL input")
    id_column: str | None = opt(None, "column copied to the output (default: id or source_row when present)")
    strict: bool = opt(False, "stop at the first bad row instead of skipping it")
    shard_rows: int | None = opt(
        None, "rows per shard of a resumable run in OUT.shards/ (default under torchrun: 10000)", at_least=1
    )
    max_tokens: int = opt(
        MAX_TOKENS,
        "prompt tokens per text, as in serve (also capped by the model's context); a longer text is a bad "
        "row: reported with its line, skipped and counted (or the end of the run with --strict)",
        at_least=1,
    )
    priors: str | None = common.priors()
    batch_size: int = common.batch_size()


def main(args: Args, cfg: Config) -> int:
    from finsent.serving.api import Classifier
    from finsent.serving.predict import output_lock, predict
    from finsent.serving.rows import Input
    from finsent.serving.sharded import use_local_gpu

    if not args.texts and args.input is None and sys.stdin.isatty():
        raise FinsentError("no input: pass texts, --input FILE, or pipe text on stdin")
    if args.input not in (None, "-"):  # a missing or unreadable kind of file is told before the model loads
        if not Path(args.input).is_file():
            raise FinsentError(f"{args.input}: file not found")
        file_kind(args.input)
    out = None if args.out == "-" else args.out  # '-': stdout, as for --input
    if out and FILE_KINDS.get(Path(out).suffix.lower()) not in ("csv", "jsonl"):
        raise FinsentError(f"--out {out}: write a .csv or a .jsonl file (by its suffix)")
    if out and Path(out).is_dir():  # (found otherwise only when the rows are written)
        raise FinsentError(f"--out {out}: is a folder; name a .csv or .jsonl file")
    use_local_gpu()  # under torchrun: this process's own GPU (LOCAL_RANK), before the model loads
    with output_lock(out):  # a second predict into the same file is refused before the model loads
        clf = Classifier.from_config(cfg, args.adapter, args.batch_size, args.priors)
        source = Input(args.texts, args.input, args.text_column, args.id_column, args.strict, args.max_tokens)
        predict(clf, source, out, shard_rows=args.shard_rows, adapter=args.adapter)
    return 0  # (predict() refuses an input whose every row is bad)
