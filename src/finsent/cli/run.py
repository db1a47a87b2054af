"""finsent run: the whole notebook in one command."""

from dataclasses import dataclass

from finsent.cli import common
from finsent.core.artefacts import MERGED_MODEL_DIR, REPORT_FILE, RUN_TRAIN_DIR, SUMMARY_FILE
from finsent.core.options import Config

HELP = "the whole notebook: split, zero-shot, train, evaluate, merge, report"
EXAMPLE = f"finsent run --config configs/smollm2-cpu.yaml --data {common.DATA} --out runs/demo"
SECTIONS = ("model", "data", "prompt", "lora", "train")
# run trains into OUT/train: a second place for the same folder would be silently overridden
REFUSED = {"--train.output_dir": "--out DIR (run trains into DIR/train)"}


@dataclass
class Args:
    config: str | None = common.config()
    out: str = common.out(
        f"output folder: evaluations, {RUN_TRAIN_DIR}/, {MERGED_MODEL_DIR}/, {REPORT_FILE}, {SUMMARY_FILE}"
    )
    batch_size: int = common.batch_size()


def main(args: Args, cfg: Config) -> int:
    from finsent.pipeline.run import run

    run(cfg, args.out, args.batch_size)
    return 0
