"""What an option is and how its values are read and checked, wherever they come from (a YAML file, a
flag, a saved config): `opt` declares a field with its help, alias, choices and range; `coerce` reads a
value as the field's type; `out_of_range` and `not_a_choice` are the one validator. The options
themselves are the dataclasses of `options.py`."""

from __future__ import annotations

import types
import typing
from dataclasses import field
from typing import Any

from finsent.core.errors import FinsentError

# Earlier names of option values, still accepted and saved under today's name: the notebooks' split and
# prompt were both called "seed" before they were called "notebook" (data.split, prompt.template).
EARLIER_NAMES = {"seed": "notebook"}


def opt(
    default: Any,
    help: str,
    alias: str | None = None,
    choices: tuple | None = None,
    renamed: dict[str, str] | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    metavar: str | None = None,
    required: bool = False,
    positional: bool = False,
    affects_outputs: bool = True,
) -> Any:
    """A dataclass field carrying its CLI help text, and optionally a short flag, its choices,
    `renamed` (earlier names of values, still accepted and saved under the current name) and its range
    (`at_least` <= value < `below`, or <= `at_most`), checked wherever the value comes from.

    `affects_outputs=False` marks an option that says how to run, not what comes out (a device, a log
    interval, an output folder): a run may be resumed, and shards of a sharded predict reused, across a
    change of it. `outputs_only` derives both from this one mark.

    The command options of `finsent.cli` use the same fields, with `metavar`, `required` and
    `positional` (a list field: any number of positional values) for their flags."""
    meta = {
        "help": help,
        "alias": alias,
        "choices": choices,
        "renamed": renamed or {},
        "at_least": at_least,
        "below": below,
        "at_most": at_most,
        "metavar": metavar,
        "required": required,
        "positional": positional,
        "affects_outputs": affects_outputs,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def out_of_range(meta: dict, value: Any) -> str | None:
    """The one range check of an option (a config field or a command's own flag, from a file or the
    command line): None when `value` is in range, else the reason in the words every source uses."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    low, below, high = meta.get("at_least"), meta.get("below"), meta.get("at_most")
    if (low is None or value >= low) and (below is None or value < below) and (high is None or value <= high):
        return None
    parts = []
    if low is not None:
        parts.append("above 0" if 0 < low < 1e-6 else f"at least {low:g}")
    if high is not None:
        parts.append(f"at most {high:g}")
    if below is not None:
        parts.append(f"below {below:g}")
    return f"{value:g} is out of range (must be {' and '.join(parts)})"


def not_a_choice(meta: dict, value: Any) -> str | None:
    """None when `value` is one of the option's choices or an earlier name of one, else the reason."""
    choices = meta.get("choices")
    if not choices or value in (*choices, *(meta.get("renamed") or {})):
        return None
    return f"{value!r} is not one of {', '.join(choices)}"


def current_name(meta: dict, value: Any) -> Any:
    """An earlier name of a value (`renamed`) as today's name; any other value as it is."""
    return (meta.get("renamed") or {}).get(value, value) if isinstance(value, str) else value


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Turn a YAML or command-line value into the field's type, or fail naming the field."""
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ in (int, float) and isinstance(value, bool):  # YAML `r: true` is no number (int(True) is 1)
            raise ValueError(value)
        if typ is int:
            number = float(value) if isinstance(value, str) and "e" in value.lower() else value
            if isinstance(number, float) and not number.is_integer():  # 1.5 or 1.5e0 is no int
                raise ValueError(value)
            return int(number)
        if typ is float:
            return float(value)
        if typ is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        if typ is dict:
            if isinstance(value, str):
                import yaml

                try:
                    value = yaml.safe_load(value) if value.strip() else {}
                except yaml.YAMLError as e:
                    raise FinsentError(f"{where}: not a YAML mapping ({str(e).splitlines()[0]})") from None
            if not isinstance(value, dict):
                raise ValueError(value)
            return {str(k): v for k, v in value.items()}
        if typ is str:
            if isinstance(value, list):
                return ",".join(map(str, value))
            if isinstance(value, dict):
                return ",".join(f"{k}={v}" for k, v in value.items())
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise FinsentError(f"{where}: cannot read {value!r} as {typ.__name__}") from None
    return value
