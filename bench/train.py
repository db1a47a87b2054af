"""Training speed: the notebooks' SFTTrainer recipe against `finsent train`, same model, data and machine.

    .venv/bin/python -m bench.train              # 240 training sentences, 1 epoch each
    .venv/bin/python -m bench.train --quick      # 48 sentences, under 3 minutes
    .venv/bin/python -m bench.train --samples 900 --epochs 3    # the notebooks' whole run (hours here)
    .venv/bin/python -m bench.train --out bench/results/train.jsonl   # and append the result there

Both sides start from the same base model (the embedded SmolLM2-135M unless --model), train on the same
first N sentences of the notebook split's training set for the same number of epochs, and are then scored
on the seed eval split (150 sentences) by the same evaluator. Each side runs in its own process so its
peak memory (max RSS) is its own.

The notebooks' recipe, as close as a CPU allows: LoRA r=64/alpha 16/dropout 0.1/all-linear, batch 1 x
gradient accumulation 8, gradient checkpointing, lr 2e-4, cosine, warm-up 0.03, weight decay 0.001,
max_grad_norm 0.3, group_by_length, the prompt+label text with loss on every token; adamw_torch instead of
paged_adamw_32bit, and the base in the dtype finsent's `auto` picks (bf16 on a CPU with bf16 matmuls, else
float32) instead of 4-bit with fp16 compute (neither exists on a CPU). finsent: configs/smollm2-cpu.yaml.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import DATA, ROOT
from finsent.core.registry import DEFAULT_MODEL


def setup(model_name: str, samples: int):
    from finsent.core.config import build_config
    from finsent.data.readers import read_file
    from finsent.data.splits import split_notebook

    cfg = build_config(ROOT / "configs" / "smollm2-cpu.yaml")
    cfg.model.model = model_name
    splits = split_notebook(read_file(DATA, cfg.data.labels).examples, cfg.data.labels)
    splits["train"] = splits["train"][:samples]
    return cfg, splits


def run_notebook(cfg, splits, epochs: float, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from finsent.core.prompts import PromptCodec
    from finsent.modeling.load import load_model

    model, tokenizer, _ = load_model(cfg.model, trainable=True)
    # dtype auto: bf16 base weights on a CPU with bf16 matmuls (the notebooks' 4-bit base computes in fp16)
    precision = "bf16" if model.get_input_embeddings().weight.dtype == torch.bfloat16 else "float32"
    codec = PromptCodec.from_config(cfg, tokenizer)
    texts = [codec.template.render(e.text) + codec.template.answer_sep + e.label for e in splits["train"]]
    args = SFTConfig(
        output_dir=str(out),
        num_train_epochs=epochs,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=8,
        gradient_checkpointing=True,
        optim="adamw_torch",
        save_strategy="no",
        logging_steps=25,
        learning_rate=2e-4,
        weight_decay=0.001,
        fp16=False,
        bf16=False,
        max_grad_norm=0.3,
        max_steps=-1,
        warmup_steps=0.03,
        train_sampling_strategy="group_by_length",
        lr_scheduler_type="cosine",
        report_to=[],
        eval_strategy="no",
        dataset_text_field="text",
        max_length=512,
        packing=False,
        use_cpu=True,
        seed=42,
        dataset_kwargs={"add_special_tokens": False, "append_concat_token": False},
    )
    peft = LoraConfig(
        lora_alpha=16, lora_dropout=0.1, r=64, bias="none", target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tokenizer,
        peft_config=peft,
    )
    seconds = trainer.train().metrics["train_runtime"]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) * epochs
    return finish(trainer.model, codec, splits, seconds, tokens, 6, precision)  # 2 fwd + 2 recompute + 2 bwd


def run_finsent(cfg, splits, epochs: float, out: Path) -> dict:
    from finsent.core.prompts import PromptCodec
    from finsent.modeling.load import load_model
    from finsent.training.train import train

    cfg.train.num_train_epochs = epochs
    cfg.train.output_dir = str(out)
    cfg.train.report_to = "none"
    cfg.train.evaluation_strategy = "no"
    adapter = train(cfg, splits)
    from finsent.core.config import load_saved_config

    # the precision the run resolved (dtype auto: bf16 autocast on a CPU with bf16 matmuls), from its folder
    saved = load_saved_config(out)
    cfg.model.dtype = saved.model.dtype
    precision = "bf16" if saved.train.bf16 else "float32"
    # the trainer's own train_runtime, as for the notebook side: model loading and set-up excluded
    seconds = json.loads((out / "train_log.json").read_text())["train_runtime"]
    full = cfg.train.method == "full"  # the CPU config trains every weight: `adapter` is the whole model
    if full:
        cfg.model.model = str(adapter)
    model, tokenizer, _ = load_model(cfg.model, None if full else str(adapter))
    codec = PromptCodec.from_config(cfg, tokenizer)
    bs = cfg.train.per_device_train_batch_size
    n = len(splits["train"])
    tokens = (
        sum(len(codec.train_ids(e.text, e.label)[0]) - len(codec.prefix_ids) for e in splits["train"])
        + len(codec.prefix_ids) * -(-n // bs)
    ) * epochs
    if full:  # 2 forward + 4 backward (input and weight gradients) FLOPs a parameter and token
        return finish(model, codec, splits, seconds, tokens, 6, precision)
    # 2 fwd + 2 bwd (frozen base: input gradients only), the backward only from the lowest adapted layer up
    from finsent.training.args import parse_layers

    layers = parse_layers(cfg.lora.layers_to_transform)
    n_layers = model.config.num_hidden_layers
    backward_share = (n_layers - min(layers)) / n_layers if layers else 1.0
    return finish(model, codec, splits, seconds, tokens, 2 + 2 * backward_share, precision)


def finish(
    model, codec, splits, seconds: float, tokens: float, flops_per_token_factor: float, precision: str
) -> dict:
    from finsent.evaluation.metrics import classification_metrics
    from finsent.modeling.scoring import classify

    exs = splits["eval"]
    preds, _ = classify(model, codec, [e.text for e in exs])
    acc = classification_metrics([e.label for e in exs], preds, codec.labels)["accuracy"]
    n_params = sum(
        p.numel() for name, p in model.named_parameters() if "embed" not in name and "lora_" not in name
    )
    return {
        "seconds": seconds,
        "samples": len(splits["train"]),
        "eval_accuracy": acc,
        "flops": flops_per_token_factor * n_params * tokens,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "precision": precision,  # of the training matmuls: which peak the rate is a share of
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="48 sentences, 1 epoch")
    ap.add_argument("--samples", type=int, default=240)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=None, help="append the result as one JSON line to this file")
    ap.add_argument("--side", choices=("notebook", "finsent"), help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    samples = 48 if args.quick else args.samples

    if args.side:  # a child process: one side, result as JSON
        cfg, splits = setup(args.model, samples)
        with tempfile.TemporaryDirectory() as tmp:
            fn = run_notebook if args.side == "notebook" else run_finsent
            Path(args.result).write_text(json.dumps(fn(cfg, splits, args.epochs, Path(tmp))))
        return

    import torch

    from bench.predict import bf16_note, matmul_peak

    results = {}
    for side in ("notebook", "finsent"):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [
                sys.executable,
                "-m",
                "bench.train",
                "--side",
                side,
                "--samples",
                str(samples),
                "--epochs",
                str(args.epochs),
                "--model",
                args.model,
                "--result",
                f.name,
            ]
            print(f"--- {side}: {samples} sentences x {args.epochs:g} epochs", flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            results[side] = json.loads(Path(f.name).read_text())
    peak, bf16_peak = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    for side, r in results.items():
        sps = r["samples"] * args.epochs / r["seconds"]
        rate = r["flops"] / r["seconds"]
        top = bf16_peak if r["precision"] == "bf16" else peak
        print(
            f"{side:9}: {sps:6.2f} samples/s  {r['seconds']:7.1f} s  peak RSS {r['peak_rss_gb']:.2f} GB  "
            f"eval accuracy {r['eval_accuracy']:.3f}  {r['precision']} matmuls, {rate / 1e9:.0f} GFLOP/s "
            f"({rate / top:.0%} of the {top / 1e9:.0f} GFLOP/s {r['precision']} matmul peak)"
        )
    print(bf16_note(bf16_peak, peak, "float32"))
    nb, fs = results["notebook"], results["finsent"]
    print(
        f"speed-up: {nb['seconds'] / fs['seconds']:.1f}x samples/s; "
        f"accuracy difference {fs['eval_accuracy'] - nb['eval_accuracy']:+.3f}"
    )
    if args.out:  # one JSON line per run, with the CPU it ran on (figures compare only on one machine)
        from finsent.modeling.device import cpu_bf16_units, cpu_name

        record = {
            "cpu": cpu_name(),
            "bf16_units": cpu_bf16_units(),
            "threads": torch.get_num_threads(),
            "samples": samples,
            "epochs": args.epochs,
            "model": args.model,
            "peak_gflops_fp32": peak / 1e9,
            "peak_gflops_bf16": bf16_peak / 1e9 if bf16_peak else None,
            "speedup": nb["seconds"] / fs["seconds"],
            **{
                side: r | {"samples_per_second": r["samples"] * args.epochs / r["seconds"]}
                for side, r in results.items()
            },
        }
        with Path(args.out).open("a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
