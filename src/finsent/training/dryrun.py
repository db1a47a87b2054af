"""`finsent train --dry-run`: parameters, optimizer steps and per-device memory, without any weights.

    finsent train --config configs/llama-3.2-1b-notebook.yaml --data fpb --dry-run
    finsent train --config configs/llama-2-7b-notebook.yaml --dry-run --num-processes 8 --strategy fsdp
    finsent train --config configs/llama-2-7b-notebook.yaml --dry-run --accelerate-config configs/accelerate/fsdp.yaml

The architecture is built on the meta device (from the HF cache, a local folder, or, offline, the known
architectures below) and LoRA attached as training would attach it. With several processes the memory
is per device: DDP replicates everything on every device; FSDP (FULL_SHARD) and DeepSpeed ZeRO-3 shard
the weights, the LoRA gradients and the optimizer state over the processes, and gather one decoder layer
at a time (two with prefetching) to compute; SHARD_GRAD_OP / ZeRO-2 shard only gradients and optimizer
state. Activations are never sharded: they follow the per-device batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.options import Config
from finsent.core.registry import KNOWN_ARCHITECTURES
from finsent.training.args import check_options, lora_config

STRATEGIES = ("ddp", "fsdp", "zero3")
# what each strategy shards: (weights, gradients + optimizer state)
_SHARDS = {"ddp": (False, False), "fsdp": (True, True), "zero3": (True, True), "shard-grad-op": (False, True)}


@dataclass
class Parallelism:
    """How training is spread: processes (devices) in all, and what is sharded over them."""

    processes: int = 1
    strategy: str = "ddp"  # ddp | fsdp | zero3 | shard-grad-op (FSDP SHARD_GRAD_OP, ZeRO-2)
    offload_params: bool = False  # sharded weights wait in CPU RAM (FSDP offload, ZeRO-3 offload_param)
    source: str = "flags"

    @property
    def label(self) -> str:
        names = {"ddp": "DDP (replicated)", "fsdp": "FSDP (FULL_SHARD)", "zero3": "DeepSpeed ZeRO-3"}
        name = names.get(self.strategy, "sharded gradients + optimizer (FSDP SHARD_GRAD_OP / ZeRO-2)")
        if self.processes == 1:
            name = "one process"
        return f"{name}{', weights offloaded to CPU' if self.offload_params else ''}"


def parallelism(
    num_processes: int | None = None, strategy: str | None = None, accelerate_config: str | None = None
) -> Parallelism:
    """--num-processes / --strategy, or an accelerate config file (its num_processes and sharding;
    the flags, when given, override it)."""
    par = from_accelerate_config(accelerate_config) if accelerate_config else Parallelism()
    if num_processes is not None:
        if num_processes < 1:
            raise FinsentError(f"--num-processes: {num_processes} (must be at least 1)")
        par.processes = num_processes
    if strategy is not None:
        if strategy not in STRATEGIES:
            raise FinsentError(f"--strategy: {strategy!r} (choose from {', '.join(STRATEGIES)})")
        par.strategy = strategy
    return par


def from_accelerate_config(path: str) -> Parallelism:
    """Read an `accelerate launch --config_file` YAML with accelerate's own config class (which refuses
    unknown keys): the total process count and what FSDP / DeepSpeed shard."""
    from accelerate.commands.config.config_args import ClusterConfig

    if not Path(path).is_file():
        raise FinsentError(f"--accelerate-config {path}: no such file")
    try:
        cc = ClusterConfig.from_yaml_file(path)
    except (ValueError, TypeError, AttributeError) as e:
        raise FinsentError(f"--accelerate-config {path}: {str(e).splitlines()[0]}") from None
    kind = str(getattr(cc.distributed_type, "value", cc.distributed_type))
    par = Parallelism(processes=max(1, int(cc.num_processes or 1)), source=path)
    if kind == "FSDP":
        fc = cc.fsdp_config or {}
        version = int(fc.get("fsdp_version", 1))
        if version == 2:
            reshard = str(fc.get("fsdp_reshard_after_forward", True)).lower() in ("true", "1", "full_shard")
            par.strategy = "fsdp" if reshard else "shard-grad-op"
        else:
            sharding = str(fc.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
            par.strategy = {"SHARD_GRAD_OP": "shard-grad-op", "NO_SHARD": "ddp"}.get(sharding, "fsdp")
        par.offload_params = str(fc.get("fsdp_offload_params", False)).lower() == "true"
    elif kind == "DEEPSPEED":
        dc = cc.deepspeed_config or {}
        stage = int(dc.get("zero_stage", 2))
        par.strategy = "zero3" if stage == 3 else "shard-grad-op" if stage >= 1 else "ddp"
        par.offload_params = stage == 3 and str(dc.get("offload_param_device", "none")).lower() == "cpu"
    elif kind in ("NO", "MULTI_GPU", "MULTI_CPU", "MULTI_XPU", "MULTI_NPU"):
        par.strategy = "ddp"
    else:
        raise FinsentError(
            f"--accelerate-config {path}: distributed_type {kind} is not one finsent estimates"
        )
    return par


def dry_run(cfg: Config, par: Parallelism | None = None) -> dict:
    """Resolve everything without weights: the architecture on the meta device, LoRA attached; memory
    per device for `par` (one process if None)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    par = par or Parallelism()
    cfg = cfg.validate(par.processes)  # what a real run would refuse, the dry run refuses too
    check_options(cfg, dry_run=True)
    model_cfg = _architecture(cfg.model.model, cfg.model.cache_dir)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(model_cfg)
    total = sum(p.numel() for p in base.parameters())
    layers_mod = base.get_decoder().layers
    # 4-bit QLoRA quantises the decoder's linear layers only; embeddings, head and norms keep the dtype
    in_linear = sum(m.weight.numel() for m in layers_mod.modules() if isinstance(m, torch.nn.Linear))
    per_layer = sum(p.numel() for p in layers_mod[0].parameters())
    tc = cfg.train
    full = tc.method == "full"
    if full:
        trainable = total
    else:
        try:
            peft_model = get_peft_model(base, lora_config(cfg, base))
        except ValueError as e:  # PEFT's words for modules or layers this model does not have
            raise FinsentError(f"lora: {str(e).splitlines()[0][:300]}") from None
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    n_train = _train_size(cfg)
    per_step = tc.per_device_train_batch_size * tc.gradient_accumulation_steps * par.processes
    # as the Trainer counts: whole update steps an epoch, times a possibly fractional epoch count
    steps = (
        tc.max_steps if tc.max_steps > 0 else math.ceil(tc.num_train_epochs * math.ceil(n_train / per_step))
    )
    dense = 2 if cfg.model.dtype in ("bfloat16", "float16") or cfg.model.dtype == "auto" and not full else 4
    # (train.method=full with dtype auto keeps float32 weights: train.full_precision)
    # NF4 packs two weights a byte; double quantisation adds ~0.127 bits of constants a weight
    quant = 0.5 + 0.127 / 8
    if cfg.model.load_in_4bit:
        base_gb = (in_linear * quant + (total - in_linear) * dense) / 1e9
        layer_gb = per_layer * quant / 1e9
    else:
        base_gb, layer_gb = total * dense / 1e9, per_layer * dense / 1e9
    # LoRA weights in fp32 + their grads + two AdamW moments; full: the weights are counted above, so
    # float32 gradients + two moments
    lora_gb = trainable * (3 if full else 4) * 4 / 1e9
    seq = 128  # a PhraseBank prompt is under 128 tokens
    layers, hidden = model_cfg.num_hidden_layers, model_cfg.hidden_size
    # Activations kept for the backward pass, per token and layer. Korthikanti et al. 2022 ("Reducing
    # Activation Recomputation in Large Transformer Models") count 34 x hidden bytes for a layer in 16-bit
    # (attention scores left out: fused attention keeps none); with gradient checkpointing only the layer's
    # input is kept, 2 x hidden bytes. The final x 2 is for float32 activations (CPU training), so on a GPU
    # in 16-bit the estimate errs high.
    bytes_per_token_layer = 2 if tc.gradient_checkpointing else 34
    act_gb = tc.per_device_train_batch_size * seq * hidden * layers * bytes_per_token_layer * 2 / 1e9
    n = par.processes
    shard_weights, shard_state = _SHARDS[par.strategy] if n > 1 else (False, False)
    weights_dev = base_gb
    if shard_weights:
        # one's shard (none with offloading: it waits in CPU RAM) + two gathered layers (the one computing
        # and the one prefetched)
        weights_dev = (0 if par.offload_params else base_gb / n) + 2 * layer_gb
    lora_dev = lora_gb / n if shard_state else lora_gb
    device_total = weights_dev + lora_dev + act_gb
    return {
        "model": cfg.model.model,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "trainable_percent": 100 * trainable / total,
        "method": tc.method,
        "train_examples": n_train,
        "optimizer_steps": steps,
        "processes": n,
        "strategy": par.strategy,
        "parallelism": par.label,
        "parallelism_source": par.source,
        "memory_estimate_gb": {  # per device
            "weights": round(weights_dev, 2),
            "lora_and_optimizer": round(lora_dev, 2),
            "activations": round(act_gb, 2),
            "total": round(device_total, 2),
            "weights_whole_model": round(base_gb, 2),
            "cpu_ram_per_process": round(base_gb / n, 2) if shard_weights and par.offload_params else 0.0,
        },
    }


def report(cfg: Config, info: dict) -> str:
    """The dry run as `finsent train --dry-run` prints it."""
    mem, tc, n = info["memory_estimate_gb"], cfg.train, info["processes"]
    shard = (
        f"1/{n} of {mem['weights_whole_model']} + 2 gathered layers"
        if info["strategy"] in ("fsdp", "zero3") and n > 1
        else "whole"
    )
    if mem["cpu_ram_per_process"]:
        shard = f"2 gathered layers; {mem['cpu_ram_per_process']} GB a process in CPU RAM"
    state = f"1/{n}" if info["strategy"] != "ddp" and n > 1 else "whole"
    lines = [
        f"model            {info['model']}",
        f"parameters       {info['total_parameters']:,} total, {info['trainable_parameters']:,} trainable "
        f"({info['trainable_percent']:.2f}%)",
        f"processes        {n}, {info['parallelism']}"
        + (f" (from {info['parallelism_source']})" if info["parallelism_source"] != "flags" else ""),
        f"optimizer steps  {info['optimizer_steps']} ({info['train_examples']} examples, "
        f"{tc.num_train_epochs:g} epochs, {n} x {tc.per_device_train_batch_size} x "
        f"{tc.gradient_accumulation_steps} per step)",
        f"memory estimate  {mem['total']} GB per device: weights {mem['weights']} ({shard}), "
        + ("gradients + " if info.get("method") == "full" else "LoRA + ")
        + f"optimizer {mem['lora_and_optimizer']} ({state}), activations {mem['activations']} "
        f"(batch {tc.per_device_train_batch_size} a device)",
    ]
    return "\n".join(lines)


def _train_size(cfg: Config) -> int:
    dc = cfg.data
    if dc.split == "notebook":
        return dc.train_per_label * len(dc.labels)
    from finsent.data.splits import make_splits

    return len(make_splits(dc)[1]["train"])


def _architecture(spec: str, cache_dir: str):
    """The model's config: from the HF cache or local folder, else (offline) the known architecture."""
    from transformers import AutoConfig, LlamaConfig

    from finsent.modeling.load import resolve_model

    if spec in KNOWN_ARCHITECTURES:
        try:
            return AutoConfig.from_pretrained(spec, local_files_only=True)
        except OSError:
            return LlamaConfig(**KNOWN_ARCHITECTURES[spec])
    return AutoConfig.from_pretrained(resolve_model(spec, cache_dir))
