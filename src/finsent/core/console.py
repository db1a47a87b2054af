"""What long work prints: progress bars and notes, on stderr so that stdout stays the result."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str):
    """A tqdm bar counting sentences (total 0 = unknown, as when streaming a file)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sent", file=sys.stderr, dynamic_ncols=True, leave=False)


def note(msg: str) -> None:
    """A one-line remark about a choice finsent made for the user (a CPU fallback, an option ignored)."""
    print(f"note: {msg}", file=sys.stderr)
