"""One source of truth for every option: typed dataclasses with help text.

YAML files set them (sections `model`, `data`, `prompt`, `lora`, `train`), CLI flags override them as
`--section.field VALUE` (common ones also have a short alias such as `--model`), unknown keys are
an error naming the key, and the resolved config is saved beside every output as `finsent_config.yaml`.

The notebooks' option names are the field names (`r`, `lora_alpha`, `num_train_epochs`, ...), so a
notebook's settings can be pasted as they are; names that today's transformers/TRL renamed or dropped
(`evaluation_strategy`, `warmup_ratio`, `group_by_length`, `max_seq_length`) are mapped in `training/args.py`.

    finsent train --config configs/smollm2-cpu.yaml --lora.r 16 --train.learning_rate 1e-4
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from finsent.core.errors import FinsentError
from finsent.core.fields import EARLIER_NAMES, coerce, current_name, not_a_choice, opt, out_of_range
from finsent.core.registry import DEFAULT_MODEL


@dataclass
class ModelConfig:
    model: str = opt(
        DEFAULT_MODEL,
        f"base model: '{DEFAULT_MODEL}' (embedded), a local HF folder, a local .gguf file, or a hub id",
        alias="--model",
    )
    dtype: str = opt(
        "auto",
        "weights dtype; auto = bf16/fp16 on CUDA; on a CPU with AMX/AVX512-BF16 bf16 for training and for "
        "scoring (the near-ties that --guard names rescored in float32), elsewhere float32",
        alias="--dtype",
        choices=("auto", "bfloat16", "float16", "float32"),
    )
    guard: float = opt(
        0.5,
        "scoring in bf16/fp16 on a CPU: a text whose top two labels are within GUARD nats (a near-tie, "
        "where bf16 rounding can move the label) is rescored by a float32 copy of the model, kept beside "
        "the bf16 one (0: no copy, plain bf16)",
        alias="--guard",
        at_least=0.0,
        # recorded where it matters (predict's shards, evaluations); training never scores with it
        affects_outputs=False,
    )
    device: str = opt("auto", "cpu, cuda, cuda:N or auto", alias="--device", affects_outputs=False)
    load_in_4bit: bool = opt(
        False, "QLoRA: load the base in 4-bit NF4 (CUDA + bitsandbytes)", alias="--load-in-4bit"
    )
    bnb_4bit_quant_type: str = opt("nf4", "4-bit quantisation type", choices=("nf4", "fp4"))
    bnb_4bit_use_double_quant: bool = opt(True, "nested quantisation of the 4-bit constants")
    bnb_4bit_compute_dtype: str = opt(
        "float16", "compute dtype of 4-bit layers", choices=("float16", "bfloat16", "float32")
    )
    bnb_4bit_quant_storage: str = opt(
        "uint8",
        "dtype the packed 4-bit weights are stored in: uint8 (bitsandbytes' default), or a float type for "
        "FSDP, which shards only floating-point tensors (FSDP + QLoRA: bfloat16, with --dtype bfloat16)",
        choices=("uint8", "bfloat16", "float16", "float32"),
    )
    cache_dir: str = opt(
        "",
        "where converted models are cached (default: $FINSENT_CACHE or ~/.cache/finsent)",
        affects_outputs=False,
    )


@dataclass
class DataConfig:
    data: str = opt(
        "",
        "a data file (CSV/TSV/JSONL/Parquet with a header, PhraseBank .txt, all-data.csv, the published "
        "SemEval-2017 Task 5, FiQA 2018 and SEntFiN files), fpb[:50agree|66agree|75agree|allagree] (the "
        "Financial PhraseBank from the hub), or a named corpus under $FINSENT_DATA_DIR: semeval-headlines, "
        "semeval-microblogs, fiqa-posts, sentfin, all-data (NAME:test for its official test file)",
        alias="--data",
    )
    sources: list = opt(
        [],
        "several data sources in one run, instead of data.data: each 'SPEC [cap=N] [weight=W] [name=NAME]' (SPEC as for "
        "--data), split on its own (a corpus's official test file where it has one) and combined, with no "
        "text of a test split in any training or eval split; evaluations report each source and the whole",
        alias="--sources",
    )
    text_column: str = opt("text", "text column of a CSV/TSV/JSONL/Parquet file", alias="--text-column")
    label_column: str = opt("label", "label column of a CSV/TSV/JSONL/Parquet file", alias="--label-column")
    label_map: str = opt(
        "",
        "raw=label pairs, e.g. '0=negative,1=positive,2=neutral' or 'bullish=positive'; or 'scores': the "
        "label column holds numeric sentiment scores, labelled by data.score_thresholds",
        alias="--label-map",
    )
    score_thresholds: str = opt(
        "-0.1,0.1",
        "A,B: how sentiment scores become labels (with --label-map scores, and for the score-labelled "
        "SemEval-2017 and FiQA files): score < A negative, A <= score < B neutral, score >= B positive "
        "(the default is FinGPT's rule; A = B: no neutral); one number T for -T,T (on the command line "
        "'--score-thresholds 0.2', or '--score-thresholds=-0.3,0.1')",
        alias="--score-thresholds",
    )
    labels: list = opt(["positive", "neutral", "negative"], "the label set, in order", alias="--labels")
    split: str = opt(
        "auto",
        "auto (notebook for the Financial PhraseBank and all-data.csv where each label has the rows it needs, "
        "stratified otherwise), "
        "notebook (the notebooks' split; 'seed' is its earlier name), stratified (every usable row, "
        "seeded, label shares kept), random (datasets' train_test_split: the public FPB benchmark's), or "
        "file (--test-data)",
        alias="--split",
        choices=("auto", "notebook", "stratified", "random", "file"),
        renamed=EARLIER_NAMES,
    )
    train_per_label: int = opt(300, "notebook split: training sentences per label", at_least=1)
    test_per_label: int = opt(300, "notebook split: test sentences per label", at_least=1)
    eval_per_label: int = opt(
        50, "notebook split: eval sentences per label (sampled with replacement)", at_least=0
    )
    test_size: float = opt(
        0.1, "stratified/random split: test share", alias="--test-size", at_least=1e-9, below=1
    )
    eval_size: float = opt(
        0.1, "stratified/random/file split: eval share", alias="--eval-size", at_least=0, below=1
    )
    seed: int = opt(
        42,
        "split seed: which rows go to train, eval and test (train.seed, --seed of train and run, seeds training)",
        alias="--split-seed",
    )
    test_data: str = opt("", "explicit test file (split=file)", alias="--test-data")
    dedupe: bool = opt(
        False,
        "drop repeated sentences (keep the first) and sentences with conflicting labels",
        alias="--dedupe",
    )
    skip_invalid: bool = opt(False, "skip and count bad rows instead of stopping", alias="--skip-invalid")


@dataclass
class PromptConfig:
    template: str = opt(
        "notebook",
        "notebook (the notebooks' prompt; 'seed' is its earlier name), chat (the tokenizer's chat "
        "template), a file with {text}, or the template's text itself (saved configs carry a file's text)",
        alias="--template",
        renamed=EARLIER_NAMES,
    )
    label_words: str = opt(
        "", "label=word pairs for the answer words, e.g. 'positive=bullish'", alias="--label-words"
    )


@dataclass
class LoraConfig:
    r: int = opt(64, "LoRA rank", at_least=1)
    lora_alpha: int = opt(16, "LoRA scaling numerator (scale = lora_alpha / r)", at_least=1)
    lora_dropout: float = opt(0.1, "dropout on the LoRA input", at_least=0, below=1)
    bias: str = opt("none", "which biases train", choices=("none", "all", "lora_only"))
    task_type: str = opt(
        "CAUSAL_LM", "PEFT task type (finsent's models are causal LMs)", choices=("CAUSAL_LM",)
    )
    use_rslora: bool = opt(False, "rank-stabilised LoRA: scale = lora_alpha / sqrt(r) (PEFT use_rslora)")
    use_dora: bool = opt(False, "weight-decomposed LoRA (PEFT use_dora); merges like LoRA")
    target_modules: str = opt("all-linear", "all-linear, or comma-separated module names")
    layers_to_transform: str = opt(
        "all",
        "decoder layers that get LoRA: 'all', or indices and ranges such as '15-29' or '0,2,4-6'; "
        "layers below the lowest adapted one need no backward pass",
    )


@dataclass
class TrainConfig:
    output_dir: str = opt(
        "runs/train", "where checkpoints, the adapter and logs go", alias="--out", affects_outputs=False
    )
    method: str = opt(
        "lora",
        "lora = a PEFT adapter on the frozen base (the notebooks'); full = every weight trains (float32 "
        "weights, bf16/fp16 autocast where dtype auto picks it) and the output is a whole model",
        choices=("lora", "full"),
    )
    num_train_epochs: float = opt(3.0, "epochs", at_least=1e-9)
    per_device_train_batch_size: int = opt(1, "micro-batch size", at_least=1)
    gradient_accumulation_steps: int = opt(8, "micro-batches per optimizer step", at_least=1)
    optim: str = opt(
        "paged_adamw_32bit", "optimizer (paged_* need CUDA; on CPU the plain AdamW equivalent is used)"
    )
    save_steps: int = opt(
        0, "checkpoint every N optimizer steps (0 = every epoch)", at_least=0, affects_outputs=False
    )
    save_total_limit: int = opt(
        0,
        "checkpoints kept, the newest N (0 = every one): --resume needs only the newest complete one, and "
        "the trainer deletes older ones only after a new one is whole",
        at_least=0,
        affects_outputs=False,
    )
    logging_steps: int = opt(25, "log the loss every N optimizer steps", at_least=1, affects_outputs=False)
    learning_rate: float = opt(2e-4, "peak learning rate", at_least=1e-12)
    weight_decay: float = opt(0.001, "AdamW weight decay", at_least=0)
    fp16: bool = opt(False, "fp16 mixed precision (CUDA)")
    bf16: bool = opt(False, "bf16 mixed precision")
    max_grad_norm: float = opt(0.3, "gradient clipping", at_least=0)
    max_steps: int = opt(-1, "stop after N optimizer steps (-1 = by epochs)", at_least=-1)
    warmup_ratio: float = opt(0.03, "share of steps for linear warm-up", at_least=0, below=1)
    group_by_length: bool = opt(True, "batch sentences of similar length together")
    shuffle: bool = opt(
        True, "without group_by_length: shuffle each epoch (false = file order, reproducible)"
    )
    lr_scheduler_type: str = opt("cosine", "learning-rate schedule")
    report_to: str = opt(
        "tensorboard",
        "logging integrations, comma-separated (tensorboard, mlflow, wandb, ...), all, or none",
        affects_outputs=False,
    )
    evaluation_strategy: str = opt("epoch", "when to evaluate on the eval split: epoch, steps or no")
    eval_steps: int = opt(0, "evaluate every N steps when evaluation_strategy=steps", at_least=0)
    gradient_checkpointing: bool = opt(True, "recompute activations to save memory")
    max_seq_length: int = opt(
        512, "longest training sequence; longer ones are an error, never cut", at_least=1
    )
    packing: bool = opt(False, "pack several sentences per sequence (not with fast=true)")
    seed: int = opt(
        42,
        "training seed (model initialisation, dropout, data order): what --seed means in Hugging Face "
        "tools; the split has its own, --split-seed",
        alias="--seed",
    )
    fast: bool = opt(
        False,
        "finsent's fast path: shared-prefix forward, loss on label tokens only, length-bucketed batches",
    )
    loss: str = opt(
        "answer",
        "fast path's loss: answer = NLL of the answer tokens (label + EOS); label = cross-entropy over "
        "the labels' scores (what the classifier compares) plus the gold label's NLL",
        choices=("answer", "label"),
    )
    label_smoothing: float = opt(
        0.0, "label smoothing of the label loss (train.loss=label)", at_least=0, below=1
    )
    class_weights: str = opt(
        "none",
        "loss weight per training label: none, auto (inverse label shares of the training split, "
        "mean 1), or one number per label in label order, e.g. '1,0.5,1'",
    )
    eval_batch_size: int = opt(32, "batch size of the evaluator", at_least=1, affects_outputs=False)
    resume: bool = opt(
        False,
        "continue from the last complete checkpoint of the same run in output_dir",
        alias="--resume",
        affects_outputs=False,
    )
    overwrite: bool = opt(
        False,
        "train into an output_dir that holds an earlier run, clearing it first",
        alias="--overwrite",
        affects_outputs=False,
    )
    extra: dict = opt(
        {},
        "other TrainingArguments/SFTConfig keys passed through as they are, e.g. "
        "'{logging_first_step: false, push_to_hub: true}'",
    )


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "prompt": PromptConfig,
    "lora": LoraConfig,
    "train": TrainConfig,
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def set(self, key: str, value: Any, source: str = "option") -> None:
        """Set `section.field` (or a field name that is unique across sections), coercing the type."""
        section, name = _resolve_key(key, source)
        sec = getattr(self, section)
        value = coerce(value, _field_type(SECTIONS[section], name), f"{source} {section}.{name}")
        meta = _field(section, name).metadata
        problem = out_of_range(meta, value) or not_a_choice(meta, value)
        if problem:  # a YAML typo fails here, as a flag's does
            raise FinsentError(f"{source} {section}.{name}: {problem}")
        setattr(sec, name, current_name(meta, value))

    def validate(self, world_size: int = 1) -> Config:
        """The cross-checks between options, once: a resolved copy for `world_size` processes (this
        config is never changed). Contradictions are errors; choices finsent makes for the user are notes."""
        from finsent.core.console import note

        cfg = copy.deepcopy(self)
        tc = cfg.train
        if tc.fast and tc.packing:
            raise FinsentError(
                "train.fast and train.packing exclude each other (fast shares the prompt prefix)"
            )
        # world_size > 1 keeps train.fast: the trainer runs the fast loss inside DDP/FSDP's forward
        if not tc.fast and (tc.loss != "answer" or tc.class_weights != "none"):
            raise FinsentError(
                "train.loss=label and train.class_weights need train.fast: true (finsent's loss)"
            )
        if tc.method == "full" and cfg.model.load_in_4bit:
            raise FinsentError(
                "train.method=full trains every weight, which a 4-bit base cannot (use train.method=lora)"
            )
        if tc.label_smoothing and tc.loss != "label":
            raise FinsentError("train.label_smoothing applies to train.loss=label")
        class_weight_list(tc.class_weights, cfg.data.labels, {})  # a malformed list fails here, before work
        if tc.fast and tc.gradient_checkpointing:
            # the fast path shares the prefix's key/value cache, which gradient checkpointing turns off
            note("train.fast keeps activations instead of gradient checkpointing (more memory, less compute)")
            tc.gradient_checkpointing = False
        return cfg


def affects_outputs(section: str, name: str) -> bool:
    """False for an option marked as changing how a run goes, not what it produces."""
    return _field(section, name).metadata.get("affects_outputs", True)


def outputs_only(cfg_dict: dict) -> dict:
    """A config's dict (Config.to_dict()) without the options that do not change the outputs: what a
    resumed run must match (training/checkpoints.py) and what sharded predict's shards record."""
    return {
        sec: {k: v for k, v in values.items() if affects_outputs(sec, k)} if sec in SECTIONS else values
        for sec, values in cfg_dict.items()
    }


def class_weight_list(spec: str, labels: list[str], counts: dict[str, int]) -> list[float] | None:
    """train.class_weights as one weight per label (None = unweighted). 'auto' weighs each label by the
    inverse of its share of the training split, scaled so that the training rows' mean weight is 1
    (scikit-learn's 'balanced'): the loss then counts every label as much, whatever its frequency."""
    spec = spec.strip()
    if spec in ("none", ""):
        return None
    if spec == "auto":
        total = sum(counts.get(lab, 0) for lab in labels)
        if not total:
            return None
        return [total / (len(labels) * counts[lab]) if counts.get(lab) else 0.0 for lab in labels]
    try:
        weights = [float(w) for w in spec.split(",")]
    except ValueError:
        weights = []
    if len(weights) != len(labels) or any(w < 0 for w in weights) or not any(weights):
        raise FinsentError(
            f"train.class_weights: {spec!r} is not none, auto or {len(labels)} non-negative numbers "
            f"(one per label: {', '.join(labels)})"
        )
    return weights


def _field(section: str, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name)


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[name]


def _unique_owner() -> dict[str, str]:
    owners: dict[str, list[str]] = {}
    for sec, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append(sec)
    return {k: v[0] for k, v in owners.items() if len(v) == 1}


def _resolve_key(key: str, source: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise FinsentError(f"{source}: unknown section '{section}' (known: {', '.join(SECTIONS)})")
        if name not in {f.name for f in dataclasses.fields(SECTIONS[section])}:
            raise FinsentError(f"{source}: unknown key '{key}'")
        return section, name
    owner = _unique_owner().get(key)
    if owner is None:
        raise FinsentError(f"{source}: unknown key '{key}' (write it as section.key)")
    return owner, key
