"""finsent merge: an adapter merged into its base in full precision, kept only if predictions agree."""

from dataclasses import dataclass

from finsent.cli import common
from finsent.core.artefacts import ADAPTER_DIR
from finsent.core.fields import opt
from finsent.core.options import Config
from finsent.deploy.merge import MIN_AGREEMENT

HELP = "merge an adapter into its base in full precision, with a parity check"
EXAMPLE = f"finsent merge --adapter runs/train/{ADAPTER_DIR} --out runs/merged"
SECTIONS = ("model", "data")  # data: the eval split of the parity check, when the model names none


@dataclass
class Args:
    config: str | None = common.config()
    adapter: str = common.adapter(required=True)
    out: str = common.out("where the merged model goes")
    min_agreement: float = opt(
        MIN_AGREEMENT,
        "fail unless merged and adapter predictions agree on this share of the eval split",
        at_least=0,
        at_most=1,
    )


def main(args: Args, cfg: Config) -> int:
    from finsent.deploy.merge import merge

    merge(cfg, args.adapter, args.out, args.min_agreement)
    print(f"merged model saved to {args.out}")
    return 0
