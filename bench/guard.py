"""bf16 scoring with its float32 recheck (model.guard) against float32: agreement and sentences/s.

    .venv/bin/python -m bench.guard --set spare   # choose the guard: PhraseBank rows in no split
    .venv/bin/python -m bench.guard --set test    # measure it: the notebooks' 900 test sentences

One model (default: the demo's merged model, runs/demo/merged_model) loaded once in float32, its bf16
twin made from it as `finsent predict` makes it (modeling.load.load_scorer), and the same sentences
classified in float32, in plain bf16 (guard 0) and in bf16 with each --guards margin: the share of labels
identical to float32's, the bf16 gaps of the labels that moved, how many texts each guard rescored, and
sentences/s with the ratio to float32 and the share of the bf16 matmul peak, all in one run on this
machine. `--set spare` is all-data.csv's sentences that the model's split puts in no train, eval or test
split (nor equal to a test sentence): the data the guard is chosen on; `--set test` is only measured.
Writes bench/results/guard_<set>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from bench.common import DATA, RESULTS, ROOT


def sentences(cfg, which: str) -> list[str]:
    from finsent.data.splits import make_splits

    ds, splits = make_splits(cfg.data)
    if which == "test":
        return [e.text for e in splits["test"]]
    used = {e.text for name in ("train", "eval", "test") for e in splits[name]}
    return list(dict.fromkeys(e.text for e in ds.examples if e.text not in used))


def timed(model, codec, texts: list[str], batch_size: int, recheck=None):
    from finsent.modeling.scoring import classify

    classify(model, codec, texts[:8], batch_size)  # warm-up: the first batch of a shape pays for it
    start = time.perf_counter()
    preds, probs = classify(model, codec, texts, batch_size, recheck=recheck)
    return preds, probs, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo = ROOT / "runs" / "demo" / "merged_model"
    ap.add_argument("--model", default=str(demo))
    ap.add_argument("--set", choices=("spare", "test"), default="spare")
    ap.add_argument("--guards", default="0.1,0.2,0.5,1.0", help="margins in nats, comma-separated")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import math

    import torch

    from bench.predict import matmul_peak
    from finsent.core.config import load_saved_config
    from finsent.core.prompts import PromptCodec
    from finsent.modeling.device import cpu_has_bf16, cpu_name
    from finsent.modeling.load import load_scorer

    cfg = load_saved_config(args.model)
    cfg.model.model, cfg.model.dtype, cfg.model.guard = args.model, "bfloat16", 1.0
    if not cfg.data.data or not Path(cfg.data.data).is_file():
        cfg.data.data = str(DATA)
    texts = sentences(cfg, args.set)
    fast, tokenizer, device, recheck = load_scorer(cfg.model)
    exact, codec = recheck.model, PromptCodec.from_config(cfg, tokenizer)
    flags = sorted(
        {f for f in Path("/proc/cpuinfo").read_text().split() if f.startswith(("amx", "avx512_bf16"))}
    )
    cpu = f"{cpu_name()}, {torch.get_num_threads()} threads, {' '.join(flags) or 'no bf16 matmul flags'}"
    print(f"{args.model}: {len(texts)} sentences ({args.set}); {cpu}", flush=True)

    ref, _, t32 = timed(exact, codec, texts, args.batch_size)
    n_params = sum(p.numel() for name, p in exact.named_parameters() if "embed" not in name)
    flops = 2 * n_params * sum(len(codec.split(t)[1]) for t in texts)  # bodies; the prefix runs once
    peak16, peak32 = matmul_peak(torch.bfloat16), matmul_peak(torch.float32)
    rows = [
        {
            "path": "float32",
            "agree": len(texts),
            "rescored": 0,
            "seconds": t32,
            "share_of_peak": flops / t32 / peak32,
        }
    ]
    for margin in [0.0, *(float(g) for g in args.guards.split(","))]:
        check = copy.copy(recheck)
        check.margin, check.rescored = margin, 0
        preds, probs, t = timed(fast, codec, texts, args.batch_size, check if margin > 0 else None)
        moved = [i for i, (a, b) in enumerate(zip(preds, ref)) if a != b]
        gaps = []
        for i in moved:
            top = sorted((math.log(max(p, 1e-300)) for p in probs[i]), reverse=True)
            gaps.append(round(top[0] - top[1], 4))
        rows.append({
            "path": f"bf16, guard {margin:g}" if margin else "bf16 (guard 0)",
            "agree": len(texts) - len(moved), "rescored": check.rescored if margin else 0,
            "seconds": t, "moved_gaps": gaps, "share_of_peak": flops / t / peak16,
        })  # fmt: skip
    result = {
        "model": args.model, "set": args.set, "n": len(texts), "cpu": cpu, "bf16_cpu": cpu_has_bf16(),
        "peak_gflops": {"float32": peak32 / 1e9, "bfloat16": peak16 / 1e9}, "rows": rows,
    }  # fmt: skip
    lines = [
        f"bf16 scoring with float32 recheck of near-ties, `{args.model}`, {len(texts)} sentences "
        f"({args.set}); {cpu}; matmul peaks: float32 {peak32 / 1e9:.0f}, bf16 {peak16 / 1e9:.0f} GFLOP/s.",
        "",
        "| path | labels as float32 | rescored in float32 | sentences/s | x float32 | share of its peak "
        "| bf16 gaps (nats) of the labels that moved |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = len(texts)
        lines.append(
            f"| {r['path']} | {r['agree'] / n:.2%} ({r['agree']}/{n}) | {r['rescored']} ({r['rescored'] / n:.1%}) "
            f"| {n / r['seconds']:.1f} | {t32 / r['seconds']:.2f} | {r['share_of_peak']:.0%} "
            f"| {', '.join(f'{g:.3f}' for g in r.get('moved_gaps', [])) or '-'} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = RESULTS / f"guard_{args.set}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
