"""A training folder's safety: never train over a run by accident, resume only what is the same run,
and never from a checkpoint that a kill cut off mid-save.

train.output_dir holds a stamp (run_stamp.json: a hash of the resolved options and a fingerprint of the
training data) beside the trainer's checkpoint-N folders. `--resume` continues only when both match;
`--overwrite` clears the folder's training outputs and starts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from finsent.core.artefacts import ADAPTER_DIR, MODEL_DIR, RUN_STAMP, TENSORBOARD_DIR, TRAIN_LOG
from finsent.core.errors import FinsentError

# what a checkpoint needs to be resumed: the trainer writes its state last, but a kill can land anywhere
CHECKPOINT_FILES = ("trainer_state.json", "scheduler.pt")
# the optimizer's state and the weights, in each layout the Trainer writes: one process (optimizer.pt,
# adapter_model.* / model*.safetensors); FSDP's full state dict (optimizer.bin, pytorch_model_fsdp.bin);
# FSDP's sharded state dict (torch.distributed.checkpoint folders optimizer_0/, pytorch_model_fsdp_0/,
# whose .metadata is written last); DeepSpeed (global_stepN/ with *_optim_states.pt, *model_states.pt)
OPTIMIZER_STATES = ("optimizer.pt", "optimizer.bin", "optimizer_0", "global_step*")
WEIGHTS = ("adapter_model.*", "model*.safetensors", "pytorch_model_fsdp*", "global_step*")
# the training folder's own outputs (named in train.py) and TensorBoard's logs
TRAINING_OUTPUTS = (ADAPTER_DIR, MODEL_DIR, TRAIN_LOG, TENSORBOARD_DIR, RUN_STAMP)
# what makes a folder hold a run (with its checkpoints): a run killed or refused before it saved anything
# leaves only its stamp and TensorBoard logs, which a new run replaces without --resume or --overwrite
SAVED = (ADAPTER_DIR, MODEL_DIR, TRAIN_LOG)


def holds_run(out: Path) -> bool:
    """`out` holds a run to protect: a checkpoint, the adapter or model, the log; or a `runs/` folder
    with no stamp beside it (then it is not a finsent run's TensorBoard logs, it is somebody's)."""
    if not out.is_dir():
        return False
    unstamped = (out / TENSORBOARD_DIR).exists() and not (out / RUN_STAMP).is_file()
    return bool(_checkpoints(out)) or any((out / n).exists() for n in SAVED) or unstamped


def _clear_unsaved(out: Path) -> None:
    """A stamped run that saved nothing (killed, or refused after it was stamped): its stamp and logs go."""
    if not (out / RUN_STAMP).is_file() or holds_run(out):
        return
    shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
    (out / RUN_STAMP).unlink()


def check_stamp(out: Path, cfg, splits: dict) -> dict:
    """The stamp of this run; a FinsentError when `out` holds a run of other options or data (which
    --resume must not continue). Checked before anything is written, by train and by finsent run."""
    stamp = {"config_hash": config_hash(cfg), "data_fingerprint": data_fingerprint(splits)}
    if cfg.train.overwrite or not holds_run(out):
        return stamp
    old = json.loads((out / RUN_STAMP).read_text()) if (out / RUN_STAMP).is_file() else {}
    if old.get("config_hash") == config_hash(cfg, as_saved=False):  # a run stamped before saved-config
        old["config_hash"] = stamp["config_hash"]  # hashing: its options as then spelled
    for key, what in (("config_hash", "options"), ("data_fingerprint", "training data")):
        if old.get(key) != stamp[key]:
            raise FinsentError(
                f"--resume: {out} was trained with other {what} ({key} {old.get(key)} here, "
                f"{stamp[key]} now); pass --overwrite to start again, or the same {what}"
            )
    return stamp


def config_hash(cfg, as_saved: bool = True) -> str:
    """A hash of the options that change what is trained: those marked `affects_outputs=False` (a
    device, a log interval, the output folder) may change between a run and its resumption. `as_saved`:
    the options as the run's saved config spells them (core.config.portable: absolute paths, a template
    file's text), so `--config RUN/finsent_config.yaml --resume` is the same run as the command that
    started it."""
    from finsent.core.config import portable
    from finsent.core.options import outputs_only

    d = outputs_only((portable(cfg) if as_saved else cfg).to_dict())
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_fingerprint(splits: dict) -> str:
    h = hashlib.sha256()
    for name in ("train", "eval"):
        for e in splits.get(name, []):
            h.update(f"{name}\t{e.source_row}\t{e.label}\t{e.text}\n".encode())
    return h.hexdigest()[:16]


def _checkpoints(out: Path) -> list[Path]:
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def is_complete(checkpoint: Path) -> str | None:
    """None when `checkpoint` can be resumed from, else why not. Every file is checked whole, not only
    present: a full disk cuts a file off without killing the run that wrote it."""
    import zipfile

    missing = [f for f in CHECKPOINT_FILES if not (checkpoint / f).is_file()]
    for what, patterns in (("optimizer state", OPTIMIZER_STATES), ("weights", WEIGHTS)):
        if not any(any(checkpoint.glob(p)) for p in patterns):
            missing.append(f"its {what} ({' or '.join(patterns)})")
    missing += [f"{d.name}/.metadata" for d in checkpoint.glob("*_fsdp_0") if not (d / ".metadata").is_file()]
    missing += [
        f"{d.name}/.metadata" for d in checkpoint.glob("optimizer_0") if not (d / ".metadata").is_file()
    ]
    missing += [
        f"{d.name}'s states" for d in checkpoint.glob("global_step*") if not any(d.glob("*states.pt"))
    ]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json is cut off"
    # torch.save writes a zip (its directory comes last); safetensors' header gives the file's length
    cut = [f.name for f in checkpoint.glob("*.pt") if not zipfile.is_zipfile(f)]
    cut += [
        f"{f.parent.name}/{f.name}" for f in checkpoint.glob("global_step*/*.pt") if not zipfile.is_zipfile(f)
    ]
    cut += [f.name for f in checkpoint.glob("*.safetensors") if not _whole_safetensors(f)]
    return f"{', '.join(sorted(cut))} cut off" if cut else None


def _whole_safetensors(path: Path) -> bool:
    """The file is as long as its header says (8-byte header length, JSON header, then the tensors)."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def _writing(out: Path, before: set[str]) -> Path | None:
    """The checkpoint a failure cut off mid-save: the newest, new since `before`, with no whole
    trainer_state.json (the trainer writes it last, whatever else it saves)."""
    new = [c for c in _checkpoints(out) if c.name not in before] if out.is_dir() else []
    if not new:
        return None
    try:
        json.loads((new[-1] / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return new[-1]
    return None


@contextlib.contextmanager
def saving(out: Path, owns_folder: bool = True) -> Iterator[None]:
    """Around trainer.train(), which writes its checkpoints itself. A write the machine refuses (a full
    disk, a read-only folder) ends in one line naming the checkpoint; the checkpoint it cut off is removed
    (it could never be resumed, and it holds the space) and the last complete one is named for --resume."""
    from finsent.core.console import note
    from finsent.core.fsio import write_failure

    before = {c.name for c in _checkpoints(out)} if out.is_dir() else set()
    try:
        yield
    except Exception as e:
        partial = _writing(out, before) if owns_folder else None
        complete = (
            [c for c in _checkpoints(out) if c != partial and is_complete(c) is None] if owns_folder else []
        )
        removed = f"removed the partial {partial.name}; " if partial else ""
        then = (
            f"it continues from {complete[-1].name}"
            if complete
            else "no complete checkpoint yet, it starts over"
        )
        err = write_failure(e, partial or out, f"{removed}fix that, then rerun with --resume ({then})")
        if partial:
            shutil.rmtree(partial, ignore_errors=True)
        if err is None:  # not the disk: the trainer's own error, with its traceback
            if partial:
                note(f"training stopped while saving: {removed}--resume: {then}")
            raise
        raise err from e


def guard(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, to train into a folder that holds another run unless told what to do."""
    if holds_run(out) and not (resume or overwrite):
        raise FinsentError(
            f"train.output_dir {out} already holds a training run: pass --resume to continue it, "
            "or --overwrite to start again"
        )


def prepare(
    out: Path, cfg, splits: dict, resume: bool, overwrite: bool, owns_folder: bool = True
) -> Path | None:
    """Check `out` before training; returns the checkpoint to resume from (or None) and writes the stamp.
    Under DDP only the process that owns the folder (rank 0) checks, clears and stamps; the others only pick the same checkpoint."""
    from finsent.core.console import note
    from finsent.core.fsio import remove_leftovers, write_json

    if not owns_folder:
        if not resume or overwrite:
            return None
        complete = [c for c in (_checkpoints(out) if out.is_dir() else []) if is_complete(c) is None]
        return complete[-1] if complete else None

    guard(out, resume, overwrite)
    stamp = check_stamp(out, cfg, splits)  # (--overwrite: no comparison)
    remove_leftovers(out)  # a killed run's hidden temporaries (a cut-off model/ save): the lock is ours
    _clear_unsaved(out)
    checkpoints = _checkpoints(out) if out.is_dir() else []
    used = holds_run(out)
    last = None
    if used and overwrite:
        for path in [*checkpoints, *(out / name for name in TRAINING_OUTPUTS)]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        note(f"--overwrite: cleared the earlier training run in {out}")
    elif used:
        for checkpoint in reversed(checkpoints):
            why = is_complete(checkpoint)
            if why is None:
                last = checkpoint
                break
            note(f"--resume: skipping {checkpoint.name} ({why}): a run killed while saving")
        if last is None:
            note(f"--resume: no complete checkpoint in {out}; starting from scratch")
    elif resume:
        note(f"--resume: no checkpoint in {out}; starting from scratch")
    write_json(out / RUN_STAMP, stamp)
    return last
