"""Every GGUF type finsent exports, run in llama.cpp against finsent: size, agreement, accuracy, speed.

    .venv/bin/python -m bench.gguf_quant                                   # the demo's merged model
    .venv/bin/python -m bench.gguf_quant --model smollm2-135m --limit 300  # the untuned base, quicker

For each --types (default f16, q8_0, q5_k_m, q4_k_m, q4_0) it exports the model with `finsent export`
(its own parity gate recorded, not enforced), then scores the test split of the model's saved config
(else the notebooks' split of all-data.csv) in llama.cpp through llama-cpp-python, the way
bench/gguf_check.py does: llama.cpp's log-probabilities of each label's answer tokens after the prompt
that the Modelfile's TEMPLATE renders, the top label compared with finsent's float32 prediction and with
the gold label. Sentences/s is llama.cpp's scoring rate on --threads threads (the instruction prefix
cached across sentences, as llama.cpp's server and Ollama do). Writes bench/results/gguf_quant.json and
gguf_quant.md (the table in docs/deployment.md). llama-cpp-python is installed once if missing (a source
build: many minutes on two cores).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench.common import DATA, RESULTS, ROOT
from bench.gguf_check import Runner, ensure_llama_cpp, reference_model

TYPES = "f16,q8_0,q5_k_m,q4_k_m,q4_0"


def _args(argv):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo = ROOT / "runs" / "demo" / "merged_model"
    p.add_argument("--model", default=str(demo) if demo.is_dir() else "smollm2-135m")
    p.add_argument("--types", default=TYPES)
    p.add_argument("--limit", type=int, default=0, help="only N test sentences, evenly spread (0 = all)")
    p.add_argument("--data", default=str(DATA), help="data file when the model's config names none")
    p.add_argument("--gguf-dir", default="", help="where the GGUFs go (default: <model>/../gguf-quant)")
    p.add_argument("--threads", type=int, default=max(1, min(4, (os.cpu_count() or 1) - 1)))
    p.add_argument("--reuse", action="store_true", help="reuse GGUFs already in --gguf-dir")
    p.add_argument("--out", default=str(RESULTS / "gguf_quant"), help="result files OUT.json and OUT.md")
    return p.parse_args(argv)


def score_in_llama_cpp(path: Path, template: str, texts: list[str], codec, threads: int):
    """(labels, seconds): llama.cpp's top label for each sentence, scored as finsent scores."""
    import numpy as np

    from finsent.deploy.ollama import render_template

    runner = Runner(path, threads, n_ctx=2048, extra_bufts=False)
    t = time.time()
    labels = []
    for i, text in enumerate(texts):
        logp = runner.score(runner.tokenize(render_template(template, text)), codec.label_ids)
        labels.append(codec.labels[int(np.argmax(logp))])
        if (i + 1) % 100 == 0:
            print(f"  {path.name}: {i + 1}/{len(texts)} ({time.time() - t:.0f} s)", flush=True)
    return labels, time.time() - t


def markdown(result: dict) -> str:
    rows = [
        f"GGUF types of `{result['model']}` in llama.cpp (llama-cpp-python {result['llama_cpp']}, "
        f"{result['threads']} thread(s)) against finsent in float32, {result['n']} test sentences of "
        f"{Path(result['data']).name}; finsent's own accuracy {result['finsent_accuracy']:.3f}.",
        "",
        "| type | file | agreement with finsent | accuracy | sentences/s | export gate (transformers) |",
        "|---|---|---|---|---|---|",
    ]
    for dtype, r in result["types"].items():
        gate = r["export_parity"] or {}
        rows.append(
            f"| {dtype} | {r['bytes'] / 1e6:.0f} MB | {r['agreement']:.1%} ({r['agree']}/{result['n']}) | "
            f"{r['accuracy']:.3f} | {r['sentences_per_s']:.1f} | "
            f"{gate.get('agreement', float('nan')):.1%} of {gate.get('n', '?')} ({gate.get('split', '?')}) |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("FINSENT_DATA_DIR", str(DATA.parents[1]))
    ensure_llama_cpp()
    import llama_cpp

    from finsent.cli import main as finsent_main
    from finsent.core.config import load_saved_config
    from finsent.deploy.ollama import parse_modelfile

    folder, clf, test = reference_model(args.model, args.data, args.limit)
    cfg, codec = clf.config, clf.codec
    gguf_dir = Path(args.gguf_dir) if args.gguf_dir else folder.parent / f"gguf-quant-{folder.name}"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    texts, gold = [e.text for e in test], [e.label for e in test]
    t = time.time()
    ref = [r["label"] for r in clf.predict(texts)]
    n = len(texts)
    result = {
        "model": args.model,
        "zero_shot": load_saved_config(folder) is None,
        "llama_cpp": llama_cpp.__version__,
        "threads": args.threads,
        "n": n,
        "data": str(cfg.data.data),
        "finsent_accuracy": sum(a == b for a, b in zip(ref, gold)) / n,
        "finsent_seconds": round(time.time() - t, 1),
        "types": {},
    }
    print(f"{folder}: {n} test sentences; finsent accuracy {result['finsent_accuracy']:.3f}", flush=True)
    for dtype in [x.strip() for x in args.types.split(",") if x.strip()]:
        path = gguf_dir / f"finsent-{dtype}.gguf"
        t = time.time()
        if not (args.reuse and path.is_file()):
            cmd = ["export", "--model", args.model, "--quant", dtype, "--out", str(path)]
            if finsent_main([*cmd, "--data", cfg.data.data, "--min-agreement", "0"]) != 0:
                return 2
        export_s = time.time() - t
        template = parse_modelfile((gguf_dir / "Modelfile").read_text(encoding="utf-8"))["template"][0]
        labels, seconds = score_in_llama_cpp(path, template, texts, codec, args.threads)
        parity = path.with_suffix(".parity.json")
        agree = sum(a == b for a, b in zip(labels, ref))
        row = {
            "file": str(path),
            "bytes": path.stat().st_size,
            "export_seconds": round(export_s, 1),
            "export_parity": json.loads(parity.read_text()) if parity.is_file() else None,
            "agree": agree,
            "agreement": agree / n,
            "accuracy": sum(a == b for a, b in zip(labels, gold)) / n,
            "sentences_per_s": n / seconds,
        }
        result["types"][dtype] = row
        print(
            f"{dtype}: {row['bytes'] / 1e6:.0f} MB, agrees with finsent on {row['agreement']:.1%}, accuracy "
            f"{row['accuracy']:.3f}, {row['sentences_per_s']:.1f} sentences/s in llama.cpp",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
