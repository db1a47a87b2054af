"""Kill `finsent run` (or `finsent train`) at random moments, rerun it, and check two things: no artefact
is ever left half-written under its real name (nor trusted by the rerun), and the rerun's final weights
and predictions equal an uninterrupted run's.

    nice .venv/bin/python -m bench.kill_anywhere                  # 10 points on the embedded model
    nice .venv/bin/python -m bench.kill_anywhere --points 3       # fewer (results already recorded are kept)

Each point starts from an empty folder. The command runs until it is killed with SIGKILL, either at a
moment drawn uniformly over the uninterrupted run's duration or at the moment a write appears in the
output folder (polled every few milliseconds, no inotify: a new checkpoint-N folder, an atomic writer's
`.NAME.*.tmp` file or `.NAME.partial-*` folder), plus a small random delay so the kill lands inside the
write. The folder is then inspected (`inspect`: every artefact present under its real name must be
whole; hidden temporaries and cut-off checkpoints are listed apart), the same command is rerun with
`--resume` to the end, and its outputs are compared with the reference run's (`compare`): every
predictions.csv byte-identical, every safetensors tensor equal. One JSON line per point goes to
bench/results/kill_anywhere.jsonl (a rerun of this script skips the points already there), and the
Markdown table is printed. docs/reliability.md reads the table.

tests/test_kill_anywhere.py uses the same functions on the tiny random Llama, with one more way to
kill: `KillPoint.hook`, an audit hook in the launched process (never in finsent's code) that sends
SIGKILL to itself at an exact file operation, so the test's points land inside a write every time.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import DATA, RESULTS, ROOT
from finsent.core.artefacts import RUN_EVALUATIONS

RESULT_FILE = RESULTS / "kill_anywhere.jsonl"
# the same criterion as tests/test_train.py::test_resume_matches_uninterrupted_run (torch.testing)
ATOL, RTOL = 1e-5, 1e-4
EVALUATIONS = RUN_EVALUATIONS
# the launched process kills itself at the `count`-th file operation `event` ("open" for writing,
# "rename" or "remove") on a path matching `pattern`: Python's audit hooks see every open(),
# os.replace() and os.unlink()
_HOOK = r"""
import fnmatch, os, signal, sys
event, pattern, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = [0]
def hook(name, args):
    if name == "open" and event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
        hit = writing and fnmatch.fnmatch(str(path), pattern)
    elif name == "os.rename" and event == "rename":
        hit = fnmatch.fnmatch(str(args[0]), pattern)
    elif name == "os.remove" and event == "remove":  # rmtree names a file by its folder's descriptor
        hit = fnmatch.fnmatch(str(args[0]), pattern)
    else:
        return
    if hit:
        seen[0] += 1
        if seen[0] == count:
            sys.stderr.write(f"kill_anywhere: SIGKILL at {name} {args[0]}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
sys.argv = ["finsent", *sys.argv[4:]]
from finsent.cli import main
sys.exit(main())
"""


@dataclass
class KillPoint:
    """When to kill: `at` seconds after the start; or `delay` seconds after `watch` (a glob relative to
    the output folder, e.g. "train/checkpoint-2" or "finetuned/.predictions.csv.*") first matches, or
    after the log shows `stage` begin (its `=== STAGE ===` line: a moment inside a stage whatever the
    machine's speed); or, with `hook` = (event, glob, count), inside the process at an exact file
    operation."""

    label: str
    at: float | None = None
    watch: str | None = None
    stage: str | None = None
    delay: float = 0.0
    hook: tuple[str, str, int] | None = None


def launch(argv: list[str], log: Path, hook: tuple[str, str, int] | None = None) -> subprocess.Popen:
    """`finsent ARGV` in its own process group, stdout and stderr into `log`."""
    cmd = [sys.executable, "-m", "finsent", *argv]
    if hook:
        cmd = [sys.executable, "-c", _HOOK, hook[0], hook[1], str(hook[2]), *argv]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )


def _watched(out: Path, pattern: str) -> bool:
    folder, _, name = pattern.rpartition("/")
    try:
        return any(fnmatch.fnmatch(n, name) for n in os.listdir(out / folder))
    except OSError:
        return False


def attempt(argv: list[str], out: Path, point: KillPoint | None, log: Path, poll: float = 0.002) -> dict:
    """Run `finsent ARGV` writing into `out` until `point` kills it (None: to the end). Returns the
    moment, whether it was killed, its exit status and the stage it was in (the log's last `=== ===`)."""
    with open(log, "a") as fh:
        fh.write(f"\n### finsent {' '.join(argv)}  (kill: {point.label if point else 'none'})\n")
    size, looked = log.stat().st_size, 0.0  # the stage scan reads only what this attempt writes
    start = time.monotonic()
    proc = launch(argv, log, point.hook if point else None)
    seen_at = None
    killed = False
    while proc.poll() is None:
        now = time.monotonic() - start
        if point and point.watch and seen_at is None and _watched(out, point.watch):
            seen_at = now
        if point and point.stage and seen_at is None and now - looked > 0.02:
            looked = now
            with open(log, "rb") as fh:  # only what this attempt wrote
                fh.seek(size)
                if f"=== {point.stage} ===".encode() in fh.read():
                    seen_at = now
        due = point and (
            (point.at is not None and now >= point.at)
            or (seen_at is not None and now >= seen_at + point.delay)
        )
        if due:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(poll)
    rc = proc.wait()
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace").rsplit("\n### finsent", 1)[-1]
    stages = [line.strip("= ") for line in text.splitlines() if line.startswith("=== ")]
    return {
        "seconds": round(seconds, 3),
        "killed": killed or rc == -signal.SIGKILL,
        "rc": rc,
        "stage": stages[-1] if stages else "start",
        "watch_seen_at": round(seen_at, 3) if seen_at is not None else None,
        "log": text,
    }


def _png_whole(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")


def _file_state(path: Path, rows: dict[str, int], ref: Path | None) -> str:
    """ "complete", or "partial: why" for one file, judged by its kind (text: ends as the reference's
    copy `ref` ends, a newline for finsent's own)."""
    from finsent.training.checkpoints import _whole_safetensors

    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors" and not _whole_safetensors(path):
            return "partial: safetensors cut off"
        elif path.suffix == ".png" and not _png_whole(path):
            return "partial: PNG cut off"
        elif path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                table = list(csv.reader(fh))
            if not table or any(len(r) != len(table[0]) for r in table):
                return "partial: CSV rows cut off"
            if path.name in rows and len(table) - 1 != rows[path.name]:
                return f"partial: {len(table) - 1} of {rows[path.name]} rows"
        elif path.suffix in (".yaml", ".md", ".txt"):
            import yaml

            text = path.read_text(encoding="utf-8")
            if ref and ref.is_file() and ref.read_text(encoding="utf-8").endswith("\n") > text.endswith("\n"):
                return "partial: text cut off"
            if path.suffix == ".yaml":
                yaml.safe_load(text)
        elif path.stat().st_size == 0:
            return "partial: empty"
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"partial: {type(e).__name__}"
    except Exception as e:  # yaml's errors, and anything else a cut-off file raises
        return f"partial: {type(e).__name__}"
    return "complete"


def _is_model(folder: Path) -> bool:
    return (
        (folder / "config.json").is_file()
        or (folder / "adapter_config.json").is_file()
        or any(folder.glob("*.safetensors"))
    )


def inspect(out: Path, reference: Path | None = None) -> dict:
    """What a kill left in `out`: `artefacts` (relative path -> "complete" or "partial: why"; a model or
    evaluation folder is partial when it lacks a file the reference's has: its card, parity record and
    metrics included, since every folder takes its name whole), `checkpoints` (name -> complete or why not, by training/checkpoints.py's own check) and `leftovers`
    (hidden temporaries of the atomic writers: not artefacts)."""
    from finsent.training.checkpoints import is_complete

    rows = {}
    if reference and (reference / "baseline" / "predictions.csv").is_file():
        with open(reference / "baseline" / "predictions.csv", newline="", encoding="utf-8") as fh:
            rows["predictions.csv"] = sum(1 for _ in csv.reader(fh)) - 1
    state: dict = {"artefacts": {}, "checkpoints": {}, "leftovers": []}

    def walk(folder: Path) -> None:
        for p in sorted(folder.iterdir()):
            rel = p.relative_to(out).as_posix()
            if p.name.startswith("."):
                if not p.name.endswith(".lock"):
                    state["leftovers"].append(rel)
            elif p.is_dir() and p.name.startswith("checkpoint-"):
                why = is_complete(p)
                state["checkpoints"][rel] = "complete" if why is None else f"partial: {why}"
            elif p.is_dir() and p.name == "runs":  # TensorBoard's event files: append-only logs
                continue
            elif p.is_dir():
                whole_folder = _is_model(p) or rel in EVALUATIONS
                if whole_folder and reference and (reference / rel).is_dir():
                    missing = sorted({f.name for f in (reference / rel).iterdir()} - set(os.listdir(p)))
                    state["artefacts"][rel + "/"] = (
                        f"partial: missing {', '.join(missing)}" if missing else "complete"
                    )
                walk(p)
            else:
                state["artefacts"][rel] = _file_state(p, rows, reference / rel if reference else None)

    if out.is_dir():
        walk(out)
    return state


def defects(state: dict) -> list[str]:
    """The artefacts under their real names that are not whole."""
    return [f"{k}: {v}" for k, v in state["artefacts"].items() if v != "complete"]


def resumed_from(log: str) -> str | None:
    """The checkpoint a training run resumed from, as its log says."""
    for line in log.splitlines():
        if line.startswith("resuming from "):
            return Path(line.split("resuming from ", 1)[1].strip()).name
    return None


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def compare(out: Path, reference: Path, models: tuple[str, ...]) -> dict:
    """`out`'s outputs against the uninterrupted `reference`: each evaluation's predictions.csv
    byte-identical, each model folder's tensors bit-identical (`weights_identical`) or within the resume
    test's tolerance (`weights_close`), and the largest difference."""
    import torch

    preds = {}
    for name in EVALUATIONS:
        ref = reference / name / "predictions.csv"
        if ref.is_file():
            got = out / name / "predictions.csv"
            preds[name] = got.is_file() and got.read_bytes() == ref.read_bytes()
    identical, close, worst = True, True, 0.0
    for model in models:
        a, b = _weights(reference / model), _weights(out / model)
        if not a or a.keys() != b.keys():
            identical = close = False
            continue
        for k in a:
            identical &= torch.equal(a[k], b[k])
            close &= torch.allclose(b[k].float(), a[k].float(), atol=ATOL, rtol=RTOL)
            worst = max(worst, (a[k].float() - b[k].float()).abs().max().item() if a[k].numel() else 0.0)
    return {
        "predictions_identical": preds,
        "weights_identical": identical,
        "weights_close": close,
        "max_weight_difference": worst,
    }


def kill_and_resume(
    argv: list[str], out: Path, point: KillPoint, reference: Path, models: tuple[str, ...], log: Path
) -> dict:
    """One point: from an empty `out`, run ARGV until `point` kills it, inspect, rerun with --resume to
    the end, compare with `reference`. Returns the record (no logs)."""
    shutil.rmtree(out, ignore_errors=True)
    killed = attempt(argv, out, point, log)
    after = inspect(out, reference)
    partial = {k for k, v in after["checkpoints"].items() if v != "complete"}
    rerun = attempt([*argv, "--resume"], out, None, log)
    start = resumed_from(rerun["log"])
    trusted = [c for c in partial if Path(c).name == start]
    final = inspect(out, reference) if rerun["rc"] == 0 else {"artefacts": {}, "leftovers": []}
    return {
        "point": point.label,
        "kill_at_s": killed["seconds"],
        "killed": killed["killed"],
        "stage": killed["stage"],
        "writing": after["leftovers"] + sorted(partial),
        "on_disk": {"artefacts": len(after["artefacts"]), "checkpoints": after["checkpoints"]},
        "half_written": defects(after),
        "rerun_ok": rerun["rc"] == 0,
        "rerun_seconds": rerun["seconds"],
        "resumed_from": start,
        "trusted_partial": trusted,
        "final_half_written": defects(final),
        "final_leftovers": final["leftovers"],
        **(compare(out, reference, models) if rerun["rc"] == 0 else {}),
    }


# --- the bench: the embedded model, `finsent run` at 10 points


def bench_argv(data: str, out: Path) -> list[str]:
    """`finsent run` on the embedded model, small: 24 training sentences in 3 steps of 8 (a checkpoint
    after each), 12 eval and 60 test sentences."""
    return [
        "run", "--config", "smollm2-cpu", "--data", data, "--data.split", "notebook",
        "--data.train_per_label", "8", "--data.eval_per_label", "4", "--data.test_per_label", "20",
        "--train.num_train_epochs", "1", "--train.per_device_train_batch_size", "8",
        "--train.save_steps", "1", "--model.dtype", "float32", "--out", str(out),
    ]  # fmt: skip


def bench_points(duration: float, n: int, seed: int) -> list[KillPoint]:
    """`n` points: targeted writes (a checkpoint, an old one's removal, the model's save, the copy, an
    evaluation's predictions, the report) in turns with moments drawn over the run's `duration`."""
    rng = random.Random(seed)
    targeted = [
        KillPoint("inside checkpoint-2's save", watch="train/checkpoint-2", delay=rng.uniform(0, 1.5)),
        KillPoint("inside checkpoint-1's removal (save_total_limit 1)", hook=("remove", "optimizer.pt", 1)),
        KillPoint("inside the trained model's save", watch="train/.model.partial-*", delay=rng.uniform(0, 0.3)),
        KillPoint("inside the copy to merged_model/", watch=".merged_model.partial-*", delay=rng.uniform(0, 0.3)),
        KillPoint("inside finetuned/ predictions.csv", watch="finetuned/.predictions.csv.*"),
        KillPoint("inside the report", watch=".summary.json.*"),
    ]  # fmt: skip
    uniform = [
        KillPoint(f"uniform {t:.1f} s", at=round(t, 1))
        for t in (rng.uniform(0, duration) for _ in range(max(n - len(targeted), 0)))
    ]
    # in turns: a bench cut short still has both kinds
    turns = [p for pair in zip(targeted, uniform) for p in pair]
    return (turns + targeted[len(uniform) :] + uniform[len(targeted) :])[:n]


def staged_points(duration: float, seed: int) -> list[KillPoint]:
    """The second series, after merged_model/ and the run's evaluation folders became staged (certified or
    whole before they take their names): kills inside those stages, found by the run's own stage lines,
    and at moments drawn as shares of `duration`, a reference run timed in the same invocation (the first
    series drew seconds from a reference timed under another load: docs/reliability.md)."""
    rng = random.Random(seed + 1)
    return [
        KillPoint("inside the copy's check (staged merged_model/)", stage="check the copy", delay=rng.uniform(0.5, 4)),
        KillPoint("inside the fine-tuned model's evaluation", stage="evaluate the fine-tuned model",
                  delay=rng.uniform(1, 6)),
        *(KillPoint(f"at {f:.0%} of a run", at=round(f * duration, 1)) for f in (rng.random(), rng.random())),
    ]  # fmt: skip


def table(records: list[dict]) -> str:
    head = (
        "| # | kill point | killed at (s) | stage | being written | half-written after kill | "
        "placed uncertified (first series only) | rerun | resumed from | predictions identical | weights identical (max diff) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for i, r in enumerate(records, 1):
        preds = r.get("predictions_identical", {})
        same = "yes" if preds and all(preds.values()) else "NO"
        lines.append(
            f"| {i} | {r['point']} | {r['kill_at_s']:.1f} | {r['stage']} | "
            f"{', '.join(r['writing']) or '-'} | {'; '.join(r['half_written']) or 'none'} | "
            f"{'; '.join(k + ' without ' + ', '.join(v) for k, v in r.get('unfinished', {}).items()) or '-'} | "
            f"{'ok' if r['rerun_ok'] else 'FAILED'} ({r['rerun_seconds']:.0f} s) | {r['resumed_from'] or '-'} | "
            f"{same} | {'yes' if r.get('weights_identical') else 'NO'} ({r.get('max_weight_difference', 0):.1e}) |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=10, help="points of the first series")
    ap.add_argument("--staged", action="store_true", help="also the second series (staged_points)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--work", default=str(ROOT / "runs" / "kill_anywhere"), help="scratch folder")
    ap.add_argument("--results", default=str(RESULT_FILE))
    ap.add_argument("--seed", type=int, default=28)
    args = ap.parse_args()
    work, results = Path(args.work), Path(args.results)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    ref = work / "reference"
    models = ("train/model", "merged_model")
    if not (ref / "summary.json").is_file() or args.staged:  # the second series times its own reference
        shutil.rmtree(ref, ignore_errors=True)
        done = attempt(bench_argv(args.data, ref), ref, None, log)
        if done["rc"] != 0:
            sys.exit(f"the reference run failed (rc {done['rc']}): see {log}")
        for name in ("reference_seconds", "reference_seconds_staged"):
            if name.endswith("_staged") == args.staged or not (work / name).is_file():
                (work / name).write_text(f"{done['seconds']}\n")
        for c in ref.glob("train/checkpoint-*"):  # the comparison needs none of them: 1.6 GB each
            shutil.rmtree(c)
    duration = float((work / "reference_seconds").read_text())
    points = bench_points(duration, args.points, args.seed)
    timed = {p.label: duration for p in points}  # the reference each point's moment was drawn from
    if args.staged:
        fresh = float((work / "reference_seconds_staged").read_text())
        print(f"reference run (timed now): {fresh:.0f} s", flush=True)
        second = staged_points(fresh, args.seed)
        points += second
        timed.update({p.label: fresh for p in second})
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    for point in points:
        if any(r["point"] == point.label for r in records):
            continue
        out = work / "point"
        rec = {
            **kill_and_resume(bench_argv(args.data, out), out, point, ref, models, log),
            "reference_s": timed[point.label],
        }
        shutil.rmtree(out, ignore_errors=True)
        records.append(rec)
        with open(results, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(table([rec]).splitlines()[-1], flush=True)
    print(table([r for r in records if r["point"] in {p.label for p in points}]))


if __name__ == "__main__":
    main()
