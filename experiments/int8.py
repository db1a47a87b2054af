"""CPU int8 for predict/serve: is any variant worth offering? (at least 99% of predictions kept at 1.5x)

    python -m experiments.int8 [--model runs/demo/merged_model] [--limit 300]

The tuned model in float32 is the baseline; each variant is torch's dynamic int8 quantisation of the
decoder's linear layers (weights int8 ahead of time, activations quantised per batch at run time), the
output head (the label scorer) kept in float32:
  per-tensor           one scale per weight matrix (measured before: 1.49x, 662/900 kept)
  per-channel          one scale per output row
  per-channel-no-down  per-channel, but down_proj (whose inputs carry the outlier activations of LLMs)
                       kept in float32
  per-channel-ends     per-channel, the first and last decoder layers kept in float32
Same sentences, same thread count, one run: speed ratio against float32, predictions kept, accuracy.
Writes experiments/results/int8.json.
"""

from __future__ import annotations

import copy
import time

from bench.common import demo_model_parser, demo_test_split
from experiments import RESULTS


def quantise(model, variant: str):
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = default_dynamic_qconfig if variant == "per-tensor" else per_channel_dynamic_qconfig
    layers = model.get_decoder().layers
    keep_float = set()
    if variant == "per-channel-ends":
        keep_float = {f"layers.{i}." for i in (0, len(layers) - 1)}
    names = {
        name
        for name, m in model.get_decoder().named_modules()
        if isinstance(m, torch.nn.Linear)
        and not (variant == "per-channel-no-down" and name.endswith("down_proj"))
        and not any(name.startswith(k) for k in keep_float)
    }
    q = copy.deepcopy(model)
    q.model = quantize_dynamic(q.get_decoder(), {n: qconfig for n in names}, dtype=torch.qint8)
    return q


def main() -> int:
    import torch

    from finsent.core.fsio import write_json
    from finsent.evaluation.metrics import classification_metrics
    from finsent.modeling.device import cpu_name
    from finsent.serving.api import Classifier

    ap = demo_model_parser(__doc__, RESULTS / "int8.json")
    ap.add_argument("--limit", type=int, default=300, help="test sentences, spread over the labels (0 = all)")
    a = ap.parse_args()
    cfg, test = demo_test_split(a.model, a.data)
    if a.limit and a.limit < len(test):
        test = test[:: len(test) // a.limit][: a.limit]
    texts, gold = [e.text for e in test], [e.label for e in test]
    base = Classifier.from_config(cfg)
    base.calibration = None  # compare raw probabilities

    def timed(clf):
        clf.predict(texts[:8])  # warm-up: first-call allocations, the prefix cache
        t = time.perf_counter()
        out = clf.predict(texts)
        return [r["label"] for r in out], time.perf_counter() - t

    ref, t_ref = timed(base)
    acc_ref = classification_metrics(gold, ref, base.labels)["accuracy"]
    result = {
        "model": a.model,
        "sentences": len(texts),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "float32": {"seconds": t_ref, "sentences_per_second": len(texts) / t_ref, "accuracy": acc_ref},
    }
    print(
        f"float32: {len(texts) / t_ref:.1f} sentences/s, accuracy {acc_ref:.3f}  ({result['cpu']}, {result['threads']} threads)"
    )
    for variant in ("per-tensor", "per-channel", "per-channel-no-down", "per-channel-ends"):
        clf = copy.copy(base)
        clf.model = quantise(base.model, variant)
        clf.prefix_kv = None
        preds, t = timed(clf)
        kept = sum(p == r for p, r in zip(preds, ref))
        acc = classification_metrics(gold, preds, base.labels)["accuracy"]
        ok = kept / len(ref) >= 0.99 and t_ref / t >= 1.5
        result[variant] = {
            "seconds": t,
            "speedup": t_ref / t,
            "kept": kept,
            "kept_share": kept / len(ref),
            "accuracy": acc,
            "offer": ok,
        }
        print(
            f"{variant:20} {t_ref / t:.2f}x  kept {kept}/{len(ref)} ({kept / len(ref):.1%})  accuracy {acc:.3f}  "
            f"-> {'worth offering' if ok else 'not offered'}"
        )
        del clf
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
