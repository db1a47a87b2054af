"""Full fine-tuning of the embedded model, measured before it is offered: `finsent train` without LoRA.

    python bench/full_train.py --config configs/smollm2-cpu.yaml --out runs/x [any finsent train option]

Run by bench/ablate.py for its `full-*` experiments. The same trainer, fast loss, data and schedule as
`finsent train`; the only changes are that no LoRA config reaches TRL (every weight trains) and the
weights load in float32 with bf16 autocast where the CPU has it (AdamW updates on bf16 weights would
round most of a small learning rate's steps away). The "adapter" folder it writes holds the whole model,
so it is evaluated with `finsent evaluate --model` instead of `--adapter`.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from transformers import PreTrainedModel

    import finsent.train_args
    from finsent.cli import main as finsent_main
    from finsent.models import cpu_has_bf16

    finsent.train_args.lora_config = lambda cfg, model: None  # train() imports it at call time
    PreTrainedModel.print_trainable_parameters = lambda self: print(  # PEFT's report, for a plain model
        f"trainable params: {sum(p.numel() for p in self.parameters() if p.requires_grad):,d} (all)",
        file=sys.stderr,
    )
    precision = ["--model.dtype", "float32"] + (["--train.bf16"] if cpu_has_bf16() else [])
    return finsent_main(["train", *argv, *precision])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
