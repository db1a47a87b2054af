"""finsent data: read, check and split a data set; export the splits."""

from dataclasses import dataclass

from finsent.cli import common
from finsent.core.options import Config

HELP = "read, check and split a data set; export the splits as CSV"
EXAMPLE = f"finsent data --data {common.DATA} --out runs/data"
SECTIONS = ("data",)
REFUSED = {"--export": "--out DIR (one flag for every output path)"}


@dataclass
class Args:
    config: str | None = common.config()
    out: str | None = common.out(
        "write train.csv, eval.csv, test.csv and the resolved config here", required=False
    )


def main(args: Args, cfg: Config) -> int:
    from finsent.core.config import save_config
    from finsent.data.splits import counts_table, export_splits, make_splits

    ds, splits = make_splits(cfg.data)
    print(f"{ds.path}: {ds.split_line()}")
    for flaw in ds.flaws():
        print(f"  {flaw}")
    print(counts_table(splits, cfg.data.labels))
    if args.out:
        for path in export_splits(splits, args.out):
            print(f"wrote {path}")
        save_config(cfg, args.out)
    return 0
