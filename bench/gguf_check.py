"""Run finsent's GGUF exports in real llama.cpp, as Ollama runs them, and compare with finsent.

    .venv/bin/python -m bench.gguf_check --model runs/demo/merged_model      # or: make gguf-check
    .venv/bin/python -m bench.gguf_check --model smollm2-135m --limit 90     # quick, untuned base

1. installs llama-cpp-python into the venv once if it is missing (a CPU build from its source
   distribution, which vendors llama.cpp: many minutes on two cores);
2. exports the model with `finsent export` to each --types (f16, q8_0), with its Modelfile;
3. runs each GGUF in llama.cpp on the test split of the model's saved config (the notebooks' split):
   - as Ollama would: the Modelfile's TEMPLATE rendered around the sentence, tokenised by llama.cpp with
     the GGUF's own BOS rule, greedy decoding under the Modelfile's num_predict/stop, the reply parsed for
     the first label word (finsent's parser);
   - by scoring: llama.cpp's log-probabilities of each label's answer tokens after the prompt, summed,
     the label probabilities compared with finsent's (finsent.serving.api.Classifier, float32);
   - the tokenisation itself: llama.cpp's ids for the rendered prompt against finsent's (HF) ids;
4. prints agreement with finsent's predictions and accuracy for each type and writes JSON
   (--json, default <out>/gguf_check.json). Targets: 99.5% agreement for f16, 98% for q8_0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, ROOT

TARGET = {"f16": 0.995, "bf16": 0.995, "q8_0": 0.98}
CMAKE_ARGS = (
    "-DGGML_NATIVE=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF "
    "-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF"  # no multimodal library: not needed here
)


def ensure_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is not None:
        return
    print(f"installing llama-cpp-python (CPU build from source, CMAKE_ARGS={CMAKE_ARGS}) ...", flush=True)
    t = time.time()
    env = dict(os.environ, CMAKE_ARGS=CMAKE_ARGS, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    cmd = [sys.executable, "-m", "pip", "install", "--no-binary", "llama-cpp-python", "llama-cpp-python"]
    subprocess.run(cmd, env=env, check=True)
    print(f"llama-cpp-python built in {time.time() - t:.0f} s", flush=True)


def reference_model(model: str, data: str, limit: int, force: bool = False):
    """(folder, finsent's float32 Classifier, test examples) for a GGUF check: the test split of the
    model's saved config, or of `data` when none is saved, its data file is missing, or `force`; `limit`
    examples evenly spread (the split is ordered by label), 0 for all."""
    from finsent.core.config import load_saved_config
    from finsent.data.splits import make_splits
    from finsent.deploy.export import model_folder
    from finsent.serving.api import Classifier

    folder = model_folder(model)
    clf = Classifier.load(str(folder), dtype="float32")
    cfg = clf.config
    if force or load_saved_config(folder) is None or not Path(cfg.data.data).is_file():
        cfg.data.data = data
    test = make_splits(cfg.data)[1]["test"]
    if limit and limit < len(test):
        test = [test[i * len(test) // limit] for i in range(limit)]
    return folder, clf, test


def lcp(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Runner:
    """One GGUF in llama.cpp: tokenise, score labels, decode greedily; the KV cache is reused across
    sentences for the shared instruction (as llama.cpp's server and Ollama do)."""

    def __init__(self, path: Path, threads: int, n_ctx: int, extra_bufts: bool):
        import llama_cpp
        import llama_cpp.llama_cpp as lib

        self.lib = lib
        default_params = lib.llama_model_default_params

        def model_params():
            # llama.cpp's extra CPU buffer types (AMX, repacked weights) off unless asked for: on this
            # sandbox the CPU reports AMX but `tilezero` in ggml's q8_0 AMX kernel dies with SIGILL
            params = default_params()
            params.use_extra_bufts = extra_bufts
            return params

        lib.llama_model_default_params = model_params
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_batch=512, n_threads=threads, verbose=False, seed=0
            )
        finally:
            lib.llama_model_default_params = default_params
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = self.llm.n_vocab()
        self.state: list[int] = []

    def tokenize(self, prompt: str) -> list[int]:
        # add_bos=True is llama.cpp's add_special: whether BOS is really added is the GGUF's
        # tokenizer.ggml.add_bos_token; special=True parses special tokens in the text, as Ollama does
        return self.llm.tokenize(prompt.encode(), add_bos=True, special=True)

    def _logits(self):
        import numpy as np

        ptr = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)

    def _feed(self, ids: list[int]):
        """Evaluate `ids` from the longest prefix already in the cache; the last position's logits."""
        keep = min(lcp(self.state, ids), len(ids) - 1)
        self.llm.n_tokens = keep
        self.llm.eval(ids[keep:])
        self.state = list(ids)
        return self._logits()

    @staticmethod
    def _logsoftmax(x):
        import numpy as np

        m = x.max()
        return x - m - np.log(np.exp(x - m).sum())

    def score(self, prompt_ids: list[int], answers: list[list[int]]) -> list[float]:
        """log p(answer | prompt) summed over the answer's tokens, for each answer."""
        first = self._logsoftmax(self._feed(prompt_ids))
        out = []
        for ans in answers:
            total = float(first[ans[0]])
            for m in range(1, len(ans)):
                total += float(self._logsoftmax(self._feed(prompt_ids + ans[:m]))[ans[m]])
            out.append(total)
        return out

    def generate(self, prompt_ids: list[int], num_predict: int, stops: list[str]) -> str:
        """Greedy decoding (temperature 0, no penalties) until num_predict tokens, a stop string or EOG."""
        ids = list(prompt_ids)
        out: list[int] = []
        text = ""
        for _ in range(num_predict):
            tok = int(self._feed(ids).argmax())
            if self.lib.llama_vocab_is_eog(self.vocab, tok):
                break
            out.append(tok)
            ids.append(tok)
            text = self.llm.detokenize(out).decode("utf-8", errors="replace")
            cut = [text.index(s) for s in stops if s in text]
            if cut:
                return text[: min(cut)]
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default=str(ROOT / "runs" / "demo" / "merged_model"), help="merged model folder"
    )
    p.add_argument("--types", default="f16,q8_0", help="GGUF tensor types to check")
    p.add_argument("--limit", type=int, default=0, help="only N test sentences, evenly spread (0 = all)")
    p.add_argument("--out", default="", help="where the GGUFs go (default: <model>/../gguf-check)")
    p.add_argument("--json", default="", help="result file (default: <out>/gguf_check.json)")
    p.add_argument("--data", default="", help=f"data file when the model's config names none ({DATA})")
    # llama.cpp's threads spin while they wait: on a shared two-core machine two of them crawled (20x
    # slower per sentence when another job ran), one did not
    p.add_argument("--threads", type=int, default=max(1, min(4, (os.cpu_count() or 1) - 1)))
    p.add_argument("--reuse", action="store_true", help="reuse GGUFs already in --out instead of exporting")
    p.add_argument(
        "--extra-bufts",
        action="store_true",
        help="let llama.cpp use its extra CPU buffer types (AMX, repacking), as Ollama does by default",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("FINSENT_DATA_DIR", str(DATA.parents[1]))

    ensure_llama_cpp()
    import numpy as np

    from finsent.cli import main as finsent_main
    from finsent.deploy.ollama import parse_modelfile, render_template
    from finsent.modeling.scoring import parse_answer

    folder, clf, test = reference_model(args.model, args.data or str(DATA), args.limit, force=bool(args.data))
    cfg, codec = clf.config, clf.codec
    out_dir = Path(args.out) if args.out else folder.parent / f"gguf-check-{folder.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    texts, gold = [e.text for e in test], [e.label for e in test]
    print(f"{folder}: {len(texts)} test sentences of {cfg.data.data}", flush=True)

    t = time.time()
    ref = clf.predict(texts)
    ref_labels = [r["label"] for r in ref]
    print(
        f"finsent (float32): accuracy {sum(a == b for a, b in zip(ref_labels, gold)) / len(gold):.1%} "
        f"({time.time() - t:.0f} s)",
        flush=True,
    )
    result = {
        "model": args.model,
        "folder": str(folder),
        "n": len(texts),
        "data": str(cfg.data.data),
        "finsent_accuracy": sum(a == b for a, b in zip(ref_labels, gold)) / len(gold),
        "types": {},
    }

    for dtype in [x.strip() for x in args.types.split(",") if x.strip()]:
        gguf_path = out_dir / f"finsent-{dtype}.gguf"
        if not (args.reuse and gguf_path.is_file()):
            t = time.time()
            # the export's own gate (transformers' GGUF loader) is recorded, not enforced: this run measures
            argv = ["export", "--model", args.model, "--quant", dtype, "--out", str(gguf_path)]
            if finsent_main([*argv, "--min-agreement", "0"]) != 0:
                return 2
            print(f"exported {gguf_path.name} in {time.time() - t:.0f} s", flush=True)
        mf = parse_modelfile((out_dir / "Modelfile").read_text(encoding="utf-8"))
        template = mf["template"][0]
        num_predict = int(mf["num_predict"][0])
        stops = mf.get("stop", [])
        runner = Runner(gguf_path, args.threads, n_ctx=2048, extra_bufts=args.extra_bufts)
        t = time.time()
        tok_mismatch, examples = 0, []
        by_score, by_generate, replies, max_diff = [], [], {}, 0.0
        for i, text in enumerate(texts):
            prompt = render_template(template, text)
            ids = runner.tokenize(prompt)
            ref_ids = codec.prompt_ids(text)
            if ids != ref_ids:
                tok_mismatch += 1
                if len(examples) < 5:
                    k = lcp(ids, ref_ids)
                    examples.append(
                        {"text": text, "at": k, "llama.cpp": ids[k : k + 6], "finsent": ref_ids[k : k + 6]}
                    )
            logp = runner.score(ids, codec.label_ids)
            probs = np.exp(np.array(logp) - max(logp))
            probs = probs / probs.sum()
            by_score.append(codec.labels[int(probs.argmax())])
            ref_probs = [ref[i]["probabilities"][lab] for lab in codec.labels]
            max_diff = max(max_diff, float(np.abs(probs - np.array(ref_probs)).max()))
            reply = runner.generate(ids, num_predict, stops)
            by_generate.append(parse_answer(reply, codec))
            replies[reply] = replies.get(reply, 0) + 1
            if (i + 1) % 100 == 0:
                print(f"  {dtype}: {i + 1}/{len(texts)} ({time.time() - t:.0f} s)", flush=True)
        n = len(texts)
        parity_file = gguf_path.with_suffix(".parity.json")
        row = {
            "file": str(gguf_path),
            "export_parity": json.loads(parity_file.read_text()) if parity_file.is_file() else None,
            "bytes": gguf_path.stat().st_size,
            "tokenisation_mismatches": tok_mismatch,
            "tokenisation_examples": examples,
            "score_agreement": sum(a == b for a, b in zip(by_score, ref_labels)) / n,
            "score_accuracy": sum(a == b for a, b in zip(by_score, gold)) / n,
            "max_probability_difference": max_diff,
            "ollama_agreement": sum(a == b for a, b in zip(by_generate, ref_labels)) / n,
            "ollama_accuracy": sum(a == b for a, b in zip(by_generate, gold)) / n,
            "ollama_unparsed": sum(a not in codec.labels for a in by_generate),
            "ollama_replies": dict(sorted(replies.items(), key=lambda kv: -kv[1])[:10]),
            "target": TARGET.get(dtype),
            "seconds": round(time.time() - t, 1),
        }
        row["passed"] = row["score_agreement"] >= TARGET.get(dtype, 1.0)
        result["types"][dtype] = row
        print(
            f"{dtype}: scoring agrees with finsent on {row['score_agreement']:.1%} (accuracy "
            f"{row['score_accuracy']:.1%}, max prob diff {max_diff:.3f}); Ollama-style greedy reply agrees on "
            f"{row['ollama_agreement']:.1%} (accuracy {row['ollama_accuracy']:.1%}, {row['ollama_unparsed']} "
            f"unparsed); tokenisation differs on {tok_mismatch}/{n} prompts; target {TARGET.get(dtype, 1):.1%}"
            f" {'PASS' if row['passed'] else 'FAIL'}",
            flush=True,
        )
        del runner
    path = Path(args.json) if args.json else out_dir / "gguf_check.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if all(r["passed"] for r in result["types"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
