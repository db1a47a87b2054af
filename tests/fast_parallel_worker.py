"""Run by tests/test_ddp_fast.py under torchrun (2 CPU processes, gloo); not a test module itself.

    torchrun --standalone --nproc_per_node 2 tests/fast_parallel_worker.py MODEL_DIR OUT.json

finsent's fast loss (scoring.answer_loss) and evaluator (scoring.classify) run through each wrapper with
parallel.through_wrapper, as FinsentTrainer runs them, for a few AdamW steps; rank 0 also trains the
same model in one process without any wrapper on the whole global batch (the reference). Written to
OUT.json per wrapper: how far its LoRA weights, losses and eval probabilities are from the reference,
and how far the fast loss is from the model's standard loss on the same batch. "ddp-bypass" is the old
bug kept as a control: the fast loss called beside DDP's forward, so no gradient is all-reduced.
The "full-*" kinds (tests/test_fsdp_full_save.py, named in the third argument) train the whole model
(train.method=full) under FSDP and check the model folder saved as train.py saves it (full_save).

    torchrun --standalone --nproc_per_node 2 tests/fast_parallel_worker.py MODEL_DIR OUT.json full-fsdp1
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

TEXTS = [
    ("Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .", "positive"),
    ("The company said it would cut 120 jobs .", "negative"),
    ("The contract value amounts to about EUR 11 million .", "neutral"),
    ("Net sales rose sharply in 2007 .", "positive"),
    ("Net sales fell sharply .", "negative"),
    ("The company said it would report in 2007 .", "neutral"),
    ("Profit rose to EUR 8.7 mn .", "positive"),
    ("Operating loss widened to EUR 13.1 mn .", "negative"),
    ("The period amounts to 120 days .", "neutral"),
    ("The company value rose .", "positive"),
    ("Jobs fell .", "negative"),
    ("It said so .", "neutral"),
]
GLOBAL_BATCH, STEPS, EVAL_AFTER = 4, 3, 1
# fsdp2-unchecked last: it fails in a backward pass, after which no collective is safe
KINDS = ["ddp", "ddp-bypass", "fsdp1", "fsdp1-flat", "fsdp2", "fsdp2-unchecked"]


def build(model_dir: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finsent.core.options import Config
    from finsent.core.prompts import PromptCodec

    torch.manual_seed(0)  # the same LoRA initialisation in every process and in the reference
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    model.train()
    return model, PromptCodec.from_config(Config(), tok)


def collate(codec, pairs) -> dict:
    """Right-padded input_ids / attention_mask / labels (answer tokens only), as the trainer's batches."""
    seqs = [codec.train_ids(text, label) for text, label in pairs]
    width = max(len(ids) for ids, _ in seqs)
    ids_t = torch.full((len(seqs), width), codec.tokenizer.pad_token_id)
    mask = torch.zeros_like(ids_t)
    labels = torch.full_like(ids_t, -100)
    for i, (ids, n_prompt) in enumerate(seqs):
        ids_t[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": ids_t, "attention_mask": mask, "labels": labels}


def wrap(model, kind: str):
    if kind in ("ddp", "ddp-bypass"):
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    if kind.startswith("fsdp1"):
        from peft.utils.other import fsdp_auto_wrap_policy
        from torch.distributed.fsdp import FullyShardedDataParallel

        # what the Trainer builds for a PEFT model under FSDP1 (transformers' update_fsdp_plugin_peft):
        # a unit per decoder layer and one per LoRA module; fsdp1-flat is the FSDP + QLoRA recipe's
        # fsdp_use_orig_params: false
        return FullyShardedDataParallel(
            model,
            auto_wrap_policy=fsdp_auto_wrap_policy(model),
            use_orig_params=kind == "fsdp1",
            device_id=torch.device("cpu"),
        )
    if kind.startswith("fsdp2"):
        from torch.distributed.fsdp import fully_shard

        for layer in model.base_model.model.model.layers:
            fully_shard(layer)
        return fully_shard(model)
    raise ValueError(kind)


def saved_adapter(wrapper, model, reference: bool) -> dict[str, torch.Tensor]:
    """The LoRA weights as train.py saves them: gathered from the shards by every rank
    (parallel.gathered_state_dict), written by rank 0 with save_pretrained, read back; {} on other ranks."""
    import tempfile

    from safetensors.torch import load_file

    from finsent.training.parallel import gathered_state_dict, save_adapter

    state = None if reference else gathered_state_dict(wrapper)
    if not reference and dist.get_rank() != 0:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(model, tmp, state)  # what train.py runs
        return load_file(f"{tmp}/adapter_model.safetensors")


def inside(wrapper, kind: str | None, fn):
    """fn() as FinsentTrainer runs it: inside the wrapper's forward, or directly without a wrapper."""
    from finsent.training.parallel import through_wrapper

    return through_wrapper(wrapper, fn) if kind else fn()


def train(model_dir: str, kind: str | None) -> dict:
    """kind None: the reference, one process, no wrapper, the whole global batch per step."""
    from finsent.modeling.scoring import answer_loss, classify
    from finsent.training.parallel import check_fast_loss

    rank, world = (dist.get_rank(), dist.get_world_size()) if kind else (0, 1)
    model, codec = build(model_dir)
    wrapper = wrap(model, kind) if kind else model
    if kind == "fsdp2":
        check_fast_loss(wrapper)  # FinsentTrainer's check; fsdp2-unchecked shows what it prevents
    init = saved_adapter(wrapper, model, True) if kind is None else {}  # how far the reference moved
    opt = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=1e-2)
    per_rank = GLOBAL_BATCH // world
    losses, fast_vs_standard, probs = [], None, None
    for step in range(STEPS):
        rows = TEXTS[step * GLOBAL_BATCH : (step + 1) * GLOBAL_BATCH]
        mine = collate(codec, rows[rank * per_rank : (rank + 1) * per_rank])
        n_items = collate(codec, rows)["labels"].ne(-100).sum()  # the Trainer's global answer-token count
        if step == 0:
            with torch.no_grad():  # the fast loss against the model's own loss, same rows, same wrapper
                standard = wrapper(**mine).loss
                fast = inside(wrapper, kind, lambda b=mine: answer_loss(model, codec, b))
            fast_vs_standard = abs(float(fast) - float(standard))

        def loss_fn(batch=mine, n=n_items):
            return answer_loss(model, codec, batch, n) * world  # x world: as FinsentTrainer (DDP averages)

        loss = inside(wrapper, None if kind == "ddp-bypass" else kind, loss_fn)
        loss.backward()
        opt.step()
        opt.zero_grad()
        total = loss.detach() / world
        if kind:
            dist.all_reduce(total)
        losses.append(float(total))
        if step == EVAL_AFTER:  # an evaluation mid-training (FinsentTrainer._in_model), then training goes on
            texts = [t for t, _ in TEXTS]
            with torch.no_grad():
                _, probs = inside(wrapper, kind, lambda t=texts: classify(model, codec, t, 5))
            model.train()
    final = saved_adapter(wrapper, model, kind is None)
    moved = max((float((final[k] - init[k]).abs().max()) for k in init), default=None)
    return {
        "losses": losses,
        "fast_vs_standard": fast_vs_standard,
        "probs": probs,
        "lora": final,
        "moved": moved,
    }


def compare(got: dict, ref: dict) -> dict:
    diff = max(float((got["lora"][k] - ref["lora"][k]).abs().max()) for k in ref["lora"])
    return {
        "same_keys": sorted(got["lora"]) == sorted(ref["lora"]),
        "max_lora_diff": diff,
        "lora_allclose": all(
            torch.allclose(got["lora"][k], ref["lora"][k], atol=1e-5, rtol=1e-4) for k in ref["lora"]
        ),
        "losses": got["losses"],
        "ref_losses": ref["losses"],
        "max_prob_diff": max(abs(a - b) for p, q in zip(got["probs"], ref["probs"]) for a, b in zip(p, q)),
        "fast_vs_standard": got["fast_vs_standard"],
        "ref_fast_vs_standard": ref["fast_vs_standard"],
        "ref_moved": ref["moved"],
    }


def wrap_full(model, kind: str):
    """A whole model (no LoRA) sharded as accelerate shards one for train.method=full: a unit per decoder
    layer (fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP) inside the root's."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    if kind.startswith("fsdp1"):
        import functools

        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        return FullyShardedDataParallel(
            model,
            auto_wrap_policy=functools.partial(
                transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer}
            ),
            use_orig_params=kind == "fsdp1",
            device_id=torch.device("cpu"),
        )
    if kind == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        return fully_shard(model)
    raise ValueError(kind)


def full_steps(model, batches: list[list[dict]]) -> None:
    """STEPS AdamW steps of the model's own loss: each step's loss the mean of the per-rank batches' losses
    (what a wrapper's gradient averaging gives; a wrapper gets one batch per step, one process all)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step_batches in batches:
        loss = sum(model(**b).loss for b in step_batches) / len(step_batches)
        loss.backward()
        opt.step()
        opt.zero_grad()


def full_save(model_dir: str, kind: str) -> dict:
    """train.method=full under FSDP: a few AdamW steps of the whole model, then the model gathered from
    the shards by every rank and written by rank 0 as train.py writes it, read back with from_pretrained.
    Rank 0 compares the saved folder with the same steps run in one process without a wrapper (the
    reference): every weight present, non-empty and equal, and the same logits as the sharded model."""
    import tempfile

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from finsent.training.parallel import gathered_state_dict, save_model, unwrap

    rank, world = dist.get_rank(), dist.get_world_size()
    per_rank = GLOBAL_BATCH // world

    def fresh():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()

    model = fresh()
    codec = build(model_dir)[1]
    steps = [TEXTS[s * GLOBAL_BATCH : (s + 1) * GLOBAL_BATCH] for s in range(STEPS)]
    shares = [
        [collate(codec, rows[r * per_rank : (r + 1) * per_rank]) for r in range(world)] for rows in steps
    ]
    wrapper = wrap_full(model, kind)
    full_steps(wrapper, [[s[rank]] for s in shares])
    probe = collate(codec, TEXTS[:4])
    with torch.no_grad():  # the sharded model's logits, through its forward (a collective)
        logits = wrapper(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    state = gathered_state_dict(wrapper)  # every rank, as train.py
    if rank != 0:
        return {}
    reference = fresh()
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    full_steps(reference, shares)
    want = reference.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        save_model(unwrap(wrapper), tmp, state)  # what train.py runs
        files = {k: v for f in sorted(Path(tmp).glob("*.safetensors")) for k, v in load_file(f).items()}
        loaded, info = AutoModelForCausalLM.from_pretrained(
            tmp, dtype=torch.float32, output_loading_info=True
        )
    with torch.no_grad():
        loaded_logits = loaded.eval()(
            input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]
        ).logits
    got = loaded.state_dict()
    return {
        "missing_in_files": sorted(set(want) - set(files)),
        "empty_in_files": sorted(k for k, v in files.items() if v.numel() == 0),
        "missing_on_load": sorted(info["missing_keys"]),
        "max_weight_diff": max(float((got[k] - want[k]).abs().max()) for k in want),
        "moved": min(float((want[k] - initial[k]).abs().max()) for k in want),
        "max_logit_diff": float((loaded_logits - logits).abs().max()),
    }


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    kinds = sys.argv[3].split(",") if len(sys.argv) > 3 else KINDS
    lora = any(not k.startswith("full-") for k in kinds)  # the LoRA reference only where a LoRA kind runs
    ref = train(model_dir, None) if dist.get_rank() == 0 and lora else None
    results = {}
    for kind in kinds:
        print(f"rank {dist.get_rank()}: {kind}", file=sys.stderr, flush=True)
        try:
            if kind.startswith("full-"):
                got = full_save(model_dir, kind.removeprefix("full-"))
                if dist.get_rank() == 0:
                    results[kind] = got
            else:
                got = train(model_dir, kind)
                if ref is not None:
                    results[kind] = compare(got, ref)
        except Exception as e:  # noqa: BLE001 - reported to the test, which names it
            results[kind] = {"error": f"{type(e).__name__}: {e}"}
        if dist.get_rank() == 0:  # after every wrapper, so a slow run leaves what it found
            with open(out, "w") as f:
                json.dump(results, f, indent=1)
    dist.barrier()  # no rank tears down gloo while another still talks to it
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: a rank once aborted there ("terminate called without an
    # active exception": a native thread still joinable when its owner was destroyed), after every
    # result was written, and torchrun then failed the whole launch (1 in 8 runs).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
