"""finsent bench: a model, its zero-shot base and two baselines on the benchmark suite, as one table."""

from dataclasses import dataclass

from finsent.cli import common
from finsent.core.fields import opt
from finsent.core.options import Config
from finsent.data.corpora import BENCH_SETS

HELP = "score a model, its zero-shot base and baselines on the benchmark's test sets"
EXAMPLE = (
    "finsent bench --model runs/demo/merged_model --out runs/bench\n"
    "  finsent bench --model runs/multi/model --against runs/bench --out runs/bench-multi\n"
    "  finsent bench --adapter runs/train/adapter --sets fpb,semeval-headlines --out runs/bench-lora\n"
    "  finsent bench --model smollm2-135m --sets fpb-notebook --limit 60 --out runs/quick"
)
SECTIONS = ("model", "prompt")


@dataclass
class Args:
    config: str | None = common.config()
    adapter: str | None = common.adapter()
    sets: str = opt(
        "",
        f"comma-separated benchmark sets: {', '.join(b.name for b in BENCH_SETS)} (default: every set "
        "whose files are under $FINSENT_DATA_DIR; a hub-hosted one once downloaded, never fetched here)",
        metavar="NAMES",
    )
    no_zero_shot: bool = opt(False, "leave out the zero-shot row (the base model without fine-tuning)")
    no_baselines: bool = opt(False, "leave out the majority-class and TF-IDF + LR rows")
    strict_overlap: bool = opt(
        False,
        "refuse a test set that shares texts with the model's training data, and a model whose training "
        "data cannot be read (default: score the other rows and report how many were left out)",
    )
    limit: int = opt(
        0,
        "only N test rows of each set, evenly spaced through it (a test split may be ordered by label), "
        "for a quick check (0 = all)",
        at_least=0,
    )
    against: str = opt(
        "",
        "an earlier `finsent bench --out` folder: its model's row joins the table with a paired test, every "
        "row on the test rows both benches scored",
        metavar="DIR",
    )
    n_resamples: int = opt(1000, "bootstrap resamples of each score's interval", at_least=1)
    batch_size: int = common.batch_size()
    out: str = common.out("output folder: benchmark.json, .md, .png and the model's predictions per set")


def main(args: Args, cfg: Config) -> int:
    from finsent.pipeline.bench import bench

    names = [n.strip() for n in args.sets.split(",") if n.strip()] or None
    bench(
        cfg, cfg.model, args.adapter, args.out, names, zero_shot=not args.no_zero_shot,
        baselines=not args.no_baselines, batch_size=args.batch_size, limit=args.limit,
        strict_overlap=args.strict_overlap, n_resamples=args.n_resamples, against=args.against or None,
    )  # fmt: skip
    return 0
