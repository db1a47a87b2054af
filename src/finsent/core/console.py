"""What long work prints: progress bars and notes, on stderr so that stdout stays the result."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str):
    """A tqdm bar counting sentences (total 0 = unknown, as when streaming a file)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sent", file=sys.stderr, dynamic_ncols=True, leave=False)


_said: set[str] = set()


def note(msg: str) -> None:
    """A one-line remark about a choice finsent made for the user (a CPU fallback, an option ignored),
    once per process: a command that checks its options before a stage checks them again gets it once."""
    if msg in _said:
        return
    _said.add(msg)
    print(f"note: {msg}", file=sys.stderr)
