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

import os
import sys

# the command table: name -> module under finsent.cli, in the order `finsent --help` lists them
COMMANDS = {
    "data": "finsent.cli.data",
    "evaluate": "finsent.cli.evaluate",
    "bench": "finsent.cli.bench",
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
    from finsent.cli.flags import parse
    from finsent.core.config import resolve
    from finsent.core.errors import FinsentError

    command, module, args, overrides = parse(COMMANDS, argv)
    try:
        cfg = None
        if getattr(module, "SECTIONS", ()):
            # flags > --config FILE > the config saved beside --adapter (or the --model folder) > defaults
            cfg = resolve(getattr(args, "config", None), overrides, getattr(args, "adapter", None))
        return module.main(args, cfg) or 0
    except FinsentError as e:
        print(f"finsent {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `finsent predict ... | head`: the reader has gone; stop quietly, as a shell tool does (the
        # interpreter's final flush of stdout would raise again, so stdout now points at /dev/null)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        # a write the machine refused outside finsent's own writers (a library's save, a log file): a full
        # disk or a read-only --out is one line naming the file, as inside them (fsio.write_failure)
        from finsent.core.fsio import write_failure

        err = write_failure(e, None)
        if err is None:
            raise
        print(f"finsent {command}: error: {err}", file=sys.stderr)
        return 2
