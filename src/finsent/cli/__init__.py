"""The `finsent` command: a table of commands, one module each, flags built from option dataclasses.

    finsent --help
    finsent run --data my.csv --out runs/mine
    finsent train --help-all          # every option, config sections included

Each command module (cli/<command>.py) declares its help line, an example, the config sections it takes
and an `Args` dataclass of its own options, and runs the library. Nothing here holds pipeline logic: the
flags come from those dataclasses and from the option dataclasses in `finsent.core.options` (including
the server's `Limits`), so one source of truth feeds the YAML files, the flags and the CLI reference.
Heavy imports (torch, transformers) happen inside the commands, so --help is instant.
"""

from __future__ import annotations

# the command table: name -> module under finsent.cli, in the order `finsent --help` lists them
COMMANDS = {
    "data": "finsent.cli.data",
    "evaluate": "finsent.cli.evaluate",
    "train": "finsent.cli.train",
    "merge": "finsent.cli.merge",
    "run": "finsent.cli.run",
    "predict": "finsent.cli.predict",
    "serve": "finsent.cli.serve",
    "export": "finsent.cli.export",
    "push": "finsent.cli.push",
    "env": "finsent.cli.env",
}


def main(argv: list[str] | None = None) -> int:
    from finsent.cli.flags import run_command

    return run_command(argv)
