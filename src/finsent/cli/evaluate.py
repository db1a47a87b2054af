"""finsent evaluate: accuracy, F1, calibration and the confusion matrix of a model on a split."""

import sys
from dataclasses import dataclass
from pathlib import Path

from finsent.cli import common
from finsent.core.fields import opt
from finsent.core.options import Config

HELP = "accuracy, F1 and confusion matrix of a model on a split"
EXAMPLE = f"finsent evaluate --data {common.DATA} --subset test --out runs/zero-shot"
SECTIONS = ("model", "data", "prompt")


@dataclass
class Args:
    config: str | None = common.config()
    adapter: str | None = common.adapter()
    subset: str = opt("test", "which split", choices=("train", "eval", "test"))
    method: str = opt(
        "score",
        "score: full label likelihoods; generate: the notebooks' one-token generation",
        choices=("score", "generate"),
    )
    batch_size: int = common.batch_size()
    priors: str | None = common.priors()
    limit: int = opt(
        0,
        "only N sentences, evenly spaced through the split: each label keeps its share (0 = all)",
        at_least=0,
    )
    out: str = common.out("output folder")


def main(args: Args, cfg: Config) -> int:
    from finsent.core.config import save_config
    from finsent.data.splits import make_splits, spread
    from finsent.evaluation.evaluate import evaluate
    from finsent.modeling.calibration import parse_priors

    ds, splits = make_splits(cfg.data)
    for line in [ds.split_line(), *ds.flaws()]:
        print(f"data: {line}", file=sys.stderr)
    examples = spread(splits[args.subset], args.limit)
    priors = parse_priors(args.priors, cfg.data.labels)  # a bad --priors fails before the model loads
    title = (
        f"{cfg.model.model}{' + ' + args.adapter if args.adapter else ''} on {args.subset} ({args.method})"
    )
    ev = evaluate(
        cfg, examples, args.out, adapter=args.adapter, batch_size=args.batch_size, method=args.method,
        priors=priors, title=title, info={"subset": args.subset},
    )  # fmt: skip
    save_config(cfg, args.out)
    print(ev.report)
    m = ev.metrics
    print(
        f"{m['examples_per_second']:.1f} sentences/s on {m['device']} ({m['dtype']}); wrote {Path(args.out)}/"
    )
    return 0
