"""Merge a LoRA adapter into its base in full precision, save it, and prove the merge kept accuracy.

    finsent merge --adapter runs/demo/train/adapter --out runs/demo/merged

The notebooks merged into a half-precision copy and lost 4.5 points. Here the base is loaded in
float32 (a 4-bit base is dequantised by loading it unquantised), the LoRA delta is added in float32, and
the merged model's predictions are compared with the adapter's: below the required agreement the command
fails and says so. `finsent merge` compares on the eval split; `finsent run` compares the two full
test-split evaluations it makes anyway.
"""

from __future__ import annotations

import copy
from pathlib import Path

from finsent.config import Config, save_config
from finsent.errors import FinsentError


def merge(
    cfg: Config,
    adapter: str | Path,
    out: str | Path,
    min_agreement: float = 0.995,
    eval_examples=None,
    batch_size: int = 32,
) -> dict:
    """Merge, save to `out`, and check the merged model against the adapter on `eval_examples`."""
    from finsent.data import make_splits
    from finsent.evaluate import make_codec
    from finsent.model_card import write_model_card
    from finsent.scoring import classify

    if eval_examples is None:
        eval_examples = make_splits(cfg.data)[1]["eval"]
    texts = [e.text for e in eval_examples]
    peft_model, tokenizer = _load_unquantised(cfg, adapter)
    codec = make_codec(cfg, tokenizer)
    before = classify(peft_model, codec, texts, batch_size)
    merged = merge_and_save(cfg, adapter, out, peft_model, tokenizer)
    after = classify(merged, codec, texts, batch_size)
    parity = check_parity(before, after, Path(out), "eval split", min_agreement)
    write_model_card(
        Path(out),
        cfg,
        "merged",
        extra={
            "merged from adapter": adapter,
            "merge parity (eval split)": f"{parity['agreement']:.1%} identical predictions",
        },
    )
    return parity


def _load_unquantised(cfg: Config, adapter):
    import torch

    from finsent.models import load_model

    full = copy.deepcopy(cfg)
    full.model.load_in_4bit = (
        False  # merge into an unquantised base: rounding the sum to 4 bits loses accuracy
    )
    model, tokenizer, _ = load_model(full.model, str(adapter), dtype=torch.float32)
    return model, tokenizer


def merge_and_save(cfg: Config, adapter, out, peft_model=None, tokenizer=None):
    """Add the LoRA delta to the float32 base, save the result (model, tokenizer, config) to `out`.
    The caller writes the model card once it has checked parity."""
    import torch

    if peft_model is None:
        peft_model, tokenizer = _load_unquantised(cfg, adapter)
    merged = peft_model.merge_and_unload()
    out = Path(out)
    target_dtype = getattr(torch, cfg.model.dtype) if cfg.model.dtype != "auto" else torch.float32
    merged.to(target_dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    merged_cfg = copy.deepcopy(cfg)
    merged_cfg.model.model = str(out.resolve())
    merged_cfg.model.load_in_4bit = False
    save_config(merged_cfg, out)
    return merged


def check_parity(before, after, out: Path, where: str, min_agreement: float = 0.995) -> dict:
    """Compare (predictions, probabilities) of the adapter and of the merged model; write
    merge_parity.json into `out`; fail below `min_agreement`."""
    import torch

    from finsent.fsio import write_json

    (preds_a, probs_a), (preds_b, probs_b) = before, after
    n = len(preds_a)
    agree = sum(a == b for a, b in zip(preds_a, preds_b)) / n
    max_diff = float((torch.tensor(probs_a) - torch.tensor(probs_b)).abs().max())
    parity = {
        "agreement": agree,
        "n": n,
        "split": where,
        "max_probability_difference": max_diff,
        "min_agreement": min_agreement,
    }
    write_json(out / "merge_parity.json", parity)
    print(
        f"merge parity on {n} sentences ({where}): {agree:.1%} identical predictions, "
        f"max probability difference {max_diff:.2e}"
    )
    if agree < min_agreement:
        raise FinsentError(
            f"merged model agrees with the adapter on only {agree:.1%} of the {where} "
            f"(< {min_agreement:.1%}); {out} is not a faithful merge"
        )
    return parity
