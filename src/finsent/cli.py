"""The `finsent` command. Heavy imports (torch, transformers) happen inside the commands, so --help is instant.

finsent --help
finsent data --data ../shared/data/kaggle_all_data/all-data.csv --split seed --export runs/data
finsent evaluate --data ../shared/data/kaggle_all_data/all-data.csv --out runs/zero-shot
finsent run --config configs/smollm2-cpu.yaml --out runs/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from finsent.config import Config, apply_mapping, iter_fields, load_saved_config, load_yaml
from finsent.errors import FinsentError

# which option sections each command takes
COMMAND_SECTIONS = {
    "data": ("data",),
    "evaluate": ("model", "data", "prompt"),
    "train": ("model", "data", "prompt", "lora", "train"),
    "run": ("model", "data", "prompt", "lora", "train"),
    "merge": ("model",),
    "predict": ("model",),
    "serve": ("model",),
    "export": ("model",),
}


def _add_config_flags(p: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    for sec, f in iter_fields():
        if sec not in sections:
            continue
        meta = f.metadata
        alias = meta.get("alias") if meta.get("alias") not in p._option_string_actions else None
        flags = [f"--{sec}.{f.name}"] + ([alias] if alias else [])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs = {"dest": f"cfg:{sec}.{f.name}", "default": argparse.SUPPRESS, "metavar": f.name.upper()}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        help_text = meta.get("help", "")
        if f.type in ("bool", bool) and alias:
            # `--dedupe` alone means true; the dotted form takes a value (true/false)
            p.add_argument(
                alias,
                dest=kwargs["dest"],
                action="store_const",
                const=True,
                default=argparse.SUPPRESS,
                help=f"{help_text} (same as {flags[0]} true)",
            )
            flags = flags[:1]
            kwargs["metavar"] = "BOOL"
        p.add_argument(*flags, help=f"{help_text} [default: {default!r}]", **kwargs)


def _overrides(args: argparse.Namespace) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}


def resolve_config(args: argparse.Namespace, base_folder: str | None = None) -> Config:
    """Defaults < the config saved beside `base_folder` (an adapter or run) < --config FILE < flags."""
    cfg = (load_saved_config(base_folder) if base_folder else None) or Config()
    if getattr(args, "config", None):
        apply_mapping(cfg, load_yaml(args.config), args.config)
    for key, value in _overrides(args).items():
        cfg.set(key, value, "option")
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finsent",
        description="Fine-tune Llama-family models with LoRA/QLoRA for financial sentiment; evaluate, merge, serve.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="read, check and split a data set; export the splits as CSV")
    p.add_argument("--export", metavar="DIR", help="write train.csv, eval.csv, test.csv here")
    _add_config_flags(p, COMMAND_SECTIONS["data"])

    p = sub.add_parser("evaluate", help="accuracy, F1 and confusion matrix of a model on a split")
    p.add_argument("--config", help="YAML config file")
    p.add_argument(
        "--adapter", help="a LoRA adapter folder (its saved config supplies model, labels, template)"
    )
    p.add_argument(
        "--subset", default="test", choices=("train", "eval", "test"), help="which split to evaluate"
    )
    p.add_argument(
        "--method",
        default="score",
        choices=("score", "generate"),
        help="score: full label likelihoods (default); generate: the notebooks' one-token generation",
    )
    p.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N sentences of the split")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_config_flags(p, COMMAND_SECTIONS["evaluate"])

    p = sub.add_parser("train", help="LoRA/QLoRA fine-tuning with TRL's SFTTrainer")
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve everything without weights: parameters, optimizer steps, memory estimate",
    )
    _add_config_flags(p, COMMAND_SECTIONS["train"])

    p = sub.add_parser("merge", help="merge an adapter into its base in full precision, with a parity check")
    p.add_argument("--adapter", required=True, help="adapter folder (from finsent train)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the merged model goes")
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.995,
        help="fail unless merged and adapter predictions agree on this share of the eval split",
    )
    _add_config_flags(p, COMMAND_SECTIONS["merge"])

    p = sub.add_parser("run", help="the whole notebook: split, zero-shot, train, evaluate, merge, report")
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--batch-size", type=int, default=32, help="evaluator batch size")
    _add_config_flags(p, COMMAND_SECTIONS["run"])

    p = sub.add_parser("predict", help="classify texts, a CSV/JSONL/TXT file, or stdin")
    p.add_argument("texts", nargs="*", help="texts to classify (else --input, else stdin)")
    p.add_argument("--adapter", help="a LoRA adapter folder on top of --model")
    p.add_argument("--input", help="CSV/TSV (header row), JSONL or TXT file; '-' for stdin")
    p.add_argument("--output", help="CSV or JSONL file (by suffix); CSV on stdout when omitted")
    p.add_argument("--text-column", default="text", help="text column of a CSV/JSONL input")
    p.add_argument("--id-column", help="column copied to the output (default: id or source_row when present)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass")
    _add_config_flags(p, COMMAND_SECTIONS["predict"])

    p = sub.add_parser("serve", help="HTTP service: POST /v1/classify, GET /v1/model, a page at /")
    p.add_argument("--adapter", help="a LoRA adapter folder on top of --model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-texts", type=int, default=64, help="texts per request")
    p.add_argument("--max-chars", type=int, default=2000, help="characters per text")
    p.add_argument("--max-body", type=int, default=1_000_000, help="bytes per request body")
    p.add_argument("--max-batch", type=int, default=64, help="texts per forward pass across requests")
    _add_config_flags(p, COMMAND_SECTIONS["serve"])

    p = sub.add_parser(
        "export", help="export a merged Llama model to GGUF (llama.cpp, Ollama) with a parity check"
    )
    p.add_argument("--format", default="gguf", choices=("gguf",))
    p.add_argument("--out", required=True, metavar="FILE.gguf")
    p.add_argument("--min-agreement", type=float, help="default: 99.5%% for f16/bf16, 98%% for q8_0")
    p.add_argument(
        "--dtype", dest="gguf_dtype", default="f16", choices=("f16", "bf16", "q8_0"), help="GGUF tensor type"
    )
    _add_config_flags(p, COMMAND_SECTIONS["export"])
    return parser


def cmd_data(args) -> int:
    from finsent.data import counts_table, export_splits, make_splits

    cfg = resolve_config(args)
    ds, splits = make_splits(cfg.data)
    print(f"{ds.path}: {len(ds.examples)} usable rows")
    for flaw in ds.flaws():
        print(f"  {flaw}")
    print(counts_table(splits, cfg.data.labels))
    if args.export:
        from finsent.config import save_config

        for path in export_splits(splits, args.export):
            print(f"wrote {path}")
        save_config(cfg, args.export)
    return 0


def cmd_evaluate(args) -> int:
    from finsent.config import save_config
    from finsent.data import make_splits
    from finsent.evaluate import make_codec, run_evaluation, write_evaluation
    from finsent.models import load_model

    cfg = resolve_config(args, args.adapter)
    ds, splits = make_splits(cfg.data)
    for flaw in ds.flaws():
        print(f"data: {flaw}", file=sys.stderr)
    examples = splits[args.subset][: args.limit or None]
    model, tokenizer, device = load_model(cfg.model, args.adapter)
    codec = make_codec(cfg, tokenizer)
    metrics, preds, probs = run_evaluation(model, codec, examples, args.batch_size, args.method)
    metrics.update(
        model=cfg.model.model,
        adapter=args.adapter,
        subset=args.subset,
        device=device,
        dtype=str(model.dtype).replace("torch.", ""),
    )
    title = (
        f"{cfg.model.model}{' + ' + args.adapter if args.adapter else ''} on {args.subset} ({args.method})"
    )
    report = write_evaluation(args.out, metrics, examples, preds, probs, codec.labels, title)
    save_config(cfg, args.out)
    print(report)
    print(
        f"{metrics['examples_per_second']:.1f} sentences/s on {device} ({metrics['dtype']}); wrote {Path(args.out)}/"
    )
    return 0


def cmd_train(args) -> int:
    cfg = resolve_config(args)
    if args.dry_run:
        from finsent.train import dry_run

        info = dry_run(cfg)
        mem = info["memory_estimate_gb"]
        print(f"model            {info['model']}")
        print(
            f"parameters       {info['total_parameters']:,} total, {info['trainable_parameters']:,} trainable "
            f"({info['trainable_percent']:.2f}%)"
        )
        print(
            f"optimizer steps  {info['optimizer_steps']} ({info['train_examples']} examples, "
            f"{cfg.train.num_train_epochs:g} epochs, {cfg.train.per_device_train_batch_size} x "
            f"{cfg.train.gradient_accumulation_steps} per step)"
        )
        print(
            f"memory estimate  {mem['total']} GB (weights {mem['weights']}, LoRA + optimizer "
            f"{mem['lora_and_optimizer']}, activations {mem['activations']})"
        )
        return 0
    from finsent.train import train

    adapter = train(cfg)
    print(f"adapter saved to {adapter}")
    return 0


def cmd_merge(args) -> int:
    from finsent.merge import merge

    cfg = resolve_config(args, args.adapter)
    merge(cfg, args.adapter, args.out, args.min_agreement)
    print(f"merged model saved to {args.out}")
    return 0


def cmd_run(args) -> int:
    from finsent.run import run

    run(resolve_config(args), args.out, args.batch_size)
    return 0


def _classifier(args):
    from finsent.api import Classifier

    overrides = {k.split(".", 1)[1]: v for k, v in _overrides(args).items()}
    model = overrides.pop("model", "smollm2-135m")
    return Classifier.load(model, args.adapter, getattr(args, "batch_size", 32), **overrides)


def cmd_predict(args) -> int:
    from finsent.predict import predict

    if not args.texts and args.input is None and sys.stdin.isatty():
        raise FinsentError("no input: pass texts, --input FILE, or pipe text on stdin")
    summary = predict(
        _classifier(args), args.texts, args.input, args.output, args.text_column, args.id_column, args.strict
    )
    return 0 if summary["predicted"] or not summary["bad"] else 1


def cmd_serve(args) -> int:
    from finsent.serve import Limits, serve

    serve(
        _classifier(args),
        args.host,
        args.port,
        Limits(args.max_texts, args.max_chars, args.max_body, args.max_batch),
    )
    return 0


def cmd_export(args) -> int:
    from finsent.export import export

    cfg = resolve_config(args, _model_arg(args))
    export(cfg, cfg.model.model, args.out, args.gguf_dtype, min_agreement=args.min_agreement)
    return 0


def _model_arg(args) -> str | None:
    return _overrides(args).get("model.model")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = globals()[f"cmd_{args.command}"]
    try:
        return handler(args) or 0
    except FinsentError as e:
        print(f"finsent {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
