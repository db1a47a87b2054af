"""Levers on the bf16 classifier's speed (issue 27): each timed on the same sentences in one run, its labels
against float32's.

    .venv/bin/python -m bench.predict_levers                       # the embedded model, 300 test sentences
    .venv/bin/python -m bench.predict_levers --model runs/demo/merged_model --n 900

finsent's bf16 scorer (modeling.load.load_scorer, guard off so only the lever differs) runs eager PyTorch:
every bf16 `nn.Linear` is an `aten::mm` that oneDNN may re-lay out the weight for on each call. The levers:
- `eager`: as finsent scores today;
- `prepacked`: the decoder's Linear layers as oneDNN modules with their weights laid out once
  (torch.utils.mkldnn.to_mkldnn, as IPEX's weight prepacking does);
- `compiled`: torch.compile of the decoder under inductor's freezing, which folds the weights in as
  constants and prepacks them for oneDNN; its compile time is reported apart (dynamic shapes, so the
  length buckets do not recompile).
A CPU without bf16 skips the run (float32 is finsent's path there). One JSON line per run goes to
bench/results/predict_levers.jsonl, with the CPU and its flags.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

from bench.common import DATA, RESULTS
from finsent.core.registry import DEFAULT_MODEL

RECORD = RESULTS / "predict_levers.jsonl"


def prepacked(model, dtype):
    """The decoder's Linear layers swapped for oneDNN ones with prepacked weights (the head is left)."""
    import torch
    from torch.utils import mkldnn

    class Packed(torch.nn.Module):
        # MkldnnLinear takes 2-D input: the (batch, length, features) activations are flattened around it
        def __init__(self, lin):
            super().__init__()
            self.inner = mkldnn.to_mkldnn(lin, dtype)

        def forward(self, x):
            return self.inner(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)

    m = copy.deepcopy(model)
    for mod in list(m.get_decoder().modules()):
        for child, sub in list(mod.named_children()):
            if isinstance(sub, torch.nn.Linear):
                setattr(mod, child, Packed(sub))
    return m


def compiled(model):
    """The decoder's forward under torch.compile with inductor's freezing, on a copy. Compiled in place: a
    compiled module's forward shows no parameter names, and scoring.cache_argument reads them."""
    import torch

    m = copy.deepcopy(model)
    decoder = m.get_decoder()
    decoder.forward = torch.compile(decoder.forward, dynamic=True, options={"freezing": True})
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--n", type=int, default=300, help="test sentences, evenly spaced through the split")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--levers", default="eager,prepacked,compiled")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                    help="the levered model's dtype: float32 is the path of a CPU without bf16")  # fmt: skip
    args = ap.parse_args()

    import torch

    from finsent.core.options import Config
    from finsent.core.prompts import PromptCodec
    from finsent.data.readers import read_file
    from finsent.data.splits import split_notebook
    from finsent.modeling.device import cpu_bf16_units, cpu_name
    from finsent.modeling.load import load_model
    from finsent.modeling.scoring import classify

    if args.dtype == "bfloat16" and not cpu_bf16_units():
        print(f"{cpu_name()}: no AMX or AVX512-BF16, finsent scores in float32 here: nothing to compare")
        return
    cfg = Config()
    cfg.model.model = args.model
    test = split_notebook(read_file(DATA, cfg.data.labels).examples, cfg.data.labels)["test"]
    texts = [e.text for e in test[:: max(1, len(test) // args.n)][: args.n]]
    exact, tokenizer, _ = load_model(cfg.model, dtype=torch.float32)
    if args.dtype == "float32":
        fast = copy.deepcopy(exact)
    else:
        fast, _, _ = load_model(cfg.model, dtype=torch.bfloat16)
        fast.set_output_embeddings(exact.get_output_embeddings())  # as load_scorer: a float32 head
    codec = PromptCodec.from_config(cfg, tokenizer)
    ref, _ = classify(exact, codec, texts, args.batch_size)
    t0 = time.perf_counter()
    classify(exact, codec, texts, args.batch_size)
    f32 = len(texts) / (time.perf_counter() - t0)
    print(f"float32 eager: {f32:.1f} sentences/s", flush=True)
    result = {"model": args.model, "n": len(texts), "threads": torch.get_num_threads(), "dtype": args.dtype,
              "cpu": cpu_name(), "bf16_units": cpu_bf16_units(), "float32_sentences_per_s": round(f32, 2),
              "levers": {}}  # fmt: skip
    for lever in args.levers.split(","):
        t0 = time.perf_counter()
        with torch.inference_mode():
            model = {"eager": lambda m: m, "prepacked": lambda m: prepacked(m, getattr(torch, args.dtype)),
                     "compiled": compiled}[lever](fast)  # fmt: skip
            classify(model, codec, texts[: args.batch_size * 2], args.batch_size)  # warm-up / compile
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds, _ = classify(model, codec, texts, args.batch_size)
        speed = len(texts) / (time.perf_counter() - t0)
        same = sum(a == b for a, b in zip(preds, ref)) / len(texts)
        result["levers"][lever] = {"sentences_per_s": round(speed, 2), "setup_s": round(setup, 1),
                                   "labels_as_float32": round(same, 4)}  # fmt: skip
        print(f"{lever:>10}: {speed:6.1f} sentences/s ({speed / f32:.2f}x float32), set-up {setup:.0f} s, "
              f"labels as float32's {same:.1%}", flush=True)  # fmt: skip
    result["load"] = os.getloadavg()
    with open(RECORD, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
