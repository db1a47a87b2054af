"""Train = deploy: does `finsent predict` answer what plain transformers answers for the same prompt?

    .venv/bin/python -m bench.plain_check --model runs/demo/merged_model [--n 240]

The reference shares no code with finsent's scorer: the notebooks' prompt is written out here as the
notebooks write it, tokenised as one string by the model's own tokenizer, and each label scored by one
ordinary forward pass (the sum of its answer tokens' log-probabilities). The sentences are taken from
all-data.csv, most of them (200 of 240 by default) opening with a character that is not a letter, where
splitting the prompt at the sentence would change the tokens. `finsent predict` runs as a user runs it,
in a subprocess, on the same sentences. Prints the agreement and writes a JSON result.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DATA, ROOT

LABELS = ["positive", "neutral", "negative"]


def notebook_prompt(text: str) -> str:
    """The notebooks' generate_test_prompt, character for character (an indented f-string, .strip())."""
    return f"""
            Analyze the sentiment of the news headline enclosed in square brackets, 
            determine if it is positive, neutral, or negative, and return the answer as 
            the corresponding sentiment label "positive" or "neutral" or "negative".

            [{text}] = """.strip()


def pick_sentences(n: int, odd: int) -> list[str]:
    """`odd` sentences that open with a non-letter, then plain ones, in file order (distinct texts)."""
    with open(DATA, encoding="latin-1", newline="") as fh:
        texts = list(dict.fromkeys(row[1].strip() for row in csv.reader(fh) if len(row) == 2))
    unusual = [t for t in texts if not t[0].isalpha()][:odd]
    plain = [t for t in texts if t[0].isalpha()][: n - len(unusual)]
    return unusual + plain


def plain_scores(model_dir: str, texts: list[str]) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    preds = []
    with torch.no_grad():
        for text in texts:
            prompt = notebook_prompt(text)
            ids = tok(prompt)["input_ids"]
            answers = []
            for label in LABELS:
                full = tok(prompt + " " + label)["input_ids"]
                assert full[: len(ids)] == ids, "the answer merged into the prompt's last token"
                answers.append(full[len(ids) :])
            if all(len(a) == 1 for a in answers):  # one forward gives every single-token answer
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
                scores = [float(logp[a[0]]) for a in answers]
            else:
                scores = []
                for answer in answers:
                    full = torch.tensor([ids + answer])
                    logp = torch.log_softmax(model(input_ids=full).logits[0].float(), -1)
                    scores.append(sum(float(logp[len(ids) - 1 + m, t]) for m, t in enumerate(answer)))
            preds.append(LABELS[max(range(3), key=scores.__getitem__)])
    return preds


def finsent_predict(model_dir: str, texts: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        cmd = [sys.executable, "-m", "finsent", "predict", "--model", model_dir, "--dtype", "float32"]
        subprocess.run(cmd + ["--input", str(src), "--output", str(out)], check=True)
        return [json.loads(line)["predicted"] for line in out.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "merged_model"))
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--odd", type=int, default=200, help="how many open with a non-letter")
    ap.add_argument("--result", default=str(ROOT / "runs" / "plain_check.json"))
    args = ap.parse_args()
    texts = pick_sentences(args.n, args.odd)
    t = time.perf_counter()
    reference = plain_scores(args.model, texts)
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    ours = finsent_predict(args.model, texts)
    t_ours = time.perf_counter() - t
    agree = sum(a == b for a, b in zip(reference, ours))
    odd = sum(not x[0].isalpha() for x in texts)
    print(f"{args.model}: {len(texts)} sentences of all-data.csv, {odd} opening with a non-letter")
    print(
        f"finsent predict agrees with plain whole-prompt transformers scoring on {agree}/{len(texts)} ({agree / len(texts):.1%})"
    )
    print(
        f"plain scoring {t_plain:.0f} s, finsent predict {t_ours:.0f} s (process start and model load included)"
    )
    disagreements = [(x, a, b) for x, a, b in zip(texts, reference, ours) if a != b]
    for x, a, b in disagreements[:10]:
        print(f"  plain {a:<8} finsent {b:<8} {x[:80]}")
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(
        json.dumps(
            {
                "model": args.model,
                "n": len(texts),
                "non_letter_start": odd,
                "agree": agree,
                "agreement": agree / len(texts),
                "disagreements": disagreements,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
