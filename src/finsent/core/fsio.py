"""Files: atomic output (a temporary file beside the target, then a rename) and finsent's cache folder.

A killed run never leaves a half-written metrics.json or predictions.csv behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finsent.core.artefacts import REJECTED_NOTE, REJECTED_SUFFIX


def cache_root() -> Path:
    """Where converted models and downloaded data are cached: $FINSENT_CACHE or ~/.cache/finsent."""
    return Path(os.environ.get("FINSENT_CACHE") or Path.home() / ".cache" / "finsent")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); an output gets the user's normal mode, as open() would give
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (an earlier folder there is
    removed only after the new one is in place), on failure it is deleted. A kill leaves at most a
    hidden `.NAME.partial-*` folder, never a half-written model under the real name."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def reject(path: str | os.PathLike, reason: str) -> Path:
    """Move a model that failed its check out of the way (`NAME.rejected`, with REJECTED.txt inside a
    folder or beside a file), so that nothing under the accepted name looks certified."""
    import shutil

    path = Path(path)
    target = path.with_name(path.name + REJECTED_SUFFIX)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(path, target)
    note = target / REJECTED_NOTE if target.is_dir() else target.with_name(target.name + ".txt")
    write_text(note, reason + "\n")
    return target


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: set it straight back
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
