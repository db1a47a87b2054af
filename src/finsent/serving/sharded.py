"""Sharded, resumable prediction: torchrun ranks split a file's rows, each writes shards; a killed run
resumes at the first missing shard, and rank 0 concatenates them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from finsent.core.artefacts import SHARD_MANIFEST
from finsent.core.errors import FinsentError
from finsent.data.readers import FILE_KINDS
from finsent.serving.rows import CHUNK, Input, Writer, _limit, all_bad, classify_rows, default_id_column

SHARD_ROWS = 10_000  # rows per shard: what a kill can cost at most, per process


def _rank_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    try:
        return tuple(
            int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))
        )
    except ValueError:
        raise FinsentError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)"
        ) from None


def use_local_gpu() -> None:
    """Under torchrun on a CUDA machine, one GPU per process: LOCAL_RANK's GPU becomes the current
    device, so that the model loader's plain 'cuda' means this process's own GPU. Call before loading."""
    if "LOCAL_RANK" not in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        return
    local, count = _rank_env()[2], torch.cuda.device_count()
    if local >= count:
        raise FinsentError(
            f"LOCAL_RANK {local} but only {count} GPU(s) visible: use --nproc_per_node {count} or fewer"
        )
    torch.cuda.set_device(local)


def _fingerprint(path: str) -> dict:
    """What identifies the input: its size and SHA-256 (its name may change, its content may not)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(Path(path).resolve()), "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def _options(clf, source: Input, jsonl: bool, adapter) -> dict:
    """Every choice that changes an output row: shards made under other options must not be mixed in.
    (Batch size is left out: results do not depend on it; the device type too, for the same reason.)"""
    from finsent.core.options import outputs_only

    cfg = outputs_only(
        clf.config.to_dict()
    )  # options marked affects_outputs=False (model.device ...) left out
    # the Classifier's own, recorded above (its recheck as "guard" below)
    known = {"model", "codec", "config", "device", "batch_size", "recheck"}
    return {
        "model": cfg["model"],
        # the folders' files, not only their names: a model replaced in place must not be mixed in
        "model_files": _files_of(clf.config.model.model),
        "adapter_files": _files_of(adapter) if adapter else None,
        "adapter": str(Path(adapter).resolve()) if adapter else None,
        "prompt": cfg["prompt"],
        "labels": list(clf.labels),
        "dtype": str(clf.model.dtype).replace("torch.", ""),
        # any other setting of the Classifier (e.g. label priors) counts too
        "classifier": {
            f.name: _comparable(getattr(clf, f.name)) for f in dataclasses.fields(clf) if f.name not in known
        },
        "text_column": source.text_column,
        "id_column": source.id_column,
        "strict": source.strict,
        "format": "jsonl" if jsonl else "csv",
        "max_tokens": source.max_tokens,
        # bf16's float32 recheck (model.guard); absent without one, so shards made before it still match
        **({"guard": clf.recheck.margin} if clf.recheck else {}),
    }


def _files_of(folder) -> dict | None:
    """{name: [bytes, mtime in ns]} of the files a model folder is loaded from (weights, configs,
    tokenizer, calibration), or of a .gguf file; None for a hub id."""
    path = Path(str(folder)).expanduser()
    if path.is_file():  # a .gguf given as --model
        return {path.name: [path.stat().st_size, path.stat().st_mtime_ns]}
    if not path.is_dir():
        return None
    wanted = (".safetensors", ".bin", ".json", ".model", ".jinja")
    return {
        f.name: [f.stat().st_size, f.stat().st_mtime_ns]
        for f in sorted(path.iterdir())
        if f.is_file() and f.suffix in wanted
    }


def _comparable(value):
    """A setting as JSON can hold it (a dataclass as its fields), so that two processes, or a run and its
    restart, compare equal when the setting is the same; an object of no known shape counts by its type."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        return json.loads(json.dumps(value, default=_plain_number))
    except (TypeError, ValueError):
        return type(value).__name__


def _plain_number(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(type(value).__name__)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two option dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(prefix + key)
    return out


class _Shards:
    """OUTPUT.shards/: the manifest, the shard files and their completion markers."""

    def __init__(self, output: str, jsonl: bool):
        self.output = Path(output)
        self.folder = self.output.with_name(self.output.name + ".shards")
        self.suffix = ".jsonl" if jsonl else ".csv"
        self.manifest_path = self.folder / SHARD_MANIFEST

    def name(self, j: int, n: int) -> str:
        return f"part-{j:05d}-of-{n:05d}"

    def data(self, j: int, n: int) -> Path:
        return self.folder / (self.name(j, n) + self.suffix)

    def marker(self, j: int, n: int) -> Path:
        return self.folder / (self.name(j, n) + ".json")

    def read_manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise FinsentError(
                f"{self.manifest_path}: unreadable ({e}); delete {self.folder}/ to start over"
            ) from None

    def done(self, j: int, n: int) -> dict | None:
        """The shard's marker when the shard is complete (marker written after the data file, sizes agree)."""
        try:
            mark = json.loads(self.marker(j, n).read_text(encoding="utf-8"))
            return mark if self.data(j, n).stat().st_size == mark["bytes"] else None
        except (OSError, ValueError, KeyError):
            return None

    def settle(self, want: dict, rows: int, shard_rows: int, world: int) -> bool:
        """Rank 0, before anyone writes: resume the manifest's run when it is this run (same input and
        options), refuse a partial run of another input or options, else start afresh."""
        from finsent.core.fsio import write_json

        have = self.read_manifest()
        if have is not None:
            changed = []
            if have.get("input", {}).get("sha256") != want["input"]["sha256"]:
                changed.append(f"input (was {have.get('input', {}).get('path')})")
            options = have.get("options", {})
            unknown = [k for k in ("model_files", "adapter_files") if k not in options]
            if unknown:  # a manifest written before finsent recorded the model's files: the name must do
                from finsent.core.console import note

                note(f"{self.folder}/ was started by an older finsent, which did not record the model's "
                     "files: resumed on the model's name alone")  # fmt: skip
                options = options | {k: want["options"][k] for k in unknown}
            changed += _differences(options, want["options"])
            if changed:
                raise FinsentError(
                    f"{self.folder}/ holds a partial run with another {', '.join(changed)}: rerun with the "
                    f"same input and options to resume it, or delete {self.folder}/ to start over"
                )
            return True
        if self.folder.exists():  # shards without a manifest cannot be trusted
            import shutil

            shutil.rmtree(self.folder)
        # every rank gets work on a small input; whole chunks only (see CHUNK)
        size = -(-min(shard_rows, -(-rows // world)) // CHUNK) * CHUNK
        write_json(self.manifest_path, want | {"rows": rows, "shard_rows": size, "shards": -(-rows // size)})
        return False


def _barrier() -> None:
    """Wait for every rank (gloo, so on a GPU machine too). The process group is created on first use
    with a long timeout: a rank may classify for hours before the others hear from it."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    dist.barrier()


def predict_sharded(
    clf, source: Input, output: str | None, shard_rows: int = SHARD_ROWS, adapter: str | None = None
) -> dict:
    """This rank's shards of the input, then (rank 0) the whole output in input order; see the module's
    docstring. Returns this rank's counts, or on rank 0 the whole run's."""
    import time

    rank, world, _ = _rank_env()
    rows, source, shards, plan = _settle_plan(clf, source, output, shard_rows, adapter, rank, world)
    n = plan["shards"]
    mine = [j for j in range(n) if j % world == rank]
    todo = {j for j in mine if shards.done(j, n) is None}
    skipped = [j for j in mine if j not in todo]
    if skipped:
        print(
            f"rank {rank}: {len(skipped)} of {len(mine)} shards already written, skipped "
            f"({', '.join(shards.name(j, n) for j in skipped[:5])}{', ...' if len(skipped) > 5 else ''})",
            file=sys.stderr,
        )
    start, started_at = time.perf_counter(), time.time()
    done, bad = _write_shards(clf, source, shards, plan, rows, todo, rank)
    seconds = time.perf_counter() - start
    mine_summary = {
        "rows": rows,
        "predicted": done,
        "bad": bad,
        "shards_written": len(todo),
        "shards_skipped": len(skipped),
    }
    if world > 1:
        _barrier()  # rank 0 waits here for every other rank's last shard
    if rank != 0:
        print(f"rank {rank}: {done} predicted in {len(todo)} shards, {bad} bad rows skipped", file=sys.stderr)
        return mine_summary | {"sentences_per_second": done / seconds if seconds else 0.0}
    return _concatenate(shards, n, clf.labels, source.id_column, rows, start, started_at)


def _settle_plan(clf, source: Input, output, shard_rows: int, adapter, rank: int, world: int):
    """Check the input, count its rows and settle the shard plan (rank 0 writes the manifest, every rank
    reads it): (rows, the input with its id column settled, shards, plan)."""
    input_path = source.path
    if source.texts or input_path in (None, "-") or not output:
        raise FinsentError(
            "sharded prediction (torchrun, --shard-rows) needs --input FILE and --out FILE "
            "(stdin and command-line texts cannot be split between processes)"
        )
    if not Path(input_path).is_file():
        raise FinsentError(f"--input {input_path}: no such file")
    # every rank reads the whole input once to count its rows: the shard plan needs the total
    rows, first = 0, None
    for row in source.rows():
        first = first if first is not None else row[1]  # the first good row's columns
        rows += 1
    if not rows:
        raise FinsentError(f"--input {input_path}: no rows")
    source = dataclasses.replace(source, id_column=default_id_column(source.id_column, first))
    jsonl = FILE_KINDS.get(Path(output).suffix.lower()) == "jsonl"
    shards = _Shards(output, jsonl)
    want = {
        "version": 1,
        "input": _fingerprint(input_path),
        "options": _options(clf, source, jsonl, adapter),
    }
    resumed = shards.settle(want, rows, shard_rows, world) if rank == 0 else False
    if world > 1:
        _barrier()  # the manifest is settled: every rank now reads the same plan
    plan = shards.read_manifest()
    if plan is None or plan.get("input", {}).get("sha256") != want["input"]["sha256"]:
        raise FinsentError(f"{shards.manifest_path}: missing or changed while this run started")
    if resumed and shard_rows != SHARD_ROWS:
        print(
            f"note: resuming the manifest's plan ({plan['shards']} shards of {plan['shard_rows']} rows); "
            "--shard-rows applies to a fresh run",
            file=sys.stderr,
        )
    return rows, source, shards, plan


def _write_shards(clf, source: Input, shards: _Shards, plan: dict, rows: int, todo: set[int], rank: int):
    """Classify the rows of this rank's shards still to do, each shard by the plain run's own loop
    (classify_rows) into its file, written atomically, then its marker: (predicted, bad rows)."""
    import itertools
    import time

    from finsent.core.console import progress_bar
    from finsent.core.fsio import write_json

    size, n = plan["shard_rows"], plan["shards"]
    done = bad = 0
    limit = _limit(clf, source.max_tokens)
    numbered = enumerate(source.rows())
    with progress_bar(sum(min(size, rows - j * size) for j in todo), f"rank {rank} predicting") as bar:
        for j, its_rows in itertools.groupby(numbered, key=lambda row: row[0] // size):
            if j not in todo:
                continue  # another rank's, or written before a restart: groupby reads past its rows
            # renamed into place only when the shard is whole (an error removes it); the marker follows it
            with Writer(str(shards.data(j, n)), clf.labels, source.id_column, header=False) as writer:
                predicted, bad_rows = classify_rows(
                    clf, its_rows, writer, source.text_column, source.strict, limit, bar
                )
            mark = {"shard": j, "first_row": j * size, "predicted": predicted, "bad": bad_rows}
            mark |= {"bytes": shards.data(j, n).stat().st_size, "written_at": time.time()}
            write_json(shards.marker(j, n), mark)
            done, bad = done + predicted, bad + bad_rows
    return done, bad


def _concatenate(
    shards: _Shards, n: int, labels: list[str], id_column, rows: int, start: float, started_at: float
) -> dict:
    """Rank 0: the shards, in order, into the output (atomically); then the shards folder goes."""
    import shutil
    import time

    marks = [shards.done(j, n) for j in range(n)]
    missing = [shards.name(j, n) for j, m in enumerate(marks) if m is None]
    if missing:
        raise FinsentError(
            f"{len(missing)} shard(s) missing after every rank finished ({', '.join(missing[:3])}); rerun to resume"
        )
    if not sum(m["predicted"] for m in marks):  # every row bad: no output file of a header alone
        raise all_bad(rows)
    with Writer(str(shards.output), labels, id_column) as writer:
        writer.write_header()  # before the shards' bytes, which carry none
        for j in range(n):
            with open(shards.data(j, n), newline="", encoding="utf-8") as fh:
                shutil.copyfileobj(fh, writer.fh)
    shutil.rmtree(shards.folder)
    seconds = time.perf_counter() - start
    predicted = sum(m["predicted"] for m in marks)
    # shards of an earlier, interrupted run were skipped: speed counts only this run's (1 s of slack
    # for the clocks of other machines writing to a shared folder)
    fresh = [m for m in marks if m.get("written_at", 0) >= started_at - 1]
    world = _rank_env()[1]
    summary = {
        "rows": rows,
        "predicted": predicted,
        "bad": sum(m["bad"] for m in marks),
        "shards": n,
        "shards_skipped": n - len(fresh),
        "processes": world,
        "sentences_per_second": sum(m["predicted"] for m in fresh) / seconds if seconds else 0.0,
    }
    print(
        f"{predicted} predicted, {summary['bad']} bad rows skipped, {n} shards ({summary['shards_skipped']} "
        f"from an earlier run) by {world} process(es), {summary['sentences_per_second']:.1f} sentences/s; "
        f"wrote {shards.output}",
        file=sys.stderr,
    )
    return summary
