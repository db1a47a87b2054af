"""finsent's own forward passes inside DDP, FSDP and DeepSpeed.

The fast loss (scoring.answer_loss) and the evaluator call the decoder and the output head directly, not
the model's `forward`. A distributed wrapper does its work in its own forward: DDP arms its gradient
all-reduce there (a backward after a bypassed forward syncs nothing and the ranks drift apart), FSDP
gathers the root's sharded weights (embeddings, final norm, head) there. `through_wrapper` runs any
function as the wrapper's forward: the inner module's `forward` is swapped for the function for one
call (Lightning's "forward redirection", also what TRL does for its fused losses), so the wrapper's
bookkeeping runs around finsent's code exactly as around an ordinary forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def unwrap(model):
    """The module inside a DDP / FSDP1 / DeepSpeed / compiled wrapper (the model itself if none)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=True)


def is_wrapped(model) -> bool:
    """True where finsent's direct decoder calls must run inside `model`'s forward: a wrapper, or a model
    sharded in place by FSDP2's fully_shard (no wrapper, but its root weights are gathered by hooks on
    its forward)."""
    if unwrap(model) is not model:
        return True
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


def check_fast_loss(model) -> None:
    """One line if the fast loss cannot train under `model`'s sharding. FSDP2 (fully_shard) cannot: the
    fast loss runs each decoder layer twice per step (the shared prefix, then the rows that read its
    key/value states), and FSDP2 reshards and reduce-scatters a layer after the backward of its second
    call, before the gradient reaches the first through those states ("setStorage ... out of bounds for
    storage of size 0", torch 2.13 on CPU/gloo). FSDP1 waits for every use of a flat parameter and works."""
    from finsent.core.errors import FinsentError

    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return
    if unwrap(model) is model and isinstance(model, FSDPModule):
        raise FinsentError(
            "train.fast does not run under FSDP2 (fsdp_version: 2): use fsdp_version: 1 "
            "(configs/accelerate/fsdp.yaml) or --no-train.fast"
        )


def through_wrapper(wrapper, fn: Callable[[], Any]) -> Any:
    """fn() run as `wrapper`'s forward, so DDP syncs the gradients of what fn computes and FSDP
    gathers the weights fn uses. fn takes no arguments (a closure): the wrapper's forward may move
    positional and keyword inputs between devices, and finsent's inputs are already where they belong."""
    inner = unwrap(wrapper)
    original = inner.__dict__.get("forward")  # an instance-level forward (accelerate's autocast) or None

    def redirected(*_args, **_kwargs):
        _restore(inner, original)  # fn may call the real forward
        return fn()

    inner.forward = redirected
    try:
        return wrapper()
    finally:
        _restore(inner, original)


def _restore(module, original) -> None:
    if original is None:
        module.__dict__.pop("forward", None)
    else:
        module.forward = original


def is_sharded(model) -> bool:
    """True where no single process holds the whole model: FSDP1, FSDP2 or a DeepSpeed engine."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return isinstance(model, FullyShardedDataParallel | FSDPModule) or hasattr(
        model, "_zero3_consolidated_16bit_state_dict"
    )


def gathered_state_dict(model) -> dict | None:
    """Every weight of a sharded model, whole (save_adapter then keeps the adapter's, as PEFT selects
    them; save_model all of them). FSDP: on rank 0, or every rank on CPU; ZeRO-3: the whole 16-bit state
    on rank 0. None for a model that one process holds whole. A collective: every rank calls it, then rank 0 saves from it (a rank-0-only save
    would hang in FSDP's gather, or write ZeRO-3's empty partitions)."""
    if not is_sharded(model):
        return None
    if hasattr(model, "_zero3_consolidated_16bit_state_dict"):  # DeepSpeed, as accelerate's get_state_dict
        full = model._zero3_consolidated_16bit_state_dict() or {}  # {} on the other ranks, which save nothing
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # On GPUs the whole state goes to rank 0's CPU RAM (FSDP's FULL_STATE_DICT, offload_to_cpu,
        # rank0_only). On CPU that "offload" is no copy, and the tensors alias storage FSDP frees (a
        # segfault, CPU/gloo), so there every rank keeps its own whole copy.
        on_cpu = next(model.parameters()).device.type == "cpu"
        options = StateDictOptions(full_state_dict=True, cpu_offload=not on_cpu)
        full = get_model_state_dict(model, options=options)
    return full


def save_model(model, folder, state: dict | None) -> None:
    """`model.save_pretrained(folder)` for train.method=full, from a gathered state (gathered_state_dict
    with adapter=False) where there is one: the sharded model's own state_dict() holds only this rank's
    shard. An empty state would write a folder without a single weight (what an adapter-only gather once
    gave a full fine-tune), so it is refused."""
    from finsent.core.errors import FinsentError

    if state is not None and not state:
        raise FinsentError("the gathered model state is empty: no weight to save (train.method=full)")
    model.save_pretrained(folder, state_dict=state)


def adapter_part(model, state: dict) -> dict:
    """The adapter's weights in a gathered full state: the LoRA (and DoRA) tensors, and the biases its
    config trains (lora.bias all, or lora_only: those of adapted modules). By name, not by PEFT's
    get_peft_model_state_dict, which selects by the model's module names and FSDP's wrappers change them."""
    bias = model.peft_config[model.active_adapter].bias
    adapted = {k.split(".lora_")[0] for k in state if ".lora_" in k}

    def trained(key: str) -> bool:
        if "lora_" in key:
            return True
        if not key.endswith(".bias") or bias == "none":
            return False
        return bias == "all" or key[: -len(".bias")].removesuffix(".base_layer") in adapted

    return {k: v for k, v in state.items() if trained(k)}


def save_adapter(model, folder, state: dict | None) -> None:
    """`model.save_pretrained(folder)`, or from a gathered state (gathered_state_dict). PEFT's own save
    finds the adapter's keys by the model's module names, which FSDP's wrappers change, and then writes an
    empty adapter (seen with PEFT 0.21), so a gathered state is written here under PEFT's names."""
    import copy
    from pathlib import Path

    if state is None:
        model.save_pretrained(folder)
        return
    from safetensors.torch import save_file

    from finsent.core.errors import FinsentError

    name = model.active_adapter
    weights = {
        k.replace(f".{name}.", "."): v.detach().contiguous() for k, v in adapter_part(model, state).items()
    }
    if not weights:
        raise FinsentError("the gathered adapter state is empty: no weight to save")
    save_file(weights, str(Path(folder) / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.peft_config[name])
    config.inference_mode = True  # as PeftModel.save_pretrained writes it
    config.save_pretrained(folder)
