"""The classification-head mode, measured before it is offered: LoRA on AutoModelForSequenceClassification.

    python -m experiments.seqcls [--epochs 2] [--lr 5e-4] [--name seqcls]

Same model, prompt, split and hyper-parameters as the demo config (configs/smollm2-cpu.yaml: LoRA r=64,
alpha 16, all-linear, batch 16, AdamW lr 5e-4, cosine, warm-up 3%, clipping 0.3, 2 epochs), but the
label comes from a new linear `score` head on the last prompt token (PEFT task_type SEQ_CLS, the head in
modules_to_save) trained with cross-entropy, instead of from the language-model head's label tokens.
The prompt's shared instruction prefix runs once per batch, as in finsent's own training. Evaluated in
float32 on the eval split (the one that chooses); the result is one line of
experiments/results/ablation.jsonl beside experiments/ablate.py's runs, so the README's table holds it too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

from bench.common import DATA, ROOT
from experiments.ablate import RECORD


def last_hidden(model, codec, texts, prefix_kv=None):
    """Decoder hidden state at each prompt's last token, through the shared-prefix layout of scoring.py."""
    import torch
    from transformers import DynamicCache

    from finsent.modeling.scoring import Row, cache_argument, layout, prefix_states

    decoder = model.get_decoder()
    prompts = [codec.split(t) for t in texts]
    rows = [Row(body, [], n) for n, body in prompts]
    kv = prefix_kv if prefix_kv is not None else prefix_states(model, codec.prefix_ids)
    cache = DynamicCache(
        [(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in kv], model.config
    )
    device = model.get_input_embeddings().weight.device
    ids, pos, mask = layout(rows, len(codec.prefix_ids), codec.tokenizer.pad_token_id, device)
    hidden = decoder(
        input_ids=ids,
        position_ids=pos,
        attention_mask=mask,
        use_cache=True,
        **{cache_argument(decoder): cache},
    ).last_hidden_state
    last = torch.tensor([len(r.body) - 1 for r in rows], device=device)
    return hidden[torch.arange(len(rows), device=device), last]


def main() -> int:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, get_cosine_schedule_with_warmup, set_seed

    from finsent.core.config import resolve
    from finsent.core.prompts import PromptCodec
    from finsent.data.splits import make_splits
    from finsent.evaluation.metrics import classification_metrics
    from finsent.modeling.device import cpu_name, pick_dtype
    from finsent.modeling.load import load_tokenizer, resolve_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--name", default="seqcls")
    ap.add_argument("--smoke", action="store_true", help="2 steps, 16 eval sentences, nothing recorded")
    a = ap.parse_args()
    load_before = os.getloadavg()[0]

    cfg = resolve(str(ROOT / "configs" / "smollm2-cpu.yaml"), {"data.data": a.data}, None)
    tc, labels = cfg.train, cfg.data.labels
    set_seed(tc.seed)
    _, splits = make_splits(cfg.data)
    path = resolve_model(cfg.model.model)
    dtype = pick_dtype(cfg.model.dtype, "cpu")
    tokenizer = load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels), dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    codec = PromptCodec.from_config(cfg, tokenizer)
    lc = cfg.lora
    model = get_peft_model(
        model,
        LoraConfig(
            r=lc.r,
            lora_alpha=lc.lora_alpha,
            lora_dropout=lc.lora_dropout,
            task_type="SEQ_CLS",
            target_modules="all-linear",
        ),
    )
    model.print_trainable_parameters()
    head = model.base_model.model.score  # PEFT's trainable copy of the new head (modules_to_save)

    train = splits["train"]
    steps_per_epoch = math.ceil(len(train) / tc.per_device_train_batch_size)
    total = 2 if a.smoke else math.ceil(steps_per_epoch * a.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=tc.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(tc.warmup_ratio * total), total)
    rng = random.Random(tc.seed)
    model.train()
    t0, step = time.perf_counter(), 0
    while step < total:
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), tc.per_device_train_batch_size):
            if step >= total:
                break
            batch = [train[j] for j in order[i : i + tc.per_device_train_batch_size]]
            h = last_hidden(model, codec, [e.text for e in batch])
            logits = head(h).float()
            gold = torch.tensor([labels.index(e.label) for e in batch])
            loss = torch.nn.functional.cross_entropy(logits, gold)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 5 == 0 or step == 1:
                print(
                    f"step {step}/{total} loss {loss.item():.4f} {time.perf_counter() - t0:.0f} s", flush=True
                )
    train_seconds = time.perf_counter() - t0

    model.float().eval()
    preds = []
    with torch.inference_mode():
        from finsent.modeling.scoring import prefix_states

        kv = prefix_states(model, codec.prefix_ids)
        ev = splits["eval"][: 16 if a.smoke else None]
        for i in range(0, len(ev), 32):
            logits = head(last_hidden(model, codec, [e.text for e in ev[i : i + 32]], kv))
            preds += [labels[j] for j in logits.argmax(-1).tolist()]
    m = classification_metrics([e.label for e in ev], preds, labels)
    print(f"eval accuracy {m['accuracy']:.3f} macro F1 {m['macro_f1']:.3f}; trained {train_seconds:.0f} s")
    record = {
        "name": a.name,
        "what": f"classification head (SEQ_CLS LoRA + score head), {a.epochs:g} epochs, lr {a.lr:g}",
        "overrides": ["experiments/seqcls.py", "--epochs", str(a.epochs), "--lr", str(a.lr)],
        "eval": {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")},
        "train_seconds": round(train_seconds, 1),
        "cpu": cpu_name(),
        "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
        "load_before": round(load_before, 2),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if a.smoke:
        return 0
    with open(RECORD, "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
