"""Would torch's dynamic int8 keep float32's labels with a float32 recheck of near-ties, as bf16 does?

    python -m experiments.int8_guard --model runs/demo/merged_model      # the 900 test sentences

For a CPU without bf16 (float32 only), int8 matmuls (VNNI / AVX2) are the other fast path. int8.py found
that plain dynamic int8 moves 7-24% of the labels. bf16 moves only near-ties, which is why its guard
(`model.guard`: rescoring in float32 every text whose two best labels are within the margin) gives
float32's labels. This study asks whether int8's moved labels are near-ties too. It scores the test
sentences in float32, then with each int8 variant of int8.py, and records the int8 gap (nats between the
two best labels) of every label that moved. For each margin it records what the guard would give: the
texts it would rescore, the labels that would then match float32's, and the rate it implies (the int8
pass plus that share of the float32 pass). Writes experiments/results/int8_guard.json.
"""

from __future__ import annotations

import math
import time

from bench.common import demo_model_parser, demo_test_split
from experiments import RESULTS
from experiments.int8 import quantise

MARGINS = (0.5, 1.0, 2.0, 3.0)


def gap(probs: list[float]) -> float:
    """Nats between the best two labels (the guard's measure; probabilities are a softmax of scores)."""
    a, b = sorted(probs, reverse=True)[:2]
    return math.log(max(a, 1e-30)) - math.log(max(b, 1e-30))


def main() -> int:
    import torch

    from finsent.core.fsio import write_json
    from finsent.core.prompts import PromptCodec
    from finsent.modeling.device import cpu_name
    from finsent.modeling.load import load_model
    from finsent.modeling.scoring import classify

    ap = demo_model_parser(__doc__, RESULTS / "int8_guard.json")
    ap.add_argument("--variants", default="per-tensor,per-channel,per-channel-no-down")
    a = ap.parse_args()
    cfg, test = demo_test_split(a.model, a.data)
    texts = [e.text for e in test]
    f32, tokenizer, _ = load_model(cfg.model, dtype=torch.float32)
    codec = PromptCodec.from_config(cfg, tokenizer)

    def scored(model):
        classify(model, codec, texts[:8])  # warm-up: first-call allocations
        t = time.perf_counter()
        labels, probs = classify(model, codec, texts)
        return labels, probs, time.perf_counter() - t

    ref, _, t_ref = scored(f32)
    n = len(texts)
    result = {"model": a.model, "sentences": n, "cpu": cpu_name(), "threads": torch.get_num_threads()}
    result["float32"] = {"sentences_per_second": n / t_ref}
    print(f"float32: {n / t_ref:.1f} sentences/s ({result['cpu']}, {result['threads']} threads)")
    for variant in a.variants.split(","):
        labels, probs, t = scored(quantise(f32, variant))
        gaps = [gap(p) for p in probs]
        moved = [i for i in range(n) if labels[i] != ref[i]]
        row = {
            "sentences_per_second": n / t,
            "same_labels": n - len(moved),
            "moved_label_gaps": sorted(round(gaps[i], 3) for i in moved),
        }
        for m in MARGINS:
            rescored = sum(g < m for g in gaps)
            row[f"guard {m:g}"] = {
                "rescored": rescored,
                "same_labels": n - sum(gaps[i] >= m for i in moved),
                "sentences_per_second": n / (t + rescored / n * t_ref),
            }
        result[variant] = row
        best = row[f"guard {MARGINS[-1]:g}"]
        print(
            f"{variant:20} {n / t:.1f} sentences/s, {row['same_labels']}/{n} labels as float32's; "
            f"guard {MARGINS[-1]:g}: {best['same_labels']}/{n} at {best['sentences_per_second']:.1f}"
        )
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
