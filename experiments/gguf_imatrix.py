"""Does an importance matrix lift q4_k_m's agreement with finsent? (issue 28's 97% target; it did not.)

    python -m experiments.gguf_imatrix                 # the demo's merged model, 300 calibration prompts
    python -m experiments.gguf_imatrix --calib 0       # every training prompt (900: about 4 minutes)

llama.cpp's `llama-quantize --imatrix` weighs each weight's rounding error by how large its input
activations are (the mean of x^2 per input column, over calibration text). llama-cpp-python exposes
`llama_model_quantize` but not the imatrix (its parameter is a C++ map), so this study calls ggml's own
quantiser, `ggml_quantize_chunk` in the wheel's libggml-base, which takes the per-column weights
directly, for the tensor types finsent's q4_k_m export chose (llama-quantize's mix). The matrix comes
from the float32 model's forward passes over the training prompts with their answers (never the test
sentences). Without a matrix the same call must give the bytes of finsent's numpy port (checked for
every tensor, an independent check of deploy/kquants.py). Both files are then scored in llama.cpp on
the 900 test sentences as bench/gguf_quant.py scores them. Writes experiments/results/gguf_imatrix.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import time
from pathlib import Path

from bench.common import DATA, ROOT
from experiments import RESULTS


def importance(model, codec, examples) -> dict[str, object]:
    """{linear module name: mean of x^2 per input column} over the prompts + answers of `examples`."""
    import torch

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        return record

    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    handles = [m.register_forward_hook(hook(n)) for n, m in linear]
    with torch.inference_mode():
        for e in examples:
            model(torch.tensor([codec.train_ids(e.text, e.label)[0]]))
    for h in handles:
        h.remove()
    return {n: (sums[n] / counts[n]).numpy() for n in sums}


def ggml_quantizer():
    import llama_cpp

    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    fn = lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    c = ctypes
    fn.argtypes = [c.c_int, c.c_void_p, c.c_void_p, c.c_int64, c.c_int64, c.c_int64, c.c_void_p]
    return fn


def write(folder: Path, out: Path, imatrix: dict | None, checked: list) -> None:
    """finsent's q4_k_m writer with each quantised tensor made by ggml (with `imatrix` if given). The
    writer quantises the tensors in its plan's order, so the plan names each call's tensor."""
    import gguf
    import numpy as np
    from transformers import AutoConfig

    import finsent.deploy.gguf as writer

    quantize = ggml_quantizer()
    n_layer = AutoConfig.from_pretrained(folder).num_hidden_layers
    plan = writer._tensor_plan(sorted(folder.glob("*.safetensors")), n_layer)
    names = iter(hf for _, hf, *_ in plan)
    port = writer._quantize

    def by_ggml(data, qtype):
        hf = next(names)
        if qtype.name in ("F32", "F16"):
            return port(data, qtype)
        module = hf.removesuffix(".weight")
        if module == "model.embed_tokens":
            module = "lm_head"  # tied: the embedding is the head, whose inputs are the final hidden states
        w = None if imatrix is None else imatrix.get(module)
        x = np.ascontiguousarray(data.reshape(-1, data.shape[-1]), dtype=np.float32)
        out = np.zeros(int(np.prod(gguf.quants.quant_shape_to_byte_shape(x.shape, qtype))), dtype=np.uint8)
        wp = None if w is None else np.ascontiguousarray(w, dtype=np.float32).ctypes.data
        assert quantize(int(qtype), x.ctypes.data, out.ctypes.data, 0, *x.shape, wp) == out.size
        if imatrix is None:
            checked.append((hf, qtype.name, bool(np.array_equal(port(data, qtype).reshape(-1), out))))
        return out.reshape(*data.shape[:-1], -1)

    writer._quantize = by_ggml
    try:
        writer.write_gguf(folder, out, "q4_k_m")
    finally:
        writer._quantize = port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "merged_model"))
    ap.add_argument("--calib", type=int, default=300, help="training prompts, evenly spread (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np

    from bench.gguf_check import Runner, reference_model
    from finsent.data.splits import make_splits
    from finsent.deploy.ollama import modelfile, parse_modelfile, render_template
    from finsent.modeling.device import cpu_name

    folder, clf, test = reference_model(args.model, str(DATA), 0)
    train = make_splits(clf.config.data)[1]["train"]
    if args.calib and args.calib < len(train):
        train = [train[i * len(train) // args.calib] for i in range(args.calib)]
    texts, gold = [e.text for e in test], [e.label for e in test]
    ref = clf.predict(texts)
    p_ref = np.array([[r["probabilities"][lab] for lab in clf.labels] for r in ref])
    t = time.time()
    imatrix = importance(clf.model, clf.codec, train)
    print(f"importance matrix over {len(train)} training prompts in {time.time() - t:.0f} s", flush=True)
    out_dir = folder.parent / f"gguf-imatrix-{folder.name}"
    out_dir.mkdir(exist_ok=True)
    template = parse_modelfile(modelfile(clf.codec, "x.gguf"))["template"][0]
    result = {"model": args.model, "cpu": cpu_name(), "calibration_prompts": len(train), "n": len(texts)}
    for name, matrix in (("q4_k_m", None), ("q4_k_m + imatrix", imatrix)):
        checked: list = []
        path = out_dir / ("finsent-q4_k_m.gguf" if matrix is None else "finsent-q4_k_m-imatrix.gguf")
        write(folder, path, matrix, checked)
        runner = Runner(path, args.threads, n_ctx=2048, extra_bufts=False)
        logp = np.array(
            [runner.score(runner.tokenize(render_template(template, x)), clf.codec.label_ids) for x in texts]
        )
        p = np.exp(logp - logp.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        labels = [clf.labels[i] for i in p.argmax(1)]
        agree = sum(a == r["label"] for a, r in zip(labels, ref))
        result[name] = {
            "bytes": path.stat().st_size,
            "agree": agree,
            "agreement": agree / len(texts),
            "accuracy": sum(a == g for a, g in zip(labels, gold)) / len(texts),
            "mean_abs_prob_diff": float(np.abs(p - p_ref).mean()),
        }
        if checked:
            same = sum(ok for *_, ok in checked)
            result[name]["ggml_equals_numpy_port"] = f"{same}/{len(checked)} tensors"
        print(name, json.dumps(result[name]), flush=True)
    (RESULTS / "gguf_imatrix.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
