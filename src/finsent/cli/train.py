"""finsent train: LoRA, QLoRA or full fine-tuning, or a dry run that resolves everything without weights."""

from dataclasses import dataclass

from finsent.cli import common
from finsent.core.errors import FinsentError
from finsent.core.fields import opt
from finsent.core.options import Config

HELP = "LoRA/QLoRA or full fine-tuning with TRL's SFTTrainer"
EXAMPLE = (
    "finsent train --config configs/smollm2-cpu.yaml --data my.csv --out runs/train      # full fine-tuning\n"
    "  finsent train --config configs/smollm2-cpu.yaml --data my.csv --train.method lora "
    "--train.learning_rate 1e-3 --out runs/train   # LoRA\n"
    "  finsent train --config configs/llama-3.2-1b-notebook.yaml --data fpb --dry-run"
)
SECTIONS = ("model", "data", "prompt", "lora", "train")


@dataclass
class Args:
    config: str | None = common.config()
    dry_run: bool = opt(
        False, "resolve everything without weights: parameters, optimizer steps, memory per device"
    )
    num_processes: int | None = opt(
        None,
        "with --dry-run: processes (devices) in all (default: the accelerate config's, else 1)",
        at_least=1,
    )
    strategy: str | None = opt(
        None,
        "with --dry-run: ddp replicates on every device, fsdp / zero3 shard (default: ddp)",
        choices=("ddp", "fsdp", "zero3"),
    )
    accelerate_config: str | None = opt(
        None, "with --dry-run: take processes and sharding from this accelerate config file", metavar="FILE"
    )


def main(args: Args, cfg: Config) -> int:
    spread = (args.num_processes, args.strategy, args.accelerate_config)
    if not args.dry_run and any(x is not None for x in spread):
        raise FinsentError(
            "--num-processes, --strategy and --accelerate-config go with --dry-run; to train on many "
            "devices: accelerate launch --config_file FILE -m finsent train ..."
        )
    if args.dry_run:
        from finsent.training.dryrun import dry_run, parallelism, report

        par = parallelism(args.num_processes, args.strategy, args.accelerate_config)
        print(report(cfg, dry_run(cfg, par)))
        return 0
    from finsent.training.train import train

    folder = train(cfg)
    print(f"{'model' if cfg.train.method == 'full' else 'adapter'} saved to {folder}")
    return 0
