"""The disk and the folder: a full disk or a read-only --out is one line and leaves nothing partial (and
training stays resumable), and a second run into a folder that another process is writing is refused at
once, in one line naming the holder's PID, while a killed holder frees the folder at once."""

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finsent.cli import main
from finsent.core.artefacts import LOCK_FILE
from finsent.core.errors import FinsentError

HOLDER = """
import sys, time
from finsent.core.lock import hold
with hold(sys.argv[1], "train", beside=sys.argv[2] == "beside"):
    print("held", flush=True)
    time.sleep(600)
"""


@contextlib.contextmanager
def holder(path: Path, beside: bool = False):
    """Another process holding `path`'s lock until the block ends (then SIGKILLed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "beside" if beside else "inside"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def one_line(capsys, *args: str) -> str:
    """The command's one error line (exit 2, no traceback); predict's model loading may note things first."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith(f"finsent {args[0]}: error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.endswith(errors[0]), err
    return errors[0]


# --- two runs, one folder


def test_a_second_run_is_refused_at_once_and_a_killed_holder_frees_the_folder(tmp_path, capsys):
    from finsent.core.lock import hold

    out = tmp_path / "t"
    with holder(out) as proc:
        start = time.perf_counter()
        with (
            pytest.raises(FinsentError, match=rf"{out} is being written by another finsent \(PID {proc.pid}"),
            hold(out, "train"),
        ):
            pass
        assert time.perf_counter() - start < 1  # refused, never queued
        # the commands: train --resume and run both stop before reading any data
        err = one_line(capsys, "train", "--data", str(tmp_path / "no.csv"), "--out", str(out), "--resume")
        assert (
            f"finsent train: error: {out} is being written" in err and f"PID {proc.pid}, finsent train" in err
        )
        err = one_line(capsys, "run", "--data", str(tmp_path / "no.csv"), "--out", str(out))
        assert f"PID {proc.pid}" in err
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert (out / LOCK_FILE).exists()  # a killed holder leaves its file, but not its lock
    with hold(out, "train") as lock:
        assert lock.read_text().startswith(f"{os.getpid()} finsent train since ")
    assert not (out / LOCK_FILE).exists()


def test_merge_is_refused_while_another_process_writes_its_output(tmp_path):
    from finsent.core.options import Config
    from finsent.deploy.merge import merge

    out = tmp_path / "merged"
    with holder(out, beside=True) as proc, pytest.raises(FinsentError, match=f"PID {proc.pid}"):
        merge(Config(), tmp_path / "adapter", out)
    assert not out.exists()


def test_predict_into_a_file_another_predict_writes_is_refused_before_loading(tmp_path, capsys):
    out = tmp_path / "out.csv"
    with holder(out, beside=True) as proc:
        line = one_line(
            capsys, "predict", "--model", str(tmp_path / "no-model"), "Profit rose .", "--out", str(out)
        )
    assert f"PID {proc.pid}" in line and not out.exists()  # refused before the (missing) model was looked at


def test_the_lock_is_reentrant_in_one_process_and_leaves_nothing(tmp_path):
    from finsent.core.lock import hold, lock_path

    out = tmp_path / "new" / "run"
    with hold(out, "run"):
        with hold(out, "train"):  # a stage of the command that holds it
            assert (out / LOCK_FILE).is_file()
        assert (out / LOCK_FILE).is_file()  # still the outer holder's
        with hold(out / "merged_model", "merge", beside=True) as beside:
            assert beside == out / f".merged_model{LOCK_FILE}"
            assert beside == lock_path(out / "merged_model", beside=True)
    assert not out.exists()  # created for the lock, left empty: removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


# --- a full disk


def test_a_full_disk_in_an_atomic_write_keeps_the_old_file_and_is_one_line(tmp_path, monkeypatch):
    from finsent.core.fsio import write_json

    target = tmp_path / "metrics.json"
    write_json(target, {"old": 1})
    real = Path.write_text

    def half_then_full(self, text, *a, **k):  # what a filling disk does: part of the bytes, then ENOSPC
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(FinsentError) as e:
        write_json(target, {"new": list(range(1000))})
    msg = str(e.value)
    assert (
        msg
        == f"cannot write {target}: no space left on device; free some space (or choose another --out) and rerun"
    )
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file


def test_a_full_disk_copying_a_model_leaves_no_folder(tmp_path, monkeypatch):
    import shutil

    from finsent.core.fsio import atomic_dir
    from finsent.core.options import Config
    from finsent.deploy.merge import copy_full

    trained = tmp_path / "model"
    trained.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (trained / name).write_text(name * 100)
    calls, real = [], shutil.copyfile  # (copytree's copy2 calls it; copytree collects the error)

    def full_on_second(src, dst, **kw):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, **kw)

    monkeypatch.setattr(shutil, "copyfile", full_on_second)
    merged = tmp_path / "merged"
    # as pipeline/run.py copies: into the staging folder that takes the name once certified
    full = rf"cannot write {merged}: no space left on device"
    with pytest.raises(FinsentError, match=full), atomic_dir(merged) as staging:
        copy_full(Config(), trained, staging, merged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no partial copy, no merged/


def test_predict_on_a_full_disk_is_one_line_and_writes_no_file(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from finsent.serving import rows

    src = tmp_path / "in.csv"
    src.write_text("text\n" + "".join(f"Profit rose {i} .\n" for i in range(40)))
    real, n = rows.Writer.write, []

    def full_at_the_third_row(self, *a):
        n.append(1)
        if len(n) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a)

    monkeypatch.setattr(rows.Writer, "write", full_at_the_third_row)
    out = tmp_path / "out.csv"
    err = one_line(
        capsys, "predict", "--model", str(tiny_model_dir), "--dtype", "float32", "--input", str(src),
        "--out", str(out),
    )  # fmt: skip
    assert f"finsent predict: error: cannot write {out}: no space left on device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no output, no temporary, no lock


def test_a_checkpoint_cut_off_by_a_full_disk_is_removed_and_resume_continues(
    tiny_model_dir, tmp_path, monkeypatch
):
    import torch
    from test_train import tiny_config, toy_splits

    from finsent.training.train import train

    splits = toy_splits(24)  # 5 steps per epoch, a checkpoint per epoch
    real = torch.save

    def full_at_checkpoint_10(obj, f, *a, **k):
        if "checkpoint-10" in str(f):  # part of the optimizer state lands, then the disk is full
            Path(f).write_bytes(b"PK\x03\x04 cut off")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_at_checkpoint_10)
    out = tmp_path / "t"
    # the shipped CPU configs keep the newest checkpoint only: the old one goes after the new one is whole
    cfg = tiny_config(tiny_model_dir, out, num_train_epochs=2.0)
    assert cfg.train.save_total_limit == 1
    with pytest.raises(FinsentError) as e:
        train(cfg, splits)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        f"cannot write {out / 'checkpoint-10'}: no space left on device"
    )
    assert (
        "removed the partial checkpoint-10; fix that, then rerun with --resume (it continues from checkpoint-5)"
        in msg
    )
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-5"]
    assert not (out / "adapter").exists() and not (out / LOCK_FILE).exists()
    monkeypatch.undo()
    train(tiny_config(tiny_model_dir, out, num_train_epochs=2.0, resume=True), splits)
    log = json.loads((out / "train_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-5" and log["global_step"] == 10


def test_a_checkpoint_is_complete_only_when_every_file_is_whole(tmp_path):
    import torch
    from safetensors.torch import save_file

    from finsent.training.checkpoints import is_complete

    c = tmp_path / "checkpoint-5"
    c.mkdir()
    save_file({"w": torch.zeros(64)}, c / "adapter_model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt"):
        torch.save({"state": torch.zeros(64)}, c / name)
    (c / "trainer_state.json").write_text("{}")
    assert is_complete(c) is None
    whole = (c / "optimizer.pt").read_bytes()
    (c / "optimizer.pt").write_bytes(whole[: len(whole) // 2])  # the disk filled under torch.save
    assert is_complete(c) == "optimizer.pt cut off"
    (c / "optimizer.pt").write_bytes(whole)
    tensors = (c / "adapter_model.safetensors").read_bytes()
    (c / "adapter_model.safetensors").write_bytes(tensors[:-8])
    assert is_complete(c) == "adapter_model.safetensors cut off"


def test_sharded_checkpoints_are_resumable_and_checked_whole(tmp_path):
    """FSDP's sharded state dict (torch.distributed.checkpoint folders), FSDP's full state dict and
    DeepSpeed's global_stepN/: each layout resumes when whole, and is refused when cut off."""
    import torch

    from finsent.training.checkpoints import is_complete

    def checkpoint(name: str, files: dict) -> Path:
        c = tmp_path / name
        for rel, kind in files.items():
            (c / rel).parent.mkdir(parents=True, exist_ok=True)
            torch.save({"x": torch.zeros(4)}, c / rel) if kind == "pt" else (c / rel).write_text(kind)
        return c

    common = {"trainer_state.json": "{}", "scheduler.pt": "pt"}
    sharded = checkpoint("checkpoint-1", {**common, "optimizer_0/.metadata": "m", "optimizer_0/__0_0.distcp": "d",
                                          "pytorch_model_fsdp_0/.metadata": "m", "pytorch_model_fsdp_0/__0_0.distcp": "d"})  # fmt: skip
    full = checkpoint("checkpoint-2", {**common, "optimizer.bin": "pt", "pytorch_model_fsdp.bin": "pt"})
    ds = checkpoint("checkpoint-3", {**common, "latest": "global_step3",
                                     "global_step3/mp_rank_00_model_states.pt": "pt",
                                     "global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt": "pt"})  # fmt: skip
    assert [is_complete(c) for c in (sharded, full, ds)] == [None, None, None]
    (sharded / "pytorch_model_fsdp_0" / ".metadata").unlink()  # the sharded save was killed before its end
    assert is_complete(sharded) == "missing pytorch_model_fsdp_0/.metadata"
    state = ds / "global_step3" / "mp_rank_00_model_states.pt"
    state.write_bytes(state.read_bytes()[:20])
    assert is_complete(ds) == "global_step3/mp_rank_00_model_states.pt cut off"
    (full / "optimizer.bin").unlink()
    assert "missing its optimizer state" in is_complete(full)


# --- real filesystems: a tiny tmpfs that fills, a read-only one (root ignores permission bits)


@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    """A tmpfs at `path` (root only, where mounting is allowed), else skip."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)], capture_output=True
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_really_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    import torch

    from finsent.core.fsio import atomic_path, write_json

    with tmpfs(tmp_path / "small", "size=64k") as small:
        with pytest.raises(FinsentError, match=rf"^cannot write {small / 'm.json'}: no space left on device"):
            write_json(small / "m.json", {"x": "y" * 200_000})
        assert list(small.iterdir()) == []
        write_json(small / "m.json", {"x": 1})  # the space came back: nothing partial held it
        # torch.save words ENOSPC without an errno ("unexpected pos ..."): the filesystem's state says it
        full = pytest.raises(FinsentError, match=r"optimizer.pt: no space left on device \(RuntimeError: ")
        with full, atomic_path(small / "optimizer.pt") as tmp:
            torch.save({"w": torch.zeros(100_000)}, tmp)
        assert [p.name for p in small.iterdir()] == ["m.json"]


def test_a_read_only_out_is_one_line_before_any_work(tiny_model_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:
        ctx = tmpfs(ro, "ro", "size=64k")
    else:
        ro.mkdir()
        ro.chmod(0o555)
        ctx = contextlib.nullcontext(ro)
    with ctx:
        err = one_line(capsys, "train", "--data", str(tmp_path / "no.csv"), "--out", str(ro / "t"))
        assert f"cannot write {ro / 't'}: " in err
        assert ("read-only file system" if os.geteuid() == 0 else "permission denied") in err
        err = one_line(
            capsys, "predict", "--model", str(tiny_model_dir), "--dtype", "float32", "--out",
            str(ro / "p.csv"), "Profit rose .",
        )  # fmt: skip
        assert f"cannot write {ro / 'p.csv'}" in err
        assert list(ro.iterdir()) == []


def test_a_read_only_folder_is_one_line_without_mounting(tmp_path, capsys, monkeypatch):
    """The same refusal where a test cannot mount (not root): the folder's creation fails with EROFS."""
    real = Path.mkdir

    def read_only(self, *a, **k):
        if tmp_path / "ro" in (self, *self.parents):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    err = one_line(capsys, "run", "--data", str(tmp_path / "no.csv"), "--out", str(tmp_path / "ro" / "run"))
    assert f"finsent run: error: cannot write {tmp_path / 'ro' / 'run'}: read-only file system" in err
    assert "choose an --out you can write to" in err


def test_export_is_refused_while_another_process_writes_its_folder(tmp_path):
    from finsent.core.options import Config
    from finsent.deploy.export import export

    out = tmp_path / "gguf" / "model.gguf"
    with holder(out.parent) as proc, pytest.raises(FinsentError, match=f"PID {proc.pid}"):
        export(Config(), tmp_path / "no-model", out)
    assert not out.exists()


def test_a_nearly_full_filesystem_explains_only_errors_that_no_errno_explains(tmp_path, monkeypatch):
    """/proc reads 0 bytes free: a missing file there is not a full disk, while a library's RuntimeError
    with no errno on a nearly full disk still is."""
    from finsent.core import fsio

    monkeypatch.setattr(fsio, "_free_bytes", lambda target: 0)
    missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(tmp_path / "x.csv"))
    assert fsio.write_failure(missing, tmp_path / "x.csv") is None
    cut = fsio.write_failure(RuntimeError("failed to write the tensor"), tmp_path / "x.safetensors")
    assert cut is not None and "no space left on device" in str(cut)


def test_a_full_disk_in_the_final_save_says_to_resume_and_resume_finishes(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Training done, the adapter's save refused by a full disk: one line that says --resume (a plain
    rerun would be refused, the folder holds the run), no adapter/ under its name, and --resume ends it."""
    from test_train import tiny_config, toy_splits

    import finsent.training.parallel as parallel
    from finsent.training.train import train

    splits = toy_splits(8)
    real = parallel.save_adapter

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "adapter_model.safetensors")

    monkeypatch.setattr(parallel, "save_adapter", full)
    out = tmp_path / "t"
    with pytest.raises(FinsentError) as e:
        train(tiny_config(tiny_model_dir, out, num_train_epochs=1.0), splits)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"cannot write {out / 'adapter'}: no space left on device")
    assert msg.endswith("free some space, then rerun with --resume (it goes on from the last checkpoint)")
    assert not (out / "adapter").exists()
    monkeypatch.setattr(parallel, "save_adapter", real)
    train(tiny_config(tiny_model_dir, out, num_train_epochs=1.0, resume=True), splits)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
