"""The `finsent` command. Heavy imports (torch, transformers) happen inside the commands, so --help is instant.

finsent --help
finsent data --data ../shared/data/kaggle_all_data/all-data.csv --split notebook --export runs/data
finsent evaluate --data ../shared/data/kaggle_all_data/all-data.csv --out runs/zero-shot
finsent run --config configs/smollm2-cpu.yaml --out runs/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from finsent import __version__
from finsent.core.config import iter_fields, resolve
from finsent.core.errors import FinsentError
from finsent.core.options import Config, coerce
from finsent.deploy.export import DTYPES as GGUF_DTYPES
from finsent.deploy.merge import MIN_AGREEMENT as MERGE_MIN_AGREEMENT

# which option sections each command takes
COMMAND_SECTIONS = {
    "data": ("data",),
    "evaluate": ("model", "data", "prompt"),
    "train": ("model", "data", "prompt", "lora", "train"),
    "run": ("model", "data", "prompt", "lora", "train"),
    "merge": ("model",),
    "predict": ("model", "prompt", "data.labels"),
    "serve": ("model", "prompt", "data.labels"),
    "export": ("model",),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (like every other finsent error) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, at_least: float, below: float | None = None):
    """An argparse type: an int or float in [at_least, below), else a one-line error naming the range."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < at_least or (below is not None and value > below):
            span = f"at least {at_least:g}" + (f" and at most {below:g}" if below is not None else "")
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {span})")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default, and the examples in each command's epilog keep their line breaks."""


class _Bool(argparse.Action):
    """A boolean option: `--x` alone is true, `--no-x` false; the dotted form also takes a value
    (`--train.fast false`), as a YAML file would say it."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string and option_string.startswith("--no-"):
            value = False
        else:
            value = True if values is None else coerce(values, bool, option_string or self.dest)
        setattr(namespace, self.dest, value)


def _spellings(flag: str) -> list[str]:
    """A flag as written and with dashes for underscores (or the reverse): --text-column, --text_column."""
    return list(dict.fromkeys([flag, flag.replace("_", "-"), "--" + flag[2:].replace("-", "_")]))


def _add_config_flags(p: argparse.ArgumentParser, sections: tuple[str, ...], taken: set[str]) -> None:
    """One flag per option of `sections` (`--section.field`, plus its short alias unless the command
    already uses that name for something else, `taken`)."""
    for sec, f in iter_fields():
        if sec not in sections and f"{sec}.{f.name}" not in sections:
            continue
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        dotted = _spellings(f"--{sec}.{f.name}")
        short = [s for s in _spellings(meta["alias"]) if s not in taken] if meta.get("alias") else []
        taken.update(dotted + short)
        dest = f"cfg:{sec}.{f.name}"
        help_text = meta.get("help", "").replace("%", "%%") + f" (default: {default!r})"
        if f.type in ("bool", bool):
            negated = [f"--no-{x[2:]}" for x in (short or dotted[:1])]
            p.add_argument(
                *dotted,
                *short,
                *negated,
                dest=dest,
                action=_Bool,
                nargs="?",
                metavar="BOOL",
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        kwargs: dict = {"dest": dest, "default": argparse.SUPPRESS, "metavar": f.name.upper()}
        if meta.get("choices"):
            # earlier names (renamed) are accepted but not advertised
            kwargs["choices"] = (*meta["choices"], *meta.get("renamed", {}))
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        p.add_argument(*dotted, *short, help=help_text, **kwargs)


def _overrides(args: argparse.Namespace) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}


def resolve_config(args: argparse.Namespace) -> Config:
    """finsent.config.resolve for a command's arguments: flags > --config FILE > the config saved
    beside --adapter (or the --model folder) > defaults."""
    return resolve(getattr(args, "config", None), _overrides(args), getattr(args, "adapter", None))


DATA = "../shared/data/kaggle_all_data/all-data.csv"
EXAMPLES = {
    "data": f"finsent data --data {DATA} --split notebook --export runs/data",
    "evaluate": f"finsent evaluate --data {DATA} --subset test --out runs/zero-shot",
    "train": "finsent train --config configs/smollm2-cpu.yaml --out runs/train      # full fine-tuning\n"
    "  finsent train --config configs/smollm2-cpu.yaml --train.method lora --train.learning_rate 1e-3 "
    "--out runs/train   # LoRA\n"
    "  finsent train --config configs/llama-3.2-1b-notebook.yaml --dry-run",
    "merge": "finsent merge --adapter runs/train/adapter --out runs/merged",
    "run": f"finsent run --config configs/smollm2-cpu.yaml --data {DATA} --out runs/demo",
    "predict": 'finsent predict --model runs/demo/merged_model "Operating profit rose to EUR 13.1 mn ."\n'
    "  finsent predict --model runs/demo/merged_model --input news.csv --output out.jsonl\n"
    "  torchrun --nproc_per_node 4 -m finsent predict --model runs/demo/merged_model --input big.csv --output out.csv",
    "serve": "finsent serve --model runs/demo/merged_model --port 8000",
    "export": "finsent export --model runs/demo/merged_model --dtype q8_0 --out runs/demo/finsent-q8_0.gguf",
    "env": "finsent env      # paste this into a bug report",
    "push": "finsent push runs/demo/merged_model --repo-id user/finsent-smollm2 --dry-run\n"
    "  finsent push runs/train/adapter --repo-id user/finsent-smollm2-lora --private",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="finsent",
        description="Fine-tune Llama-family models with LoRA/QLoRA for financial sentiment; evaluate, merge, serve.",
        epilog="example:\n  " + EXAMPLES["run"],
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"finsent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str, sections: tuple[str, ...] = (), **arguments: dict):
        """A subcommand: its own arguments (name -> add_argument options), then its config sections."""
        p = sub.add_parser(
            name, help=help, description=help, epilog="example:\n  " + EXAMPLES[name], formatter_class=_Help
        )
        p.set_defaults(func=func)
        taken = {"--help", "-h"}
        for arg, options in arguments.items():
            flags = [arg] if not arg.startswith("--") else _spellings(arg)
            p.add_argument(*flags, **options)
            taken.update(flags)
        _add_config_flags(p, sections, taken)
        return p

    config = {"help": "YAML config file (see configs/)"}
    out_dir = {"required": True, "metavar": "DIR", "help": "output folder"}
    batch = {"type": _number(int, 1), "default": 32, "help": "sentences per forward pass"}
    adapter = {"help": "a LoRA adapter folder (its saved config supplies model, labels, template)"}
    priors = {
        "help": "label shares of the texts, for data not balanced like the training split: one per label "
        "('0.15,0.7,0.15' or 'neutral=0.7,positive=0.15,negative=0.15'), or auto (estimated on the input by "
        "EM; per request in serve); probabilities are re-weighted, so predictions may change"
    }

    command(
        "data",
        cmd_data,
        "read, check and split a data set; export the splits as CSV",
        COMMAND_SECTIONS["data"],
        **{"--export": {"metavar": "DIR", "help": "write train.csv, eval.csv, test.csv here"}},
    )
    command(
        "evaluate",
        cmd_evaluate,
        "accuracy, F1 and confusion matrix of a model on a split",
        COMMAND_SECTIONS["evaluate"],
        **{
            "--config": config,
            "--adapter": adapter,
            "--subset": {"default": "test", "choices": ("train", "eval", "test"), "help": "which split"},
            "--method": {
                "default": "score",
                "choices": ("score", "generate"),
                "help": "score: full label likelihoods; generate: the notebooks' one-token generation",
            },
            "--batch-size": batch,
            "--priors": priors,
            "--limit": {
                "type": _number(int, 0),
                "default": 0,
                "help": "only the first N sentences of the split (0 = all)",
            },
            "--out": out_dir,
        },
    )
    command(
        "train",
        cmd_train,
        "LoRA/QLoRA fine-tuning with TRL's SFTTrainer",
        COMMAND_SECTIONS["train"],
        **{
            "--config": config,
            "--dry-run": {
                "action": "store_true",
                "help": "resolve everything without weights: parameters, optimizer steps, memory per device",
            },
            "--num-processes": {
                "type": _number(int, 1),
                "default": None,
                "help": "with --dry-run: processes (devices) in all (None: the accelerate config's, else 1)",
            },
            "--strategy": {
                "choices": ("ddp", "fsdp", "zero3"),
                "default": None,
                "help": "with --dry-run: ddp replicates on every device, fsdp / zero3 shard (None: ddp)",
            },
            "--accelerate-config": {
                "metavar": "FILE",
                "default": None,
                "help": "with --dry-run: take processes and sharding from this accelerate config file",
            },
        },
    )
    command(
        "merge",
        cmd_merge,
        "merge an adapter into its base in full precision, with a parity check",
        COMMAND_SECTIONS["merge"],
        **{
            "--adapter": {"required": True, "help": "adapter folder (from finsent train)"},
            "--out": {"required": True, "metavar": "DIR", "help": "where the merged model goes"},
            "--min-agreement": {
                "type": _number(float, 0, 1),
                "default": MERGE_MIN_AGREEMENT,
                "help": "fail unless merged and adapter predictions agree on this share of the eval split",
            },
        },
    )
    command(
        "run",
        cmd_run,
        "the whole notebook: split, zero-shot, train, evaluate, merge, report",
        COMMAND_SECTIONS["run"],
        **{"--config": config, "--out": out_dir, "--batch-size": batch},
    )
    command(
        "predict",
        cmd_predict,
        "classify texts, a CSV/JSONL/TXT file, or stdin",
        COMMAND_SECTIONS["predict"],
        **{
            "texts": {"nargs": "*", "help": "texts to classify (else --input, else stdin)"},
            "--config": config,
            "--adapter": adapter,
            "--input": {"help": "CSV/TSV (header row), JSONL or TXT file; '-' for stdin"},
            "--output": {"help": "CSV or JSONL file (by suffix); CSV on stdout when omitted"},
            "--text-column": {"default": "text", "help": "text column of a CSV/JSONL input"},
            "--id-column": {"help": "column copied to the output (default: id or source_row when present)"},
            "--strict": {"action": "store_true", "help": "stop at the first bad row instead of skipping it"},
            "--shard-rows": {
                "type": _number(int, 1),
                "help": "rows per shard of a resumable run in OUTPUT.shards/ (default under torchrun: 10000)",
            },
            "--max-tokens": {
                "type": _number(int, 1),
                "help": "prompt tokens per text; a longer one is a bad row (default: the model's context)",
            },
            "--priors": priors,
            "--batch-size": batch,
        },
    )
    command(
        "serve",
        cmd_serve,
        "HTTP service: POST /v1/classify, GET /v1/model, a page at /",
        COMMAND_SECTIONS["serve"],
        **{
            "--config": config,
            "--adapter": adapter,
            "--host": {"default": "127.0.0.1", "help": "address to bind (loopback unless you mean it)"},
            "--port": {"type": _number(int, 0, 65535), "default": 8000, "help": "TCP port"},
            "--max-texts": {"type": _number(int, 1), "default": 64, "help": "texts per request"},
            "--max-chars": {"type": _number(int, 1), "default": 2000, "help": "characters per text"},
            "--max-body": {"type": _number(int, 1), "default": 1_000_000, "help": "bytes per request body"},
            "--max-batch": {
                "type": _number(int, 1),
                "default": 64,
                "help": "texts per forward pass across requests",
            },
            "--max-tokens": {
                "type": _number(int, 1),
                "default": 1024,
                "help": "prompt tokens per text (also capped by the model's context length)",
            },
            "--max-request-tokens": {
                "type": _number(int, 1),
                "default": 16384,
                "help": "prompt tokens per request and per forward pass",
            },
            "--max-queue": {"type": _number(int, 1), "default": 512, "help": "texts waiting for the model"},
            "--timeout": {
                "type": _number(float, 0.001),
                "default": 30.0,
                "help": "seconds a request may wait for its answer (then 504)",
            },
            "--priors": priors,
            "--batch-size": batch,
        },
    )
    command(
        "export",
        cmd_export,
        "export a merged Llama model to GGUF (llama.cpp, Ollama) with a parity check",
        COMMAND_SECTIONS["export"],
        **{
            "--format": {"default": "gguf", "choices": ("gguf",), "help": "file format"},
            "--out": {"required": True, "metavar": "FILE.gguf", "help": "the GGUF file to write"},
            "--min-agreement": {
                "type": _number(float, 0, 1),
                "help": "required share of identical predictions (default: 99.5%% for f16/bf16, 98%% for q8_0)",
            },
            "--dtype": {
                "dest": "gguf_dtype",
                "default": "f16",
                "choices": GGUF_DTYPES,
                "help": "GGUF tensor type",
            },
        },
    )
    command(
        "push",
        cmd_push,
        "upload an adapter, merged model or GGUF folder with its model card to the Hugging Face Hub",
        **{
            "folder": {"metavar": "DIR", "help": "adapter, merged model or GGUF folder"},
            "--repo-id": {"required": True, "help": "hub repository, user/name (created when missing)"},
            "--private": {"action": "store_true", "help": "create the repository private"},
            "--revision": {"help": "branch to commit to, created when missing (None: main)"},
            "--commit-message": {"help": "commit message (None: one naming what was pushed)"},
            "--dry-run": {
                "action": "store_true",
                "help": "list the files, sizes and total that would be uploaded; no network",
            },
        },
    )
    command(
        "env",
        cmd_env,
        "versions, device and dtype finsent would use: what to paste into a bug report",
        **{"--json": {"action": "store_true", "help": "print JSON"}},
    )
    return parser


def cmd_data(args) -> int:
    from finsent.data.splits import counts_table, export_splits, make_splits

    cfg = resolve_config(args)
    ds, splits = make_splits(cfg.data)
    print(f"{ds.path}: {len(ds.examples)} usable rows")
    for flaw in ds.flaws():
        print(f"  {flaw}")
    print(counts_table(splits, cfg.data.labels))
    if args.export:
        from finsent.core.config import save_config

        for path in export_splits(splits, args.export):
            print(f"wrote {path}")
        save_config(cfg, args.export)
    return 0


def cmd_evaluate(args) -> int:
    from finsent.core.config import save_config
    from finsent.core.prompts import PromptCodec
    from finsent.data.splits import make_splits
    from finsent.evaluation.evaluate import run_evaluation, write_evaluation
    from finsent.modeling.calibration import Calibration, parse_priors
    from finsent.modeling.load import load_model

    cfg = resolve_config(args)
    ds, splits = make_splits(cfg.data)
    for flaw in ds.flaws():
        print(f"data: {flaw}", file=sys.stderr)
    examples = splits[args.subset][: args.limit or None]
    priors = parse_priors(args.priors, cfg.data.labels)
    model, tokenizer, device = load_model(cfg.model, args.adapter)
    codec = PromptCodec.from_config(cfg, tokenizer)
    calibration = Calibration.load(args.adapter or cfg.model.model)
    metrics, preds, probs = run_evaluation(
        model, codec, examples, args.batch_size, args.method, calibration=calibration, priors=priors
    )
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
    spread = (args.num_processes, args.strategy, args.accelerate_config)
    if not args.dry_run and any(x is not None for x in spread):
        raise FinsentError(
            "--num-processes, --strategy and --accelerate-config go with --dry-run; to train on many "
            "devices: accelerate launch --config_file FILE -m finsent train ..."
        )
    if args.dry_run:
        from finsent.training.dryrun import dry_run, parallelism, report

        par = parallelism(args.num_processes, args.strategy, args.accelerate_config)
        print(report(cfg, dry_run(cfg, par)))
        return 0
    from finsent.training.train import train

    folder = train(cfg)
    print(f"{'model' if cfg.train.method == 'full' else 'adapter'} saved to {folder}")
    return 0


def cmd_merge(args) -> int:
    from finsent.deploy.merge import merge

    cfg = resolve_config(args)
    merge(cfg, args.adapter, args.out, args.min_agreement)
    print(f"merged model saved to {args.out}")
    return 0


def cmd_run(args) -> int:
    from finsent.pipeline.run import run

    run(resolve_config(args), args.out, args.batch_size)
    return 0


def _classifier(args):
    from finsent.serving.api import Classifier

    return Classifier.from_config(resolve_config(args), args.adapter, args.batch_size, args.priors)


def cmd_predict(args) -> int:
    from finsent.serving.predict import predict
    from finsent.serving.sharded import use_local_gpu

    if not args.texts and args.input is None and sys.stdin.isatty():
        raise FinsentError("no input: pass texts, --input FILE, or pipe text on stdin")
    use_local_gpu()  # under torchrun: this process's own GPU (LOCAL_RANK), before the model loads
    summary = predict(
        _classifier(args),
        args.texts,
        args.input,
        args.output,
        args.text_column,
        args.id_column,
        args.strict,
        shard_rows=args.shard_rows,
        adapter=args.adapter,
        max_tokens=args.max_tokens,
    )
    return 0 if summary["predicted"] or not summary["bad"] else 1


def cmd_serve(args) -> int:
    from finsent.serving.app import serve
    from finsent.serving.errors import Limits

    serve(
        _classifier(args),
        args.host,
        args.port,
        Limits(
            max_texts=args.max_texts,
            max_chars=args.max_chars,
            max_body=args.max_body,
            max_batch=args.max_batch,
            max_tokens=args.max_tokens,
            max_request_tokens=args.max_request_tokens,
            max_queue=args.max_queue,
            timeout=args.timeout,
        ),
    )
    return 0


def cmd_export(args) -> int:
    from finsent.deploy.export import export

    cfg = resolve_config(args)
    export(cfg, cfg.model.model, args.out, args.gguf_dtype, min_agreement=args.min_agreement)
    return 0


def cmd_push(args) -> int:
    from finsent.deploy.push import push

    push(args.folder, args.repo_id, args.private, args.revision, args.commit_message, args.dry_run)
    return 0


def cmd_env(args) -> int:
    from finsent.modeling.device import describe_environment

    info = describe_environment()
    if args.json:
        import json

        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except FinsentError as e:
        print(f"finsent {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `finsent predict ... | head`: the reader has gone; stop quietly, as a shell tool does (the
        # interpreter's final flush of stdout would raise again, so stdout now points at /dev/null)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
