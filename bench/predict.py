"""Classification speed: the notebooks' prediction loop against finsent's evaluator, same model, same run.

    .venv/bin/python -m bench.predict            # 300 test sentences
    .venv/bin/python -m bench.predict --quick    # 60 sentences, under 3 minutes

The notebooks build a text-generation pipeline for every sentence, generate one token, and look for a
label word in it. finsent scores every label's full answer in one batched pass (modeling/scoring.py). Both run
on the same model object, the same sentences (the notebook split's test set) and this machine. Also
reported: the share of finsent predictions identical to the plain scoring path (one ordinary forward per
sentence and label, in float32), and achieved FLOP/s against a measured matmul peak. On a CPU with AMX or
AVX512-BF16 finsent's default path (bf16 with a float32 recheck of near-ties, modeling.load.load_scorer)
is timed beside its float32 path, each against its own dtype's peak.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import DATA
from finsent.core.registry import DEFAULT_MODEL


def matmul_peak(dtype, device: str = "cpu") -> float:
    """FLOP/s of a square matmul in `dtype` on `device` (8192^3 on a GPU, 2048^3 on a CPU)."""
    import torch

    size, n = (8192, 20) if device.startswith("cuda") else (2048, 3)
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(n):
        a @ b
    sync()  # CUDA kernels run asynchronously: time them to completion
    return 2 * size**3 * n / (time.perf_counter() - start)


def notebook_predict(model, tokenizer, prompts: list[str]) -> list[str]:
    """The notebooks' loop, as written: a new pipeline per sentence, one new token, substring parsing."""
    from tqdm import tqdm
    from transformers import pipeline

    y_pred = []
    for prompt in tqdm(prompts, desc="notebook loop", file=sys.stderr):
        pipe = pipeline(
            task="text-generation", model=model, tokenizer=tokenizer, max_new_tokens=1, temperature=0.001
        )
        result = pipe(prompt)
        answer = result[0]["generated_text"].split("=")[-1]
        if "positive" in answer:
            y_pred.append("positive")
        elif "negative" in answer:
            y_pred.append("negative")
        elif "neutral" in answer:
            y_pred.append("neutral")
        else:
            y_pred.append("none")
    return y_pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 sentences instead of 300")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    n = 60 if args.quick else 300

    import torch

    from finsent.core.options import Config
    from finsent.core.prompts import PromptCodec
    from finsent.data.readers import read_file
    from finsent.data.splits import split_notebook
    from finsent.modeling.load import load_scorer
    from finsent.modeling.scoring import classify, dtype_note, score_plain

    cfg = Config()
    cfg.model.model = args.model
    examples = split_notebook(read_file(DATA, cfg.data.labels).examples, cfg.data.labels)["test"]
    examples = examples[:: len(examples) // n][:n]  # every label represented
    texts, gold = [e.text for e in examples], [e.label for e in examples]
    fast, tokenizer, device, recheck = load_scorer(cfg.model)
    model = recheck.model if recheck else fast  # float32 where a guarded bf16 copy is the default
    codec = PromptCodec.from_config(cfg, tokenizer)
    prompts = [codec.template.render(t) for t in texts]
    print(f"model {args.model} ({model.dtype}, {device}), {n} sentences, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    nb = notebook_predict(model, tokenizer, prompts)
    t_nb = time.perf_counter() - start

    classify(model, codec, texts[:4], args.batch_size)  # warm-up, as the pipeline's first call warmed up
    start = time.perf_counter()
    ours, _ = classify(model, codec, texts, args.batch_size)
    t_ours = time.perf_counter() - start

    if recheck:  # the default path: bf16 with float32's near-ties
        classify(fast, codec, texts[:4], args.batch_size)
        start = time.perf_counter()
        guarded, _ = classify(fast, codec, texts, args.batch_size, recheck=recheck)
        t_guarded = time.perf_counter() - start

    plain = score_plain(model, codec, texts).argmax(-1).tolist()
    plain_labels = [codec.labels[i] for i in plain]

    # FLOPs actually needed: 2 x non-embedding parameters per processed token (+ the scored logits)
    n_params = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    prefix, bodies = len(codec.prefix_ids), sum(len(codec.split(t)[1]) for t in texts)
    batches = -(-n // args.batch_size)
    our_flops = 2 * n_params * (bodies + prefix * batches)
    nb_tokens = sum(len(tokenizer(p)["input_ids"]) + 1 for p in prompts)
    vocab = model.get_output_embeddings().weight.numel()
    nb_flops = (
        2 * n_params * nb_tokens + 2 * vocab * n
    )  # generate() computes logits at the last position only
    peak = matmul_peak(model.dtype, str(device))
    bf16_peak = peak if model.dtype == torch.bfloat16 else matmul_peak(torch.bfloat16, str(device))

    acc = lambda preds: sum(p == g for p, g in zip(preds, gold)) / n  # noqa: E731
    print(
        f"notebook loop : {n / t_nb:7.2f} sentences/s  accuracy {acc(nb):.3f}  "
        f"unparsed {sum(p == 'none' for p in nb)}  {nb_flops / t_nb / 1e9:.1f} GFLOP/s"
    )
    print(
        f"finsent       : {n / t_ours:7.2f} sentences/s  accuracy {acc(ours):.3f}  unparsed 0  "
        f"{our_flops / t_ours / 1e9:.1f} GFLOP/s"
    )
    print(f"speed-up      : {t_nb / t_ours:.1f}x")
    same = sum(a == b for a, b in zip(ours, plain_labels)) / n
    print(f"identical to plain per-sentence scoring ({str(model.dtype).replace('torch.', '')}): {same:.1%}")
    print(f"identical to the notebook loop    : {sum(a == b for a, b in zip(ours, nb)) / n:.1%}")
    dtype = str(model.dtype).replace("torch.", "")
    print(
        f"matmul peak ({dtype}): {peak / 1e9:.0f} GFLOP/s; finsent reaches "
        f"{our_flops / t_ours / peak:.0%} of it, the notebook loop {nb_flops / t_nb / peak:.0%}"
    )
    if recheck:
        print(
            f"finsent default ({dtype_note(fast, recheck)}): {n / t_guarded:.2f} sentences/s, "
            f"{t_ours / t_guarded:.2f}x float32, {t_nb / t_guarded:.1f}x the notebook loop, "
            f"{our_flops / t_guarded / bf16_peak:.0%} of the bf16 peak ({bf16_peak / 1e9:.0f} GFLOP/s); "
            f"{recheck.rescored} texts rescored; labels as float32's: "
            f"{sum(a == b for a, b in zip(guarded, ours)) / n:.1%}"
        )
    elif model.dtype != torch.bfloat16:
        print(bf16_note(bf16_peak, peak, dtype))


def bf16_note(bf16_peak: float, peak: float, dtype: str) -> str:
    """The bf16 matmul peak beside the one in use: why finsent's auto dtype chose what it chose."""
    faster = "faster" if bf16_peak > peak else "slower"
    return f"matmul peak (bf16): {bf16_peak / 1e9:.2f} GFLOP/s, {faster} than {dtype} on this machine"


if __name__ == "__main__":
    main()
