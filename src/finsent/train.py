"""LoRA fine-tuning with TRL's SFTTrainer and PEFT: the notebooks' recipe as one function.

    finsent train --config configs/smollm2-cpu.yaml --out runs/train
    finsent train --config configs/llama-3.2-1b-notebook.yaml --dry-run      # no weights needed

Reads top to bottom: setup (data, model, LoRA), the trainer's arguments, train, save. The loss is on
the answer only (label tokens + EOS), never on the prompt or padding. With `train.fast` the loss is
computed by the evaluator's own forward (scoring.token_logprobs): the shared instruction prefix runs once
per micro-batch, logits only where an answer token is predicted, batches grouped by length.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from finsent.config import Config, save_config
from finsent.errors import FinsentError

ADAPTER_DIRNAME = "adapter"


def lora_config(cfg: Config, model):
    """PEFT's LoraConfig for `model` (which spells out 'all-linear' when the layers are restricted:
    PEFT accepts layers_to_transform only with a list of module names)."""
    from peft import LoraConfig

    lc = cfg.lora
    layers = parse_layers(lc.layers_to_transform)
    if lc.target_modules != "all-linear":
        targets = [t.strip() for t in lc.target_modules.split(",") if t.strip()]
    elif layers is not None:
        targets = linear_module_names(model)
    else:
        targets = lc.target_modules
    return LoraConfig(
        r=lc.r,
        lora_alpha=lc.lora_alpha,
        lora_dropout=lc.lora_dropout,
        bias=lc.bias,
        task_type=lc.task_type,
        target_modules=targets,
        layers_to_transform=layers,
    )


def linear_module_names(model) -> list[str]:
    """What PEFT's 'all-linear' means: the names of every linear layer but the output head."""
    import torch

    head = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head
        }
    )


def parse_layers(spec: str) -> list[int] | None:
    """'all' -> None (every layer); '15-29' or '0,2,4-6' -> sorted layer indices."""
    if spec.strip() == "all":
        return None
    layers: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            first, last = 0, -1
        if first < 0 or last < first:
            raise FinsentError(
                f"lora.layers_to_transform: {part.strip()!r} is not a layer index or range (e.g. '15-29')"
            )
        layers.update(range(first, last + 1))
    return sorted(layers)


def sft_config(cfg: Config, on_cuda: bool, n_eval: int):
    """Map the notebooks' TrainingArguments onto today's SFTConfig (transformers 5, TRL 1.x).

    Renamed or dropped upstream, mapped here rather than lost: evaluation_strategy -> eval_strategy,
    warmup_ratio -> warmup_steps (a float below 1 is a ratio), group_by_length ->
    train_sampling_strategy="group_by_length", max_seq_length -> max_length (we never truncate: see
    tokenize_examples). CUDA-only choices are swapped for their CPU equivalents, with a note.
    """
    from trl import SFTConfig

    tc = cfg.train
    optim, fp16, bf16 = tc.optim, tc.fp16, tc.bf16
    if not on_cuda:
        if optim.startswith("paged_") or "8bit" in optim:
            note(f"optim {optim} needs CUDA + bitsandbytes; using adamw_torch on CPU")
            optim = "adamw_torch"
        if fp16:
            note("fp16 mixed precision needs CUDA; training in the model's dtype on CPU")
            fp16 = False
    save = (
        {"save_strategy": "steps", "save_steps": tc.save_steps}
        if tc.save_steps
        else {"save_strategy": "epoch"}
    )
    evaluation = tc.evaluation_strategy if n_eval else "no"
    return SFTConfig(
        output_dir=tc.output_dir,
        num_train_epochs=tc.num_train_epochs,
        per_device_train_batch_size=tc.per_device_train_batch_size,
        per_device_eval_batch_size=tc.eval_batch_size,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        optim=optim,
        logging_steps=tc.logging_steps,
        logging_first_step=True,
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        fp16=fp16,
        bf16=bf16,
        max_grad_norm=tc.max_grad_norm,
        max_steps=tc.max_steps,
        warmup_steps=tc.warmup_ratio,
        train_sampling_strategy="group_by_length"
        if tc.group_by_length
        else "random"
        if tc.shuffle
        else "sequential",
        lr_scheduler_type=tc.lr_scheduler_type,
        report_to=[] if tc.report_to in ("none", "") else [tc.report_to],
        eval_strategy=evaluation,
        eval_steps=tc.eval_steps or None,
        gradient_checkpointing=tc.gradient_checkpointing and not tc.fast,
        max_length=tc.max_seq_length,
        packing=tc.packing,
        completion_only_loss=True,
        seed=tc.seed,
        data_seed=tc.seed,
        use_cpu=not on_cuda,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        save_only_model=False,
        disable_tqdm=False,
        **save,
    )


def note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


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


def make_trainer_class():
    """SFTTrainer with finsent's fast loss and evaluation; built lazily so importing this module stays light."""
    from trl import SFTTrainer

    class FinsentTrainer(SFTTrainer):
        def __init__(self, *args, codec=None, fast=False, eval_examples=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.codec, self.fast, self.eval_examples = codec, fast, eval_examples or []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not (self.fast and model.training):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = answer_loss(model, self.codec, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            """Classification accuracy on the eval split with the fast evaluator (not generation, and
            not the token-level loss over full-vocabulary logits that the stock loop computes)."""
            from finsent.metrics import classification_metrics
            from finsent.scoring import classify

            exs = self.eval_examples
            preds, _ = classify(
                self.model, self.codec, [e.text for e in exs], self.args.per_device_eval_batch_size
            )
            m = classification_metrics([e.label for e in exs], preds, self.codec.labels)
            metrics = {
                f"{metric_key_prefix}_accuracy": m["accuracy"],
                f"{metric_key_prefix}_macro_f1": m["macro_f1"],
            }
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            print(f"\neval accuracy {m['accuracy']:.3f} at step {self.state.global_step}", file=sys.stderr)
            return metrics

    return FinsentTrainer


def upcast_trainable(model) -> int:
    """Trainable bf16 weights to float32; returns how many. TRL 1.x stores a 4-bit model's LoRA weights
    in bf16, and fp16 mixed precision's gradient scaler cannot unscale bf16 gradients (found on an H100
    with the notebooks' QLoRA + fp16 recipe), so that recipe keeps its LoRA weights in float32."""
    import torch

    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.float()
            n += 1
    return n


def answer_loss(model, codec, inputs, num_items_in_batch=None):
    """Mean NLL of the answer tokens, through the shared-prefix forward (same tokens as the scorer)."""
    from finsent.scoring import Row, token_logprobs

    n_prefix = len(codec.prefix_ids)
    rows, targets = [], []
    for ids, mask, labels in zip(
        inputs["input_ids"].tolist(), inputs["attention_mask"].tolist(), inputs["labels"].tolist()
    ):
        n = sum(mask)
        seq, lab = ids[:n], labels[:n]
        body = seq[n_prefix:]
        rows.append(Row(body[:-1], []))  # the last token (EOS) predicts nothing we train on
        targets.append([(p - n_prefix - 1, seq[p]) for p in range(n_prefix + 1, n) if lab[p] != -100])
    logp = token_logprobs(model, codec.prefix_ids, rows, targets, codec.tokenizer.pad_token_id)
    denom = num_items_in_batch if num_items_in_batch is not None else logp.numel()
    return -logp.sum() / denom


def train(cfg: Config, splits=None) -> Path:
    """Fine-tune, save the adapter to <output_dir>/adapter with its config; return that folder."""
    import torch
    from datasets import Dataset
    from transformers import set_seed

    from finsent.data import make_splits
    from finsent.evaluate import make_codec
    from finsent.fsio import write_json
    from finsent.model_card import write_model_card
    from finsent.models import load_model

    tc = cfg.train
    out = Path(tc.output_dir)
    set_seed(tc.seed)

    # --- setup: data, model, LoRA
    if splits is None:
        _, splits = make_splits(cfg.data)
    model, tokenizer, device = load_model(cfg.model, trainable=True)
    codec = make_codec(cfg, tokenizer)
    import os

    if tc.fast and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # DDP synchronises gradients inside its own forward; the fast loss calls the decoder directly
        note(
            "train.fast is single-process; under DDP the standard SFTTrainer loss (answer tokens only) is used"
        )
        tc.fast = False
    if tc.fast and tc.packing:
        raise FinsentError("train.fast and train.packing exclude each other (fast shares the prompt prefix)")
    if tc.fast and tc.gradient_checkpointing:
        note("train.fast keeps activations instead of gradient checkpointing (more memory, less compute)")
    if cfg.model.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # (the fast path needs the key/value cache, which gradient checkpointing turns off)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=tc.gradient_checkpointing and not tc.fast
        )
    train_ds = Dataset.from_list(tokenize_examples(codec, splits["train"], tc.max_seq_length))
    eval_ds = Dataset.from_list(tokenize_examples(codec, splits["eval"], tc.max_seq_length))

    # --- the trainer
    args = sft_config(cfg, device.startswith("cuda"), len(eval_ds))
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if len(eval_ds) else None,
        processing_class=tokenizer,
        peft_config=lora_config(cfg, model),
        codec=codec,
        fast=tc.fast,
        eval_examples=splits["eval"],
    )
    if args.fp16:
        upcast_trainable(trainer.model)
    trainer.model.print_trainable_parameters()
    save_config(cfg, out)

    # --- train (from the last checkpoint with --resume)
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(out)) if tc.resume and out.is_dir() else None
    if tc.resume and not last:
        note(f"--resume: no checkpoint in {out}; starting from scratch")
    elif last:
        print(f"resuming from {last}", file=sys.stderr)
    result = trainer.train(resume_from_checkpoint=last)

    # --- save: adapter + tokenizer + config + training log
    adapter = out / ADAPTER_DIRNAME
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        save_config(cfg, adapter)
        history = trainer.state.log_history
        evals = [h for h in history if "eval_accuracy" in h]
        write_model_card(
            adapter,
            cfg,
            "adapter",
            extra={
                "final eval-split accuracy": f"{evals[-1]['eval_accuracy']:.3f}"
                if evals
                else "not evaluated",
                "optimizer steps": trainer.state.global_step,
            },
        )
        write_json(
            out / "train_log.json",
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


def dry_run(cfg: Config) -> dict:
    """Resolve everything without weights: the architecture on the meta device, LoRA attached."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model_cfg = _architecture(cfg.model.model, cfg.model.cache_dir)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(model_cfg)
    total = sum(p.numel() for p in base.parameters())
    peft_model = get_peft_model(base, lora_config(cfg, base))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    tc = cfg.train
    n_train = _train_size(cfg)
    per_step = tc.per_device_train_batch_size * tc.gradient_accumulation_steps
    steps = (
        tc.max_steps if tc.max_steps > 0 else math.ceil(n_train / per_step) * math.ceil(tc.num_train_epochs)
    )
    bytes_per = (
        0.5 if cfg.model.load_in_4bit else (2 if cfg.model.dtype in ("auto", "bfloat16", "float16") else 4)
    )
    base_gb = total * bytes_per / 1e9
    # LoRA weights in fp32 + their grads + two AdamW moments
    lora_gb = trainable * 4 * 4 / 1e9
    seq = 128  # a PhraseBank prompt is under 128 tokens
    layers, hidden = model_cfg.num_hidden_layers, model_cfg.hidden_size
    act_gb = (
        tc.per_device_train_batch_size
        * seq
        * hidden
        * layers
        * (2 if tc.gradient_checkpointing else 34)
        * 2
        / 1e9
    )
    return {
        "model": cfg.model.model,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "trainable_percent": 100 * trainable / total,
        "train_examples": n_train,
        "optimizer_steps": steps,
        "memory_estimate_gb": {
            "weights": round(base_gb, 2),
            "lora_and_optimizer": round(lora_gb, 2),
            "activations": round(act_gb, 2),
            "total": round(base_gb + lora_gb + act_gb, 2),
        },
    }


def _train_size(cfg: Config) -> int:
    dc = cfg.data
    if dc.split == "seed":
        return dc.train_per_label * len(dc.labels)
    from finsent.data import make_splits

    return len(make_splits(dc)[1]["train"])


# Architectures of the notebooks' models, so --dry-run works offline without their weights.
KNOWN_ARCHITECTURES = {
    "meta-llama/Llama-3.2-1B": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        rope_theta=500000.0,
    ),
    "meta-llama/Llama-2-7b-hf": dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        tie_word_embeddings=False,
    ),
}
KNOWN_ARCHITECTURES["NousResearch/Llama-2-7b-hf"] = KNOWN_ARCHITECTURES["meta-llama/Llama-2-7b-hf"]


def _architecture(spec: str, cache_dir: str):
    """The model's config: from the HF cache or local folder, else (offline) the known architecture."""
    from transformers import AutoConfig, LlamaConfig

    from finsent.models import resolve_model

    if spec in KNOWN_ARCHITECTURES:
        try:
            return AutoConfig.from_pretrained(spec, local_files_only=True)
        except OSError:
            return LlamaConfig(**KNOWN_ARCHITECTURES[spec])
    return AutoConfig.from_pretrained(resolve_model(spec, cache_dir))
