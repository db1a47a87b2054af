"""Merge a LoRA adapter into its base in full precision, save it, and prove the merge kept accuracy.

    finsent merge --adapter runs/train/adapter --out runs/merged

The notebooks merged into a half-precision copy and lost 4.5 points. Here the base is loaded in
float32 (a 4-bit base is dequantised by loading it unquantised), the LoRA delta is added in float32, and
the merged model's predictions are compared with the adapter's: below the required agreement the command
fails and says so (finsent.parity). `finsent merge` compares on the eval split; `finsent run` compares
the two full test-split evaluations it makes anyway.
"""

from __future__ import annotations

import copy
from pathlib import Path

from finsent.core.artefacts import CONFIG_FILE, MERGE_PARITY_FILE, MODEL_CARD
from finsent.core.config import save_config, self_contained
from finsent.core.options import Config
from finsent.modeling.calibration import Calibration

MIN_AGREEMENT = 0.995


def merge(
    cfg: Config,
    adapter: str | Path,
    out: str | Path,
    min_agreement: float = MIN_AGREEMENT,
    eval_examples=None,
    batch_size: int = 32,
) -> dict:
    """Merge, save to `out`, and check the merged model against the adapter on `eval_examples`."""
    from finsent.core.lock import hold

    _check_out(Path(out), Path(adapter))  # before anything loads
    # one merge at a time writes `out` (replaced whole: its lock lies beside it, core/lock.py)
    with hold(out, "merge", beside=True):
        return _merge(cfg, adapter, out, min_agreement, eval_examples, batch_size)


def _check_out(out: Path, adapter: Path) -> None:
    """`out` is replaced whole, so it may only be new, empty, or an earlier merge's output (its
    merge_parity.json): never the adapter, a folder holding it, a training run or anyone's other files."""
    from finsent.core.errors import FinsentError
    from finsent.core.fsio import out_folder

    out_folder(out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if adapter.resolve() == out.resolve() or out.resolve() in adapter.resolve().parents:
        raise FinsentError(
            f"--out {out} holds the adapter {adapter}: merging would replace it; choose another --out"
        )
    if not (out / MERGE_PARITY_FILE).is_file():
        raise FinsentError(
            f"--out {out} holds files that are not a merged model finsent wrote (no {MERGE_PARITY_FILE}), and "
            "the merge replaces the folder whole: choose another --out, or empty it first"
        )


def _merge(cfg: Config, adapter, out, min_agreement: float, eval_examples, batch_size: int) -> dict:
    from finsent.core.fsio import atomic_dir, remove_leftovers
    from finsent.core.prompts import PromptCodec
    from finsent.data.splits import make_splits
    from finsent.modeling.scoring import classify

    # a killed merge's staging copy (the lock beside `out` is ours)
    remove_leftovers(Path(out).parent, name=Path(out).name)
    if eval_examples is None:
        eval_examples = make_splits(cfg.data)[1]["eval"]
    texts = [e.text for e in eval_examples]
    trained = _as_trained(cfg, adapter, texts, batch_size)  # QLoRA: the adapter on its 4-bit base
    peft_model, tokenizer = _load_unquantised(cfg, adapter)
    codec = PromptCodec.from_config(cfg, tokenizer)
    before = trained or classify(peft_model, codec, texts, batch_size)
    reference = (
        "adapter on its 4-bit base (as trained)"
        if trained
        else "adapter on a float32 base"
        + (" (the 4-bit base it was trained on needs CUDA + bitsandbytes)" if cfg.model.load_in_4bit else "")
    )
    # saved and certified in a hidden folder that takes the name `out` only then (fsio.atomic_dir): a
    # kill leaves `out` certified or as it was
    with atomic_dir(out, judge=False) as staging:  # (merge_and_save judges its own writes)
        merged = merge_and_save(cfg, adapter, staging, out, peft_model, tokenizer)
        after = classify(merged, codec, texts, batch_size)
        return certify_merge(
            cfg, adapter, staging, before, after, "eval split",
            min_agreement=min_agreement, reference=reference, name=out,
        )  # fmt: skip


def _as_trained(cfg: Config, adapter, texts, batch_size):
    """The adapter's predictions on the 4-bit base it was trained and evaluated on (QLoRA), where this
    machine can load it; None for a LoRA adapter, or where it cannot (then say so, in one line)."""
    if not cfg.model.load_in_4bit:
        return None
    import importlib.util

    import torch

    if not (torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes")):
        from finsent.core.console import note

        note(
            "the adapter was trained on a 4-bit base, which needs CUDA + bitsandbytes: comparing the "
            "merged model with the adapter on a float32 base instead"
        )
        return None
    from finsent.core.prompts import PromptCodec
    from finsent.modeling.load import load_model
    from finsent.modeling.scoring import classify

    model, tokenizer, _ = load_model(cfg.model, str(adapter))
    outputs = classify(model, PromptCodec.from_config(cfg, tokenizer), texts, batch_size)
    del model
    torch.cuda.empty_cache()
    return outputs


def certify_merge(
    cfg: Config,
    trained,
    out,
    before,
    after,
    where: str,
    *,
    min_agreement: float = MIN_AGREEMENT,
    metrics: dict | None = None,
    reference: str = "adapter",
    extra: dict | None = None,
    name: str | Path | None = None,
) -> dict:
    """The merged model in `out` against what it was made from, `trained` (the adapter, or with
    train.method=full the fully fine-tuned model it copies; `reference` says how that was run), on the
    same sentences (`before` and `after`: predictions and probabilities):
    merge_parity.json, then (only if it passes) the model card, with the test metrics when the caller
    measured them. `name`: the folder's accepted name when `out` is a staging folder (a model that fails
    goes to NAME.rejected)."""
    from finsent.core.errors import FinsentError
    from finsent.core.fsio import reject
    from finsent.core.parity import certify, summary_line
    from finsent.modeling.card import write_model_card

    out = Path(out)
    try:
        parity = certify(
            before,
            after,
            out / MERGE_PARITY_FILE,
            where=where,
            what="merged model / adapter",
            min_agreement=min_agreement,
            extra={"reference": reference, **(extra or {})},
        )
    except FinsentError as e:
        moved = reject(out, str(e), name)
        # the parity record named the staging folder, which is now `moved`
        raise FinsentError(
            f"{str(e).replace(str(out), str(moved))}; the merged model was moved to {moved}"
        ) from None
    full = cfg.train.method == "full"
    write_model_card(
        out,
        cfg,
        "full" if full else "merged",
        metrics=metrics,
        extra={
            ("copied from the fully fine-tuned model" if full else "merged from adapter"): trained,
            f"merge parity ({where})": f"{summary_line(parity)}, against the {reference}",
        },
        name=name,
    )
    return parity


def copy_full(cfg: Config, trained, folder, name) -> None:
    """train.method=full: nothing to merge; the trained model folder is copied into `folder` (the caller's
    staging folder, which takes the name `name` once certified) with a config naming `name`, so a run's
    deployable model is always merged_model/. The caller then checks the copy's parity and writes its
    card, as for a merge."""
    import shutil

    from finsent.core.fsio import write_errors

    with write_errors(name):  # a full disk names the folder the user asked for, not the staging one
        shutil.copytree(trained, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MODEL_CARD))
        save_config(self_contained(cfg, name), folder)


def identical_files(a: str | Path, b: str | Path) -> int:
    """How many files `b` holds byte-identical to `a`'s (sha256), or 0 when any file differs or is
    missing on either side. finsent's own config (which names the folder) and the model card are left
    out: everything that loading the model reads is compared."""
    import hashlib

    def digests(folder: Path) -> dict[str, str]:
        out = {}
        for f in sorted(Path(folder).rglob("*")):
            name = f.relative_to(folder).as_posix()
            if f.is_file() and name not in (CONFIG_FILE, MODEL_CARD):
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        h.update(block)
                out[name] = h.hexdigest()
        return out

    da, db = digests(Path(a)), digests(Path(b))
    return len(da) if da and da == db else 0


def _load_unquantised(cfg: Config, adapter):
    import torch

    from finsent.modeling.load import load_model

    full = copy.deepcopy(cfg)
    full.model.load_in_4bit = (
        False  # merge into an unquantised base: rounding the sum to 4 bits loses accuracy
    )
    model, tokenizer, _ = load_model(full.model, str(adapter), dtype=torch.float32)
    return model, tokenizer


def merge_and_save(cfg: Config, adapter, folder, name, peft_model=None, tokenizer=None):
    """Add the LoRA delta to the float32 base, save the result (model, tokenizer, config naming `name`)
    into `folder`: the caller's staging folder, which takes the name `name` once the caller has checked
    parity and written the model card."""
    import torch

    from finsent.core.fsio import write_errors

    if peft_model is None:
        peft_model, tokenizer = _load_unquantised(cfg, adapter)
    merged = peft_model.merge_and_unload()
    target_dtype = getattr(torch, cfg.model.dtype) if cfg.model.dtype != "auto" else torch.float32
    with write_errors(name):  # a full disk names the folder the user asked for, not the staging one
        merged.to(target_dtype).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        save_config(self_contained(cfg, name), folder)
        calibration = Calibration.load(adapter)  # the adapter's temperature holds for its merged model
        if calibration:
            calibration.save(folder)
    return merged
