"""Where one training step's time goes, on the demo config: data, forward (loss), backward, optimizer.

    .venv/bin/python -m bench.step_profile                       # the demo config: dtype auto and float32
    .venv/bin/python -m bench.step_profile --dtype float32       # only what a CPU without bf16 runs
    .venv/bin/python -m bench.step_profile --dtype auto --compile    # a lever on the default path only
    .venv/bin/python -m bench.step_profile --dtype auto --ops 25     # and one more step op by op
    .venv/bin/python -m bench.step_profile --dtype auto --attention math   # an attention lever

The step is finsent's own (configs/smollm2-cpu.yaml: full fine-tuning, micro-batch 16, the fast loss on
the shared prompt prefix), built by `finsent.training.train.build_trainer` on the notebook split of
all-data.csv, timed part by part after warm-up steps. The same run measures the machine's matmul peak
(bench.predict.matmul_peak) and counts the step's FLOPs with torch's FlopCounterMode, so the step's rate
is printed as a share of the peak. The CPU and its bf16 support are printed beside the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

from bench.common import DATA, ROOT
from bench.predict import matmul_peak

# aten ops that are matrix multiplications (the matmul units' work) and the attention kernels (matmuls
# inside, plus softmax and masking); every other op is what a faster matmul unit leaves untouched
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
ATTENTION_OPS = ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--dtype",
        default="both",
        choices=("both", "auto", "float32"),
        help="model.dtype: auto (the demo's), float32 (no-bf16 CPUs), or both in one run (default; on a "
        "CPU without bf16 matmuls auto is float32, so both runs it once)",
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile (inductor) the decoder layers")
    ap.add_argument("--optim", default=None, help="train.optim, e.g. adamw_torch_fused")
    ap.add_argument("--batch", type=int, default=None, help="train.per_device_train_batch_size")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument(
        "--detach-prefix",
        action="store_true",
        help="no gradient through the shared prompt prefix (a speed probe: it changes the training math)",
    )
    ap.add_argument(
        "--ops",
        type=int,
        default=0,
        help="also profile one more step op by op (torch.profiler) and print its N costliest ops and the "
        "shares of the matmuls and the attention kernels: what is left once the matmul units are faster",
    )
    ap.add_argument(
        "--attention",
        default="sdpa",
        choices=("sdpa", "math", "float32"),
        help="a lever on the attention: sdpa (as finsent trains: transformers' SDPA in the step's dtype, "
        "torch's CPU flash kernel), math (SDPA's bmm + softmax backend), float32 (SDPA on float32 copies "
        "of q, k, v, autocast off)",
    )
    ap.add_argument("--out", default=None, help="append the result as one JSON line to this file")
    args = ap.parse_args()

    import torch

    from bench.predict import bf16_note
    from finsent.modeling.device import cpu_has_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.detach_prefix:
        import finsent.modeling.scoring as scoring

        states = scoring.prefix_states

        def detached(*a, **k):
            with torch.no_grad():
                return states(*a, **k)

        scoring.prefix_states = detached
    # one run measures both paths and the peaks, so their ratio and shares come from the same minutes
    dtypes = (
        ["auto", "float32"]
        if args.dtype == "both" and cpu_has_bf16()
        else [args.dtype.replace("both", "auto")]
    )
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16) if cpu_has_bf16() else None
    results = [profile(args, d, peak32, peak16) for d in dtypes]
    if len(results) == 2:
        fast, plain = results
        print(
            f"bf16 against float32: {plain['step_seconds'] / fast['step_seconds']:.2f}x a step "
            f"({fast['step_seconds']:.2f} s against {plain['step_seconds']:.2f} s)"
        )
    elif peak16 and results[0]["matmuls"] == "float32":
        print(bf16_note(peak16, peak32, "float32"))  # what float32 leaves on a CPU that has bf16


def profile(args, dtype: str, peak32: float, peak16: float | None) -> dict:
    """One path's step, part by part, as a JSON-able result (appended to --out)."""
    import torch

    from finsent.core.config import build_config
    from finsent.data.readers import read_file
    from finsent.data.splits import split_notebook
    from finsent.modeling.device import cpu_bf16_units, cpu_has_bf16, cpu_name
    from finsent.training.train import build_trainer, full_precision

    cfg = build_config(ROOT / "configs" / "smollm2-cpu.yaml")
    cfg.model.dtype = dtype
    cfg.train.output_dir = "/tmp/finsent-step-profile"
    cfg.train.report_to = "none"
    if args.optim:
        cfg.train.optim = args.optim
    if args.batch:
        cfg.train.per_device_train_batch_size = args.batch
    cfg = cfg.validate()
    full_precision(cfg)
    splits = split_notebook(read_file(DATA, cfg.data.labels).examples, cfg.data.labels)
    trainer, _, _ = build_trainer(cfg, splits)
    model = trainer.model
    # the attention lever holds for the timed steps and the --ops step
    lever = contextlib.ExitStack()
    lever.enter_context(attention_lever(model, args.attention))
    if args.compile:
        for layer in model.model.layers:
            layer.compile()
    steps = args.warmup + args.steps
    # one step more for --ops, so that its step runs at a real learning rate and the schedule keeps step
    trainer.create_optimizer_and_scheduler(num_training_steps=steps + (1 if args.ops else 0))
    opt, sched = trainer.optimizer, trainer.lr_scheduler
    model.train()
    loader = iter(trainer.get_train_dataloader())
    parts = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    samples = tokens = 0
    flops = None
    for step in range(steps):
        t0 = time.perf_counter()
        batch = trainer._prepare_inputs(next(loader))
        t1 = time.perf_counter()
        if step == args.warmup:  # count one step's FLOPs (not timed)
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter, trainer.compute_loss_context_manager():
                trainer.compute_loss(model, batch).backward()
            flops = counter.get_total_flops()
            opt.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            t1 = t0
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, batch)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if step >= args.warmup:
            for k, (a, b) in zip(parts, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                parts[k] += b - a
            samples += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
    total = sum(parts.values())
    op_shares = None
    if args.ops:
        batch = next(loader, None)
        if batch is None:
            raise SystemExit("--ops: the training split has no batch left after --warmup + --steps")
        op_shares = op_profile(
            trainer, model, trainer._prepare_inputs(batch), cfg.train.max_grad_norm, args.ops
        )
    lever.close()
    autocast = cfg.train.bf16
    peak = peak16 if autocast and peak16 else peak32
    step_s = total / args.steps
    result = {
        "cpu": cpu_name(),
        "bf16_cpu": cpu_has_bf16(),
        "threads": torch.get_num_threads(),
        "dtype": "float32 weights, bf16 autocast" if autocast else "float32",
        # the training matmuls' precision: rows before the autocast fix (issue 27) lack this field, and
        # their "bf16 autocast" steps ran float32 matmuls
        "matmuls": "bf16" if autocast else "float32",
        "compile": args.compile,
        "attention": args.attention,
        "detach_prefix": args.detach_prefix,
        "allocator": os.environ.get("LD_PRELOAD", "") or "glibc",
        "optim": cfg.train.optim,
        "batch": cfg.train.per_device_train_batch_size,
        "step_seconds": step_s,
        "samples_per_second": samples / total,
        "tokens_per_step": tokens / args.steps,
        "shares": {k: v / total for k, v in parts.items()},
        "step_gflop": flops / 1e9 if flops else None,
        "peak_gflops_fp32": peak32 / 1e9,
        "peak_gflops_bf16": peak16 / 1e9 if peak16 else None,
        "share_of_peak": (flops / step_s) / peak if flops else None,
        "ops": op_shares,
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{result['cpu']} ({cpu_bf16_units() or 'no bf16'}), {result['threads']} threads, "
        f"{result['dtype']}: {step_s:.2f} s a step of {result['batch']} ({result['samples_per_second']:.2f} "
        f"samples/s); " + ", ".join(f"{k} {v:.0%}" for k, v in result["shares"].items())
        + (f"; {result['step_gflop']:.0f} GFLOP a step = {flops / step_s / 1e9:.0f} GFLOP/s, "
           f"{result['share_of_peak']:.0%} of the {peak / 1e9:.0f} GFLOP/s matmul peak" if flops else "")
    )  # fmt: skip
    if args.out:
        with Path(args.out).open("a") as fh:
            fh.write(json.dumps(result) + "\n")

    return result


def op_profile(trainer, model, batch: dict, max_grad_norm: float, top: int) -> dict[str, object]:
    """One step (loss, backward, clipping, optimizer and schedule) of `trainer` under torch.profiler: self
    CPU time by aten op, the matmuls' and the attention kernels' shares, and the `top` costliest ops,
    printed and returned."""
    import torch
    import torch.profiler as tp

    with tp.profile(activities=[tp.ProfilerActivity.CPU]) as prof:
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    rows = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    matmul = sum(e.self_cpu_time_total for e in rows if e.key.startswith(MATMUL_OPS))
    attention = sum(e.self_cpu_time_total for e in rows if e.key.startswith(ATTENTION_OPS))
    rows.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    costliest = [
        {
            "op": e.key,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
            "ms": e.self_cpu_time_total / 1e3,
        }
        for e in rows[:top]
    ]
    print(
        f"\none step op by op ({total / 1e6:.2f} s of aten self time): matmuls {matmul / total:.0%}, "
        f"attention kernels {attention / total:.0%}, other ops {1 - (matmul + attention) / total:.0%}"
    )
    for r in costliest:
        print(f"  {r['op']:<40} {r['share']:6.1%}  {r['ms']:8.1f} ms  {r['calls']:6d} calls")
    return {"aten_seconds": total / 1e6, "matmul_share": matmul / total, "attention_share": attention / total,
            "costliest": costliest}  # fmt: skip


def attention_lever(model, lever: str):
    """A context that runs the model's attention as `lever` says: "sdpa" as finsent trains (transformers'
    SDPA in the step's dtype, torch's CPU flash kernel), "math" SDPA's bmm + softmax backend, "float32"
    SDPA on float32 copies of q, k, v with autocast off (under bf16 autocast RoPE leaves q and k float32
    and v bf16, and SDPA's autocast would run all three in bf16). The model is this run's own: a lever
    is never undone."""
    if lever == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    if lever == "float32":
        import torch
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        def float32_sdpa(module, query, key, value, attention_mask, **kwargs):
            with torch.autocast(query.device.type, enabled=False):
                out, weights = sdpa_attention_forward(
                    module, query.float(), key.float(), value.float(), attention_mask, **kwargs
                )
            return out.to(value.dtype), weights

        AttentionInterface.register("float32_sdpa", float32_sdpa)
        # SDPA's own masks: transformers builds none for an attention name without a mask function
        AttentionMaskInterface.register("float32_sdpa", AttentionMaskInterface._global_mapping["sdpa"])
        model.set_attn_implementation("float32_sdpa")
    return contextlib.nullcontext()


if __name__ == "__main__":
    main()
