"""Files: atomic output (a temporary file beside the target, then a rename), what a failed write means
(a full disk, a read-only folder: one line naming the file), and finsent's cache folder.

A killed run never leaves a half-written metrics.json or predictions.csv behind, and neither does a
write that fails: the temporary file or folder is removed and the error names the output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finsent.core.artefacts import REJECTED_NOTE, REJECTED_SUFFIX
from finsent.core.errors import FinsentError

# the failures of a write that are the machine's state, not a bug: (what happened, what to do)
_ROOM = "free some space (or choose another --out) and rerun"
_READ_ONLY = "choose an --out you can write to"
_RIGHTS = "check its permissions, or choose another --out"
_IN_THE_WAY = "choose another --out"
WRITE_ERRNOS = {
    errno.ENOSPC: ("no space left on device", _ROOM),
    errno.EDQUOT: ("disk quota exceeded", _ROOM),
    errno.EROFS: ("read-only file system", _READ_ONLY),
    errno.EACCES: ("permission denied", _RIGHTS),
    errno.EPERM: ("operation not permitted", _RIGHTS),
    # a path whose kind is wrong: a file where a folder goes (mkdir's EEXIST, ENOTDIR), or the reverse
    errno.EEXIST: ("a file is in the way of a folder", _IN_THE_WAY),
    errno.ENOTDIR: ("a file is in the way of a folder", _IN_THE_WAY),
    errno.EISDIR: ("it is a folder, where a file goes", _IN_THE_WAY),
}
# what makes a folder a model (transformers' and PEFT's configs, not finsent's names): no evaluation,
# bench or split export writes into one, since its finsent_config.yaml and metrics.json would replace
# the model's own
MODEL_MARKERS = ("config.json", "adapter_config.json")
# below this many free bytes, an unexplained failure of a writer is taken for a full disk: torch.save
# reports ENOSPC as "RuntimeError: ... unexpected pos 576 vs 534", with no errno anywhere
NEARLY_FULL = 1 << 20


def out_folder(
    path: str | os.PathLike,
    option: str = "--out",
    shown: str | os.PathLike | None = None,
    model_ok: bool = True,
) -> Path:
    """`path` checked as an output folder before any work (otherwise a command that scores first would
    fail only when it writes): refused at once when it is empty, when it or a folder above it is a file,
    or when no file can be made in the nearest folder that exists; with `model_ok=False`, also when it
    holds a model (MODEL_MARKERS). `shown`: the path the user gave, when `path` is the folder of an
    output file."""
    if not str(path).strip():
        raise FinsentError(f"{option} is empty: name a folder")
    path = Path(path)
    shown = Path(shown) if shown is not None else path
    for p in (path, *path.absolute().parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == shown else f"lies under {p}, which is a file"
                raise FinsentError(f"{option} {shown}: {what}, not a folder; choose another {option}")
            _probe(p, option, shown)
            break
    marker = next((m for m in MODEL_MARKERS if (path / m).is_file()), None)
    if not model_ok and marker:
        raise FinsentError(
            f"{option} {shown}: holds a model ({marker}), whose own files this output would replace; "
            f"choose another {option}"
        )
    return path


def _probe(folder: Path, option: str, shown: Path) -> None:
    """A file made and removed in `folder`: a read-only, forbidden or virtual (/proc) place is refused
    before any work, not after it (the check a later mkdir or write would otherwise make)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".finsent-probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:  # as write_failure words it, with ENOENT's /proc and the like too
        reason, advice = WRITE_ERRNOS.get(e.errno, (e.strerror or type(e).__name__, _IN_THE_WAY))
        where = "" if folder == shown else f" (in {folder})"
        raise FinsentError(
            f"cannot write {shown}: {reason}{where}; {advice.replace('--out', option)}"
        ) from None


def sha256_of(path: str | os.PathLike) -> str:
    """A file's SHA-256, read in 1 MiB blocks (a parity record names the very file it checked)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_root() -> Path:
    """Where converted models and downloaded data are cached: $FINSENT_CACHE or ~/.cache/finsent."""
    return Path(os.environ.get("FINSENT_CACHE") or Path.home() / ".cache" / "finsent")


def write_failure(
    exc: BaseException, target: str | os.PathLike | None, advice: str | None = None
) -> FinsentError | None:
    """`exc` as one line naming `target` when it is a write the machine refused (a full disk, a quota, a
    read-only or forbidden folder), else None (a bug keeps its traceback). An errno anywhere in the
    exception's chain counts, and so does its text where a library words it without one (safetensors:
    "No space left on device (os error 28)"); an unexplained RuntimeError or OSError while the target's
    filesystem is nearly full counts as a full disk. `advice` replaces the usual what-to-do."""
    if isinstance(exc, FinsentError) or not isinstance(exc, Exception):
        return None
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    code = next((e.errno for e in chain if isinstance(e, OSError) and e.errno in WRITE_ERRNOS), None)
    text = " ".join(str(e) for e in chain)
    for n in WRITE_ERRNOS:
        if code is None and (os.strerror(n) in text or f"os error {n})" in text):
            code = n
    # an OSError with another errno is explained by it (ENOENT under /proc, whose free space reads 0)
    explained = any(isinstance(e, OSError) and e.errno for e in chain)
    if (
        code is None
        and not explained
        and isinstance(chain[0], (RuntimeError, OSError))
        and _free_bytes(target) < NEARLY_FULL
    ):
        code = errno.ENOSPC
    if code is None:
        return None
    reason, usual = WRITE_ERRNOS[code]
    first = chain[0]
    name = str(first.filename) if isinstance(first, OSError) and first.filename else ""
    if target is None and name:  # the file is all that is known (the CLI's last resort): maybe a read
        where, detail = f"{name}: {reason}", ""
    else:
        where = f"cannot write {target}: {reason}" if target else reason
        detail = name if isinstance(first, OSError) else f"{type(first).__name__}: {first}"
        # the target's own temporary file (`.NAME.*`) says nothing more than the target
        own = Path(detail).parent == Path(target).parent and Path(detail).name.startswith(
            f".{Path(target).name}."
        )
        detail = "" if own or detail == str(target) else " ".join(detail.split())[:200]  # one line, always
    return FinsentError(f"{where}{f' ({detail})' if detail else ''}; {advice or usual}")


def _free_bytes(target) -> int:
    """Bytes an unprivileged writer may still use on `target`'s filesystem (its nearest existing folder)."""
    if not target:
        return NEARLY_FULL
    path = Path(target).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return NEARLY_FULL
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def write_errors(target: str | os.PathLike, advice: str | None = None) -> Iterator[None]:
    """Inside: a write the machine refuses becomes one line naming `target` (write_failure)."""
    try:
        yield
    except Exception as e:
        err = write_failure(e, target, advice)
        if err is None:
            raise
        raise err from e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path`. A failure (a full
    disk included) removes the temporary file: nothing partial under any name."""
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    try:
        with write_errors(path):  # judged before the cleanup frees the space
            # mkstemp makes the file private (0600); an output gets the user's normal mode, as open() would
            os.chmod(tmp, 0o666 & ~_umask())
            yield Path(tmp)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, judge: bool = True, advice: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (an earlier folder there is
    removed only after the new one is in place), on failure it is deleted. A kill leaves at most a
    hidden `.NAME.partial-*` folder, never a half-written model under the real name. `judge=False`: an
    OSError inside the block is not reported as a write to `path` (a caller that also loads and scores
    there wraps its own writes in write_errors). `advice`: what to do, in place of the usual."""
    import shutil

    path = Path(path)
    with write_errors(path, advice):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        with write_errors(path, advice) if judge else contextlib.nullcontext():
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
        with write_errors(path, advice):  # judged before the cleanup frees the space
            _usual_modes(tmp)
            old = None
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except OSError:
                if old:  # the earlier folder goes back under its name
                    os.replace(old / path.name, path)
                    old.rmdir()
                raise
            if old:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(*folders: str | os.PathLike, name: str | None = None) -> list[str]:
    """Remove what killed writers left in `folders` (not below): atomic_path's `.NAME.*.tmp` files and
    atomic_dir's `.NAME.partial-*` and `.NAME.old-*` folders (a cut-off model copy can be as large as the
    model); with `name`, only that NAME's. Only for a caller holding the folders' lock (core/lock.py), or
    NAME's (a lock beside it): another writer's temporaries would go too. Returns the names removed."""
    import re
    import shutil

    stem = re.escape(name) if name else ".+"
    removed = []
    for folder in map(Path, folders):
        for p in folder.iterdir() if folder.is_dir() else ():
            if p.is_dir() and not p.is_symlink() and re.fullmatch(rf"\.{stem}\.(partial|old)-\w+", p.name):
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file() and re.fullmatch(rf"\.{stem}\.\w+\.tmp", p.name):
                p.unlink(missing_ok=True)
            else:
                continue
            removed.append(p.name)
    return removed


def reject(path: str | os.PathLike, reason: str, name: str | os.PathLike | None = None) -> Path:
    """Move a model that failed its check out of the way (`NAME.rejected`, with REJECTED.txt inside a
    folder or beside a file), so that nothing under the accepted name looks certified. `name` is the
    accepted name when `path` is a staging folder (atomic_dir's) that was to take it."""
    import shutil

    path = Path(path)
    accepted = Path(name) if name is not None else path
    target = accepted.with_name(accepted.name + REJECTED_SUFFIX)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(path, target)
    note = target / REJECTED_NOTE if target.is_dir() else target.with_name(target.name + ".txt")
    write_text(note, reason.replace(str(path), str(target)) + "\n")  # where it lies now
    return target


def _usual_modes(folder: Path) -> None:
    """Files a library wrote private (transformers' safetensors: 0600, through a temporary file of its
    own) get the user's normal mode, as every other output does."""
    usual = 0o666 & ~_umask()
    for f in folder.rglob("*"):
        if f.is_file() and not f.is_symlink() and f.stat().st_mode & 0o777 == 0o600 and usual != 0o600:
            os.chmod(f, usual)


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
