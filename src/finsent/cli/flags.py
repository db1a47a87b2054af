"""Flags from dataclasses: a command's own `Args`, and the option sections of `finsent.core.options`.

argparse stays the engine (one-line usage errors, exit status 2); what it is told comes from the fields'
metadata (`opt`): help text, short alias, choices, range, metavar. `--help` lists a command's own
options and the config options that have a short alias; `--help-all` lists every `--section.field`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from types import ModuleType

from finsent.core.config import iter_fields
from finsent.core.fields import coerce, out_of_range
from finsent.core.version import __version__


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (like every other finsent error) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    """The examples in each command's epilog keep their line breaks."""


class _Bool(argparse.Action):
    """A boolean option: `--x` alone is true, `--no-x` false; the dotted form also takes a value
    (`--train.fast false`), as a YAML file would say it."""

    def __call__(self, parser, namespace, values, option_string=None):
        from finsent.core.errors import FinsentError

        if option_string and option_string.startswith("--no-"):  # (nargs=0: it takes no value)
            value = False
        else:
            try:
                value = True if values is None else coerce(values, bool, option_string or self.dest)
            except FinsentError as e:  # (raised inside argparse: its one-line usage error, exit 2)
                parser.error(str(e))
        setattr(namespace, self.dest, value)


class _Refused(argparse.Action):
    """An old spelling: refused with the new one, so a script written for an older finsent fails loudly."""

    def __init__(self, option_strings, dest, hint: str = "", **kwargs):
        self.hint = hint
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is no longer accepted: use {self.hint}")


class _HelpAll(argparse.Action):
    """--help-all: the command's help with every config option, not only the common ones."""

    def __init__(self, option_strings, dest, command: str = "", commands: dict | None = None, **kwargs):
        self.command, self.commands = command, commands
        super().__init__(option_strings, dest, nargs=0, help="show every option, config sections included")

    def __call__(self, parser, namespace, values, option_string=None):
        build_parser(self.commands, full=True).commands[self.command].print_help()
        parser.exit()


def _checked(kind: type, meta: dict):
    """An argparse type for a command's own number flag, checked by the options' one range check
    (`options.out_of_range`, which `Config.set` applies to every config option, from a file or a flag),
    so both fail in the same words."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        problem = out_of_range(meta, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def spellings(flag: str) -> list[str]:
    """A flag as written and with dashes for underscores (or the reverse): --text-column, --text_column."""
    return list(dict.fromkeys([flag, flag.replace("_", "-"), "--" + flag[2:].replace("-", "_")]))


def _type_name(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def add_args_flags(p: argparse.ArgumentParser, cls: type, taken: set[str]) -> None:
    """One flag per field of a command's `Args` dataclass (`--field-name`), or a positional argument."""
    for f in dataclasses.fields(cls):
        meta, typ = f.metadata, _type_name(f).split(" |")[0]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = meta.get("help", "").replace("%", "%%")
        if default not in (None, False, [], ""):
            help_text += f" (default: {default})"
        kwargs: dict = {"dest": f"arg:{f.name}", "help": help_text}
        if meta.get("positional"):
            nargs = "*" if typ.startswith("list") else None
            p.add_argument(
                f"arg:{f.name}", metavar=meta.get("metavar") or f.name, nargs=nargs, help=help_text
            )
            continue
        flags = spellings("--" + f.name.replace("_", "-"))
        taken.update(flags)
        kwargs["metavar"] = meta.get("metavar") or f.name.upper()
        if typ == "bool":
            kwargs.pop("metavar")
            p.add_argument(*flags, action="store_true", **kwargs)
            continue
        if typ in ("int", "float"):
            kwargs["type"] = _checked(int if typ == "int" else float, meta)
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        p.add_argument(*flags, default=default, required=bool(meta.get("required")), **kwargs)


def add_config_flags(
    p: argparse.ArgumentParser, sections: tuple[str, ...], taken: set[str], full: bool, skip: tuple = ()
) -> None:
    """One flag per option of `sections` (`--section.field`, plus its short alias unless the command
    already uses that name, `taken`). Without `full`, options with no alias parse but are not listed."""
    for sec, f in iter_fields():
        key = f"{sec}.{f.name}"
        if (sec not in sections and key not in sections) or key in skip:
            continue
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        dotted = spellings(f"--{key}")
        short = [s for s in spellings(meta["alias"]) if s not in taken] if meta.get("alias") else []
        taken.update(dotted + short)
        dest = f"cfg:{key}"
        help_text = meta.get("help", "").replace("%", "%%") + f" (default: {default!r})"
        if not (full or short):
            help_text = argparse.SUPPRESS
        if f.type in ("bool", bool):
            p.add_argument(
                *dotted, *short, dest=dest, action=_Bool, nargs="?", metavar="BOOL",
                default=argparse.SUPPRESS, help=help_text,
            )  # fmt: skip
            # the --no- form of every spelling, taking no value (`--no-load-in-4bit TEXT`: TEXT is a text)
            negated = list(dict.fromkeys(f"--no-{x[2:]}" for x in (*short, *dotted)))
            p.add_argument(
                *negated, dest=dest, action=_Bool, nargs=0, default=argparse.SUPPRESS,
                help=argparse.SUPPRESS if help_text == argparse.SUPPRESS else f"the same as {(short or dotted)[0]} false",
            )  # fmt: skip
            continue
        kwargs: dict = {"dest": dest, "default": argparse.SUPPRESS, "metavar": f.name.upper()}
        if meta.get("choices"):
            # earlier names (renamed) are accepted but not advertised
            kwargs["choices"] = (*meta["choices"], *meta.get("renamed", {}))
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        p.add_argument(*dotted, *short, help=help_text, **kwargs)


def build_parser(commands: dict[str, str], full: bool = False) -> argparse.ArgumentParser:
    """The parser of every command in `commands` (name -> module): its own flags from the module's
    `Args`, the config flags of its `SECTIONS`, and its `REFUSED` old spellings."""
    modules = {name: importlib.import_module(path) for name, path in commands.items()}
    parser = _Parser(
        prog="finsent",
        allow_abbrev=False,
        description="Fine-tune Llama-family models with LoRA/QLoRA for financial sentiment; evaluate, merge, "
        "export, serve.",
        epilog="example:\n  " + modules["run"].EXAMPLE + "\n\nfinsent COMMAND --help: its options",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"finsent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}
    for name, mod in modules.items():
        p = sub.add_parser(
            name,
            allow_abbrev=False,  # --train.max_step must not silently mean --train.max_steps
            help=mod.HELP,
            description=mod.HELP,
            epilog="example:\n  " + mod.EXAMPLE,
            formatter_class=_Help,
        )
        taken = {"--help", "-h", "--help-all"}
        add_args_flags(p, mod.Args, taken)
        sections = getattr(mod, "SECTIONS", ())
        if sections:
            p.add_argument("--help-all", action=_HelpAll, command=name, commands=commands)
        refused = getattr(mod, "REFUSED", {})
        taken.update(x for flag in refused for x in spellings(flag))
        add_config_flags(p, sections, taken, full, skip=tuple(k[2:] for k in refused if k[2:] in _keys()))
        for flag, hint in refused.items():
            p.add_argument(*spellings(flag), action=_Refused, hint=hint, dest=f"refused:{flag}")
        parser.commands[name] = p
    return parser


def _keys() -> set[str]:
    return {f"{sec}.{f.name}" for sec, f in iter_fields()}


def parse(commands: dict[str, str], argv: list[str] | None = None) -> tuple[str, ModuleType, object, dict]:
    """(command, its module, its Args, config overrides) from the command line."""
    parser = build_parser(commands)
    ns, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's own parser: `finsent train: error: ...`, its --help
        parser.commands[ns.command].error(f"unrecognized arguments: {' '.join(extra)}")
    mod = importlib.import_module(commands[ns.command])
    own = {k[4:]: v for k, v in vars(ns).items() if k.startswith("arg:")}
    overrides = {k[4:]: v for k, v in vars(ns).items() if k.startswith("cfg:")}
    return ns.command, mod, mod.Args(**own), overrides
