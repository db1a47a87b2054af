"""The CLI reference in Markdown, generated from the same dataclasses as the flags (docs/hooks.py puts it
into the docs site at build time), so the reference cannot drift from the command line."""

from __future__ import annotations

import dataclasses
import importlib

from finsent.cli import COMMANDS
from finsent.cli.flags import spellings
from finsent.core.artefacts import CONFIG_FILE
from finsent.core.config import iter_fields


def _default(f: dataclasses.Field) -> str:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if f.metadata.get("required"):
        return "required"
    return "" if value in (None, "", []) else f"`{value!r}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _help(f: dataclasses.Field) -> str:
    meta = f.metadata
    text = meta.get("help", "")
    if meta.get("choices"):
        text = text.rstrip(".") + ". One of: " + ", ".join(f"`{c}`" for c in meta["choices"]) + "."
    return _cell(text)


def command_markdown(name: str) -> list[str]:
    mod = importlib.import_module(COMMANDS[name])
    lines = [f"## finsent {name}", "", mod.HELP[0].upper() + mod.HELP[1:] + ".", "", "```bash"]
    lines += [line.strip() for line in mod.EXAMPLE.splitlines()] + ["```", ""]
    lines += ["| option | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(mod.Args):
        flag = f.name if f.metadata.get("positional") else spellings("--" + f.name.replace("_", "-"))[0]
        lines.append(f"| `{flag}` | {_default(f)} | {_help(f)} |")
    sections = getattr(mod, "SECTIONS", ())
    if sections:
        names = ", ".join(f"`{s}`" for s in sections)
        lines += [
            "",
            f"Config options ({names}; [below](#config-options)) as `--section.field VALUE` or in "
            "`--config FILE`; `--help` lists those with a short flag, `--help-all` all of them.",
        ]
    refused = getattr(mod, "REFUSED", {})
    if refused:
        lines += [
            "",
            "Refused with a hint: " + "; ".join(f"`{k}` (use {v})" for k, v in refused.items()) + ".",
        ]
    return lines + [""]


def config_markdown() -> list[str]:
    lines = [
        "## Config options",
        "",
        "Set in a YAML file (`--config FILE`, sections as below), or as flags `--section.field VALUE`; "
        "the short flag, where there is one, works too. The resolved options are saved beside every "
        f"output as `{CONFIG_FILE}`.",
    ]
    current = None
    for sec, f in iter_fields():
        if sec != current:
            current = sec
            lines += [
                "",
                f"### {sec}",
                "",
                "| option | short flag | default | meaning |",
                "|---|---|---|---|",
            ]
        alias = f"`{f.metadata['alias']}`" if f.metadata.get("alias") else ""
        lines.append(f"| `{sec}.{f.name}` | {alias} | {_default(f)} | {_help(f)} |")
    return lines + [""]


def markdown() -> str:
    lines = []
    for name in COMMANDS:
        lines += command_markdown(name)
    return "\n".join(lines + config_markdown())
