"""A GGUF's parity record: the one rule for whether a file in a folder is the file export checked.

Export writes `NAME.parity.json` (agreement, size, SHA-256) only once `NAME.gguf` passed; push sends a
GGUF only with such a record, and the model card lists every GGUF that has one (a folder often holds
several exports of one model, f16 beside q4_k_m)."""

from __future__ import annotations

import json
from pathlib import Path

from finsent.core.artefacts import PARITY_SUFFIX
from finsent.core.errors import FinsentError


def certified(gguf: str | Path, check_hash: bool = True) -> dict:
    """`gguf`'s passing parity record, or a one-line FinsentError saying why it has none: no record, a
    failed one, or a record for a file of another size or (`check_hash`) other bytes."""
    from finsent.core.fsio import sha256_of

    gguf = Path(gguf)
    record = gguf.with_suffix(PARITY_SUFFIX)
    try:
        parity = json.loads(record.read_text())
    except (OSError, ValueError):
        parity = None
    if not isinstance(parity, dict) or not parity.get("passed"):
        raise FinsentError(f"{gguf}: no passing parity record ({record.name}); export it with finsent export")
    size = gguf.stat().st_size
    if parity.get("bytes") != size:
        raise FinsentError(
            f"{gguf}: {size} bytes, but its parity record ({record.name}) checked a file of "
            f"{parity.get('bytes')}; export it again"
        )
    # (records older than the hash hold the size only)
    if check_hash and "sha256" in parity and parity["sha256"] != sha256_of(gguf):
        raise FinsentError(f"{gguf}: not the file its parity record ({record.name}) checked; export it again")
    return parity


def certified_in(folder: str | Path, check_hash: bool = False) -> dict[str, dict]:
    """{file name: parity record} of every visible GGUF in `folder` that has a passing record."""
    found = {}
    for gguf in sorted(Path(folder).glob("*.gguf")):
        if gguf.name.startswith("."):
            continue
        try:
            found[gguf.name] = certified(gguf, check_hash)
        except (FinsentError, OSError):
            continue
    return found
