"""The attention kernel alone, forward and backward, at the shapes finsent trains on: bf16 as autocast
runs it, against float32 copies of q, k and v and SDPA's math backend (the levers that
`bench/step_profile.py --attention` times in a whole step).

    .venv/bin/python -m bench.attention_kernels

Shapes: 16 rows (the demo's micro-batch), SmolLM2's 9 heads of 64, a body of `q` tokens after a shared
prefix of 50 (kv = 50 + q), with finsent's boolean prefix + causal mask. Prints milliseconds per layer,
each lever's ratio to bf16 and the share of the bf16 matmul peak (measured in the same run) that the
attention's FLOPs reach in bf16.
"""

from __future__ import annotations

import argparse
import functools
import time

from bench.predict import matmul_peak

PREFIX, ROWS, HEADS, DIM = 50, 16, 9, 64


def _bf16(q, k, v, mask) -> None:
    import torch.nn.functional as F

    F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()


def _float32(q, k, v, mask) -> None:
    import torch
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    out.to(torch.bfloat16).sum().backward()


def _math(q, k, v, mask) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        _bf16(q, k, v, mask)


LEVERS = {"bf16": _bf16, "float32": _float32, "math": _math}


def _time(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bodies", default="30,60,120,460", help="body lengths q (comma-separated)")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()

    import torch

    from finsent.modeling.device import cpu_bf16_units, cpu_name

    peak = matmul_peak(torch.bfloat16)
    print(f"{cpu_name()} ({cpu_bf16_units() or 'no bf16'}), {torch.get_num_threads()} threads, "
          f"bf16 matmul peak {peak / 1e9:.0f} GFLOP/s")  # fmt: skip
    print("| body q | kv | bf16 ms | float32 copies ms (x) | math bf16 ms (x) | bf16 share of peak |")
    print("|---|---|---|---|---|---|")
    for q_len in (int(x) for x in args.bodies.split(",")):
        kv = PREFIX + q_len
        torch.manual_seed(0)
        q = torch.randn(ROWS, HEADS, q_len, DIM, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(ROWS, HEADS, kv, DIM, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(ROWS, HEADS, kv, DIM, dtype=torch.bfloat16, requires_grad=True)
        mask = torch.ones(ROWS, 1, q_len, kv, dtype=torch.bool).tril(PREFIX)
        ms = {n: _time(functools.partial(fn, q, k, v, mask), args.reps) * 1e3 for n, fn in LEVERS.items()}
        flops = 3.5 * 4 * ROWS * HEADS * q_len * kv * DIM  # forward: 2 matmuls; backward about 2.5x that
        share = flops / (ms["bf16"] / 1e3) / peak
        print(f"| {q_len} | {kv} | {ms['bf16']:.1f} | {ms['float32']:.1f} ({ms['bf16'] / ms['float32']:.2f}x) "
              f"| {ms['math']:.1f} ({ms['bf16'] / ms['math']:.2f}x) | {share:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
