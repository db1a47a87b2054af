"""One writer per output: an advisory lock that a second finsent run into the same place is refused by.

    with hold(out, "train"):              # OUT/.finsent.lock, for a folder written in place
        ...
    with hold(out_file, "predict", beside=True):   # .NAME.finsent.lock beside a file (or folder) replaced whole

The lock is fcntl.flock on a small file that names the holder (PID, command, start time). The kernel
drops it when the holder's file descriptor closes, so a run killed by anything, SIGKILL included, leaves
no lock behind: the next run takes it at once and can --resume. A second run is refused at once, in one
line naming the folder and the PID, never queued and never interleaved. Within one process the lock is
re-entrant (`finsent run` holds its folder, then its training holds OUT/train), and it is released, and its
file removed, when the outermost holder leaves.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

from finsent.core.artefacts import LOCK_FILE
from finsent.core.errors import FinsentError

# lock file -> [file descriptor, depth]: what this process holds
_held: dict[str, list[int]] = {}
# a filesystem without flock (some network and FUSE mounts): run unlocked, and say so
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_path(path: str | os.PathLike, beside: bool = False) -> Path:
    """The lock file of `path`: inside the folder, or (`beside`) next to a file or a folder that is
    replaced whole (a lock inside would be renamed away with the old folder)."""
    path = Path(path).absolute()
    return path.with_name(f".{path.name}{LOCK_FILE}") if beside else path / LOCK_FILE


@contextlib.contextmanager
def hold(path: str | os.PathLike, command: str, *, beside: bool = False) -> Iterator[Path]:
    """Hold `path`'s lock for the block (creating the folder it lives in); FinsentError at once when
    another process holds it. Yields the lock file."""
    from finsent.core.fsio import out_folder, write_errors

    # a file where the output folder goes (beside: where the output's folder goes): one line, before the
    # lock is made
    out_folder(Path(path).parent, shown=path) if beside else out_folder(path)
    lock = lock_path(path, beside)
    key = str(lock)
    if key in _held:  # this process already holds it (a stage of a command that holds it too)
        _held[key][1] += 1
        try:
            yield lock
        finally:
            _held[key][1] -= 1
        return
    made = not lock.parent.exists()
    with write_errors(path):  # a read-only or full --out fails here, before any work
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _take(lock, path, command)
    _held[key] = [fd, 1]
    try:
        yield lock
    finally:
        del _held[key]
        _release(lock, fd, made)


def _take(lock: Path, path, command: str) -> int:
    """Open, lock and stamp the lock file; its descriptor (-1 where the filesystem cannot lock)."""
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FinsentError(
                f"{path} is being written by another finsent ({holder}): two runs never write one place "
                "at once; wait for it to finish or stop it (a stopped run frees it at once), then rerun"
            ) from None
        except OSError as e:
            os.close(fd)
            if e.errno not in _NO_LOCKS:
                raise
            from finsent.core.console import note

            note(
                f"{lock.parent}: this filesystem cannot lock files; a second run into {path} is not prevented"
            )
            return -1
        # the holder before us may have removed the file as it let go: then lock the file now there
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stamp = f"{os.getpid()} finsent {command} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, stamp, 0)
    return fd


def _holder(fd: int) -> str:
    """'PID 1234, finsent train since ...' from the holder's stamp ('PID unknown' while it writes it)."""
    try:
        pid, _, rest = os.pread(fd, 200, 0).decode("utf-8", "replace").strip().partition(" ")
    except OSError:
        pid, rest = "", ""
    return f"PID {pid}, {rest}" if pid.isdigit() else "PID unknown"


def _release(lock: Path, fd: int, made: bool) -> None:
    """Remove the lock file while still holding it (a waiting process then sees a new file), unlock; and
    remove a folder that taking the lock created and nothing else filled."""
    if fd < 0:
        return
    with contextlib.suppress(OSError):
        os.unlink(lock)
    os.close(fd)
    if made:
        with contextlib.suppress(OSError):
            lock.parent.rmdir()  # only when empty
