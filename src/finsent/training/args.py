"""finsent's options mapped onto PEFT's LoraConfig and TRL's SFTConfig (transformers 5, TRL 1.x).

The notebooks' names are finsent's option names; what upstream renamed or dropped is mapped here, once,
and CUDA-only choices are swapped for their CPU equivalents with a note. Keys finsent has no option for
pass through `train.extra` unchanged.
"""

from __future__ import annotations

from finsent.core.console import note
from finsent.core.errors import FinsentError
from finsent.core.options import Config


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
        use_rslora=lc.use_rslora,
        use_dora=lc.use_dora,
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


def check_options(cfg: Config, dry_run: bool = False) -> None:
    """The training options that transformers would refuse only once the model has loaded (and after the
    run's folder was stamped or an earlier run cleared by --overwrite), refused now in one line naming
    the option. `dry_run`: an estimate for another machine, so 4-bit needs no GPU here."""
    from transformers.trainer_utils import IntervalStrategy, SchedulerType
    from transformers.training_args import OptimizerNames

    if cfg.model.load_in_4bit and not dry_run:
        from finsent.modeling.device import pick_device

        if not pick_device(cfg.model.device).startswith("cuda"):
            raise FinsentError(
                "--load-in-4bit needs a CUDA GPU and bitsandbytes (pip install 'finsent[gpu]')"
            )
    tc = cfg.train
    for field, allowed in (
        ("lr_scheduler_type", SchedulerType),
        ("optim", OptimizerNames),
        ("evaluation_strategy", IntervalStrategy),
    ):
        values = [e.value for e in allowed]
        if getattr(tc, field) not in values:
            raise FinsentError(f"train.{field}: {getattr(tc, field)!r} is not one of {', '.join(values)}")
    from trl import SFTConfig

    # (not by building an SFTConfig: under torchrun its checks would start the process group, on gloo)
    _check_extra(tc.extra, SFTConfig)
    report_to(tc.report_to)


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
    kwargs = dict(
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
        report_to=report_to(tc.report_to),
        eval_strategy=evaluation,
        eval_steps=tc.eval_steps or None,
        gradient_checkpointing=tc.gradient_checkpointing,
        max_length=tc.max_seq_length,
        packing=tc.packing,
        completion_only_loss=True,
        seed=tc.seed,
        data_seed=tc.seed,
        use_cpu=not on_cuda,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        save_only_model=False,
        save_total_limit=tc.save_total_limit or None,
        disable_tqdm=False,
        **save,
    )
    _check_extra(tc.extra, SFTConfig)
    try:
        return SFTConfig(**kwargs | tc.extra)
    except ValueError as e:  # transformers' own checks of a combination of options
        raise FinsentError(f"train options: {' '.join(str(e).split())[:300]}") from None


def report_to(spec: str) -> list[str] | str:
    """train.report_to: any of transformers' logging integrations, comma-separated ('tensorboard,mlflow'),
    'all' (every one installed) or 'none'. Checked here, before training starts: an unknown or missing
    integration is a one-line error, not a traceback from the Trainer."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return "all"
    unknown = [n for n in names if n not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise FinsentError(
            f"train.report_to: unknown integration {', '.join(unknown)} (transformers knows "
            f"{', '.join(INTEGRATION_TO_CALLBACK)}; or all, none)"
        )
    # transformers never lists azure_ml beside mlflow, nor flyte: those are left to it
    missing = [
        n for n in names if n not in get_available_reporting_integrations() and n not in ("azure_ml", "flyte")
    ]
    if missing:
        hint = " (pip install 'finsent[mlflow]')" if missing == ["mlflow"] else ""
        raise FinsentError(f"train.report_to: {', '.join(missing)} not installed here{hint}")
    return names


# SFTConfig fields finsent sets from an option of another name: train.extra must not override them
# (max_length 85 in extra had TRL cut training sentences, which finsent never does)
MAPPED = {
    "max_length": "train.max_seq_length",
    "eval_strategy": "train.evaluation_strategy",
    "warmup_steps": "train.warmup_ratio",
    "save_strategy": "train.save_steps",
    "train_sampling_strategy": "train.group_by_length and train.shuffle",
    "per_device_eval_batch_size": "train.eval_batch_size",
    "data_seed": "train.seed",
    "use_cpu": "model.device",
}
# and those its recipe needs as they are
FIXED = {
    "completion_only_loss": "the loss is on the answer only",
    "remove_unused_columns": "finsent's collator reads every column",
}


def _check_extra(extra: dict, sft_config_cls) -> None:
    """train.extra may name any SFTConfig field but one that finsent sets itself: from its own option of
    the same name or another (MAPPED), or as its recipe needs (FIXED)."""
    import dataclasses

    from finsent.core.options import TrainConfig

    known = {f.name for f in dataclasses.fields(sft_config_cls)}
    own = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in extra:
        if key in own:
            raise FinsentError(f"train.extra.{key}: set train.{key} instead")
        if key in MAPPED:
            raise FinsentError(f"train.extra.{key}: finsent sets it from {MAPPED[key]}; set that instead")
        if key in FIXED:
            raise FinsentError(f"train.extra.{key}: finsent keeps it as it is ({FIXED[key]})")
        if key not in known:
            raise FinsentError(f"train.extra.{key}: not a TrainingArguments/SFTConfig field")
