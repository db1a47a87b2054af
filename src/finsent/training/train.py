"""LoRA fine-tuning with TRL's SFTTrainer and PEFT: the notebooks' recipe as one function.

    finsent train --config configs/smollm2-cpu.yaml --out runs/train
    finsent train --config configs/llama-3.2-1b-notebook.yaml --data fpb --dry-run      # no weights needed (training/dryrun.py)

Reads top to bottom: setup (options, data, model, LoRA), train, save. The loss is on the answer only
(label tokens + EOS), never on the prompt or padding. How finsent's options become PEFT's and TRL's
arguments is in training/args.py; the trainer (fast loss, classifying evaluation) in training/trainer.py.

Writes into train.output_dir: checkpoint-*/ (for --resume), adapter/ (the adapter, its tokenizer, config
and model card), train_log.json and the TensorBoard logs. With train.method=full every weight trains and
model/ holds the whole model instead of adapter/ (nothing to merge).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from finsent.core.artefacts import ADAPTER_DIR, MODEL_DIR, TRAIN_LOG
from finsent.core.config import save_config, self_contained
from finsent.core.errors import FinsentError
from finsent.core.options import Config


def train(cfg: Config, splits=None) -> Path:
    """Fine-tune, save the adapter to <output_dir>/adapter (train.method=full: the whole model to
    <output_dir>/model) with its config; return that folder."""
    import contextlib

    from finsent.core.lock import hold
    from finsent.training.checkpoints import saving

    # --- setup: the resolved options, data, model, LoRA
    owns_folder = int(os.environ.get("RANK", "0")) == 0  # under DDP, rank 0 checks, stamps and saves
    out = Path(cfg.train.output_dir)
    # one run at a time writes the folder: a second is refused at once (before torch is imported), in
    # one line (core/lock.py)
    with hold(out, "train") if owns_folder else contextlib.nullcontext():
        from transformers import set_seed

        cfg = resolved(cfg)  # (full_precision imports torch to pick the precision)
        set_seed(cfg.train.seed)
        splits, last = _prepare_run(cfg, splits, owns_folder)
        trainer, codec, tokenizer = build_trainer(cfg, splits)

        # --- train (from the last complete checkpoint of the same run with --resume); a full disk while
        # the trainer saves a checkpoint is one line, with the cut-off checkpoint removed (saving)
        if last:
            print(f"resuming from {last}", file=sys.stderr)
        with saving(out, owns_folder):
            result = _finished(trainer, last) or trainer.train(
                resume_from_checkpoint=str(last) if last else None
            )

        # --- save
        return _save(cfg, trainer, codec, tokenizer, splits, result, last)


def resolved(cfg: Config) -> Config:
    """The options as this run trains with them (and stamps them): validated for the world size, and
    with train.method=full the precision full_precision picks."""
    cfg = cfg.validate(world_size=int(os.environ.get("WORLD_SIZE", "1")))
    if cfg.train.method == "full":
        full_precision(cfg)
    return cfg


def _finished(trainer, last: Path | None):
    """Resuming from a checkpoint already at train.max_steps (a kill while the model was saved): its
    weights and state as they are. The Trainer would train one step more before it checks the count
    (transformers 5); a run by epochs ends its last epoch's loop at once and is left to it."""
    import json

    from transformers.trainer_utils import TrainOutput

    max_steps = trainer.args.max_steps
    # (FSDP and DeepSpeed load a checkpoint only once the model is wrapped: left to the Trainer there)
    if last is None or max_steps <= 0 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return None
    state = json.loads((Path(last) / "trainer_state.json").read_text())
    if state.get("global_step", 0) < max_steps:
        return None
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(last))  # the weights (or adapter), as train() would load them
    trainer.state = TrainerState.load_from_json(str(Path(last) / "trainer_state.json"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return TrainOutput(trainer.state.global_step, losses[-1] if losses else 0.0, {})


def _prepare_run(cfg: Config, splits, owns_folder: bool):
    """The output folder checked (never over another run), the splits, the config saved: (splits, the
    checkpoint to resume from or None)."""
    from finsent.data.splits import make_splits
    from finsent.training.args import check_options
    from finsent.training.checkpoints import guard, prepare

    tc, out = cfg.train, Path(cfg.train.output_dir)
    if owns_folder:
        guard(out, tc.resume, tc.overwrite)
    flaws = []
    if splits is None:  # (`finsent run` splits and reports the data itself)
        ds, splits = make_splits(cfg.data)
        flaws = [ds.split_line(), *ds.flaws()]
    check_options(cfg)  # before the folder is stamped and the model loads
    last = prepare(
        out, cfg, splits, tc.resume, tc.overwrite, owns_folder
    )  # refuses to train over another run
    if owns_folder:  # flaws after prepare, whose refusals stay one line
        for flaw in flaws:
            print(f"data: {flaw}", file=sys.stderr)
        save_config(cfg, out)
    return splits, last


def build_trainer(cfg: Config, splits):
    """The model (4-bit prepared for QLoRA), the tokenized splits and finsent's trainer:
    (trainer, codec, tokenizer)."""
    from datasets import Dataset

    from finsent.core.prompts import PromptCodec
    from finsent.modeling.device import launched_with_fsdp
    from finsent.modeling.load import load_model
    from finsent.training.args import lora_config, sft_config
    from finsent.training.trainer import FinsentTrainer, upcast_trainable

    tc = cfg.train
    model, tokenizer, device = load_model(cfg.model, trainable=True)
    if device == "cpu" and not tc.fast:
        from finsent.core.console import note

        # the defaults are the notebooks' GPU recipe; a newcomer on a laptop should know the CPU one
        note(
            "training with the notebooks' recipe on a CPU (no fast loss, micro-batch 1 x 8, gradient "
            "checkpointing); --config smollm2-cpu is the CPU recipe make demo runs, several times the "
            "samples/s (bench/train.py; docs/results.md)"
        )
    codec = PromptCodec.from_config(cfg, tokenizer)
    if cfg.model.load_in_4bit and not launched_with_fsdp():
        # (not under FSDP, whose flat parameters share one dtype: norms stay in the 4-bit storage dtype,
        # as TRL leaves a sharded QLoRA model)
        from peft import prepare_model_for_kbit_training

        # validate() has turned checkpointing off for the fast path, which needs the key/value cache
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=tc.gradient_checkpointing)
    train_ds = Dataset.from_list(tokenize_examples(codec, splits["train"], tc.max_seq_length))
    eval_ds = Dataset.from_list(tokenize_examples(codec, splits["eval"], tc.max_seq_length))
    args = sft_config(cfg, device.startswith("cuda"), len(eval_ds))
    trainer = FinsentTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if len(eval_ds) else None,
        processing_class=tokenizer,
        peft_config=None if tc.method == "full" else lora_config(cfg, model),
        codec=codec,
        fast=tc.fast,
        eval_examples=splits["eval"],
        loss=tc.loss,
        class_weights=class_weights(cfg, splits["train"]),
        label_smoothing=tc.label_smoothing,
    )
    if args.fp16:
        upcast_trainable(trainer.model)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    print(f"trainable parameters: {trainable:,d} of {total:,d} ({trainable / total:.2%})", file=sys.stderr)
    return trainer, codec, tokenizer


def _save(cfg: Config, trainer, codec, tokenizer, splits, result, last) -> Path:
    """Adapter (or model) + tokenizer + config + calibration + model card + training log, written by the
    first process only; every process takes part in gathering a sharded state."""
    import torch

    from finsent.core.fsio import atomic_dir, write_json
    from finsent.modeling.card import write_model_card
    from finsent.training.parallel import gathered_state_dict, save_adapter, save_model, unwrap

    out, full = Path(cfg.train.output_dir), cfg.train.method == "full"
    # --- save: adapter + tokenizer + config + model card + training log (by the first process only)
    adapter = out / (MODEL_DIR if full else ADAPTER_DIR)
    # FSDP / ZeRO-3: every rank gathers every weight, rank 0 saves the adapter's (or with method=full all)
    state = gathered_state_dict(trainer.model_wrapped)
    # the eval split's probabilities for the temperature, by every process (FSDP gathers weights in its forward)
    eval_probs = trainer.eval_probabilities()
    if trainer.is_world_process_zero():
        history = trainer.state.log_history
        evals = [h for h in history if "eval_accuracy" in h]
        calibration = calibrate(eval_probs, codec, splits)
        # a kill while saving leaves no half-written adapter; a full disk, one line saying how to go on
        resume = "free some space, then rerun with --resume (it goes on from the last checkpoint)"
        with atomic_dir(adapter, advice=resume) as tmp:
            if full:  # a plain transformers model; a gathered state (FSDP, ZeRO-3) is written as is
                save_model(unwrap(trainer.model), tmp, state)
            else:
                save_adapter(unwrap(trainer.model), tmp, state)
            tokenizer.save_pretrained(tmp)
            save_config(self_contained(cfg, adapter) if full else cfg, tmp)
            if calibration:
                calibration.save(tmp)
            # the card too, so the folder takes its name complete; its code samples name the final folder
            write_model_card(
                tmp,
                cfg,
                "full" if full else "adapter",
                extra={
                    "final eval-split accuracy": f"{evals[-1]['eval_accuracy']:.3f}"
                    if evals
                    else "not evaluated",
                    "optimizer steps": trainer.state.global_step,
                },
                name=adapter,
            )
        write_json(
            out / TRAIN_LOG,
            {
                "train_runtime": result.metrics.get("train_runtime"),
                "train_samples_per_second": result.metrics.get("train_samples_per_second"),
                "train_loss": result.metrics.get("train_loss"),
                "global_step": trainer.state.global_step,
                "resumed_from": Path(last).name if last else None,
                "log_history": history,
            },
        )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return adapter


def full_precision(cfg: Config) -> None:
    """train.method=full with model.dtype auto: float32 weights, and bf16 (fp16) autocast where auto
    would have loaded bf16 (fp16) weights. AdamW's steps at a full fine-tune's learning rate (5e-5) are
    below bf16's resolution for most weights, so bf16 weights would mostly not move. Saved in the run's
    config, so the model folder says float32 and a resumed run compares equal."""
    import torch

    from finsent.modeling.device import pick_device, pick_dtype

    if cfg.model.dtype != "auto":
        return  # the user's choice stands
    picked = pick_dtype("auto", pick_device(cfg.model.device), training=True)
    cfg.model.dtype = "float32"
    if picked == torch.bfloat16:
        cfg.train.bf16 = True
    elif picked == torch.float16:
        cfg.train.fp16 = True


def calibrate(probs, codec, splits):
    """Temperature scaling fitted on the eval split's probabilities (modeling/calibration.py), with the training
    label shares for prior correction; None without an eval split."""
    from collections import Counter

    from finsent.modeling.calibration import fit

    if probs is None:
        return None
    cal = fit(
        probs,
        [e.label for e in splits["eval"]],
        codec.labels,
        Counter(e.label for e in splits["train"]),
        "eval split",
    )
    print(
        f"calibration: temperature {cal.temperature:.3f} on the {cal.fitted_on}; "
        f"ECE {cal.ece_before:.3f} -> {cal.ece_after:.3f}",
        file=sys.stderr,
    )
    return cal


def class_weights(cfg: Config, train_examples) -> list[float] | None:
    """train.class_weights resolved against the training split's label counts (printed when used)."""
    from collections import Counter

    from finsent.core.options import class_weight_list

    counts = Counter(ex.label for ex in train_examples)
    weights = class_weight_list(cfg.train.class_weights, cfg.data.labels, counts)
    if weights:
        shown = ", ".join(f"{lab} {w:.3g} ({counts.get(lab, 0)})" for lab, w in zip(cfg.data.labels, weights))
        print(f"class weights (training rows): {shown}", file=sys.stderr)
    return weights


def tokenize_examples(codec, examples, max_len: int) -> list[dict]:
    """input_ids = prompt + answer + EOS; completion_mask marks the answer. Too long is an error:
    truncation would cut off the label, the only tokens that train."""
    rows = []
    for ex in examples:
        ids, n_prompt = codec.train_ids(ex.text, ex.label)
        if len(ids) > max_len:
            raise FinsentError(
                f"source row {ex.source_row}: {len(ids)} tokens exceed train.max_seq_length={max_len}; "
                "truncating would cut off the label (raise max_seq_length)"
            )
        rows.append({"input_ids": ids, "completion_mask": [0] * n_prompt + [1] * (len(ids) - n_prompt)})
    return rows


def training_history(output_dir: str | Path) -> list[dict]:
    """The logged loss and eval-accuracy points of a finished training run in `output_dir` ([] if none)."""
    path = Path(output_dir) / TRAIN_LOG
    if not path.is_file():
        return []
    return [h for h in json.loads(path.read_text())["log_history"] if "loss" in h or "eval_accuracy" in h]
