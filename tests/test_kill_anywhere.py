"""SIGKILL `finsent train` and `finsent run` inside their writes (a checkpoint, the model's save, the copy
to merged_model/ and its certification, an evaluation folder, the report) and at a random moment, rerun with --resume each time, and check: after
every kill no artefact under its real name is half-written and no cut-off checkpoint is resumed from;
at the end the weights and predictions equal an uninterrupted run's (bench/kill_anywhere.py, the same
harness on the embedded model; docs/reliability.md).

Equality: every predictions.csv byte-identical, and every weight within torch.testing's tolerance of
test_train.py::test_resume_matches_uninterrupted_run (atol 1e-5, rtol 1e-4); on this CPU they come out
bit-identical, which `max_weight_difference` records.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from bench.kill_anywhere import KillPoint, attempt, compare, defects, inspect, resumed_from

LABELS = {"positive": "rose", "negative": "fell", "neutral": "said"}
WORDS = ["profit", "loss", "contract", "sales", "jobs", "company", "value", "period"]


def tiny_csv(path: Path) -> Path:
    """12 rows a label; the verb decides the label (stratified 80/10/10: 4 training steps of 8)."""
    rng = random.Random(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for label, verb in LABELS.items():
            w.writerows(
                [f"The {rng.choice(WORDS)} {verb} {rng.choice(WORDS)} {i} .", label] for i in range(12)
            )
    return path


def argv(command: str, model: Path, data: Path, out: Path) -> list[str]:
    """The full fine-tuning CPU recipe on the tiny model, a checkpoint after every step."""
    return [
        command, "--config", "smollm2-cpu", "--model", str(model), "--data", str(data),
        "--data.split", "stratified", "--train.num_train_epochs", "1",
        "--train.per_device_train_batch_size", "8", "--train.save_steps", "1", "--model.dtype", "float32",
        "--train.report_to", "none", "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """An uninterrupted `finsent run`: (its folder, its seconds, the data file)."""
    tmp = tmp_path_factory.mktemp("kill-reference")
    data = tiny_csv(tmp / "data.csv")
    done = attempt(argv("run", tiny_model_dir, data, tmp / "ref"), tmp / "ref", None, tmp / "log.txt")
    assert done["rc"] == 0, done["log"][-3000:]
    # the shipped config keeps the newest checkpoint only (train.save_total_limit 1)
    assert [p.name for p in (tmp / "ref" / "train").glob("checkpoint-*")] == ["checkpoint-4"]
    return tmp / "ref", done["seconds"], data


def kill_chain(command: list[str], out: Path, points: list[KillPoint], ref: Path, log: Path) -> list[dict]:
    """Kill at each point in turn, each attempt a rerun (--resume after the first) of the one before's
    folder; check after each kill, then run to the end. Returns what each kill found."""
    found, partial = [], set()
    for i, point in enumerate([*points, None]):
        done = attempt(command + (["--resume"] if i else []), out, point, log)
        # never resumed from a checkpoint that a kill had cut off
        assert resumed_from(done["log"]) not in partial, done["log"][-3000:]
        if point is None:
            assert done["rc"] == 0, done["log"][-3000:]
            break
        if point.hook:  # the kill landed where it was aimed
            assert done["killed"] and "kill_anywhere: SIGKILL at" in done["log"], done["log"][-3000:]
        state = inspect(out, ref)
        assert defects(state) == [], (point.label, state)
        partial = {Path(c).name for c, v in state["checkpoints"].items() if v != "complete"}
        found.append({"point": point.label, "stage": done["stage"], "seconds": done["seconds"], **state})
    return found


def test_train_killed_in_a_checkpoint_at_random_and_in_the_model_save(reference, tiny_model_dir, tmp_path):
    ref, seconds, data = reference
    out = tmp_path / "t"
    points = [
        # checkpoint-2's weights written, its tokenizer, optimizer and trainer state not (torch.save and
        # safetensors write from C++ and Rust: the audit hook sees Python's own open() only)
        KillPoint("inside checkpoint-2's save", hook=("open", "*/checkpoint-2/tokenizer_config.json", 1)),
        # the rerun from checkpoint-1 saved checkpoint-2 whole and is deleting checkpoint-1 (the newest
        # only is kept): some of its files gone, its optimizer state not yet
        KillPoint("inside the old checkpoint's removal", hook=("remove", "optimizer.pt", 1)),
        # anywhere in a rerun that resumes from checkpoint-2 (training is about a third of a run)
        KillPoint("random moment", at=random.Random(28).uniform(0, seconds / 3)),
        # model/ being written under its hidden name (weights saved, tokenizer not)
        KillPoint("inside the model's save", hook=("open", "*/.model.partial-*/tokenizer_config.json", 1)),
    ]
    found = kill_chain(
        argv("train", tiny_model_dir, data, out), out, points, ref / "train", tmp_path / "log.txt"
    )
    assert found[0]["checkpoints"]["checkpoint-2"].startswith("partial: missing")
    # the rotation cut off: the old checkpoint partial, the new one whole (the next attempt resumes from
    # it: kill_chain checks that no partial checkpoint is ever resumed from)
    assert found[1]["checkpoints"]["checkpoint-1"].startswith("partial: missing")
    assert found[1]["checkpoints"]["checkpoint-2"] == "complete"
    assert any(name.startswith(".model.partial-") for name in found[3]["leftovers"])
    assert "model/" not in found[3]["artefacts"]  # never under its real name half-written
    final = inspect(out, ref / "train")
    # the model and the log are whole, the killed saves' temporaries are gone
    assert defects(final) == [] and final["leftovers"] == []
    same = compare(out, ref / "train", ("model",))
    assert same["weights_close"], same


def test_run_killed_in_a_checkpoint_the_copy_an_evaluation_and_the_report(
    reference, tiny_model_dir, tmp_path
):
    ref, _, data = reference
    out = tmp_path / "r"
    points = [
        # everything of checkpoint-3 but its trainer state, written last: is_complete must reject it
        KillPoint("inside checkpoint-3's save", hook=("open", "*/checkpoint-3/trainer_state.json", 1)),
        # the copy to merged_model/ cut off as its weights start
        KillPoint("inside the copy", hook=("open", "*/.merged_model.partial-*/model.safetensors", 1)),
        # the fine-tuned model's evaluation folder: its metrics written, its predictions not
        KillPoint("inside an evaluation", hook=("open", "*/.finetuned.partial-*/.predictions.csv.*", 1)),
        # the copy whole and checked, its parity record about to be written: not yet certified
        KillPoint("inside the certification", hook=("open", "*/.merged_model.partial-*/.merge_parity.json.*", 1)),
        # summary.json written, report.md written in full under its temporary name, not yet renamed
        KillPoint("inside the report", hook=("rename", "*/.report.md.*", 1)),
    ]  # fmt: skip
    found = kill_chain(argv("run", tiny_model_dir, data, out), out, points, ref, tmp_path / "log.txt")
    assert found[0]["checkpoints"]["train/checkpoint-3"].startswith("partial:")
    # what was being written is under a hidden name; under its own name a folder is whole (kill_chain's
    # check) or absent: merged_model/ never was placed, finetuned/ is the earlier attempt's whole folder
    hidden = [".merged_model.partial-", ".finetuned.partial-", ".merged_model.partial-"]
    for found_i, name in zip(found[1:4], hidden):
        assert any(n.startswith(name) for n in found_i["leftovers"]), found_i
    assert "merged_model/" not in found[1]["artefacts"] and "merged_model/" not in found[3]["artefacts"]
    assert found[4]["artefacts"]["summary.json"] == "complete" and "report.md" not in found[4]["artefacts"]
    final = inspect(out, ref)
    assert defects(final) == [] and final["leftovers"] == []
    same = compare(out, ref, ("train/model", "merged_model"))
    assert same["predictions_identical"] == {"baseline": True, "finetuned": True, "merged": True}, same
    assert same["weights_close"], same


def test_a_rerun_removes_what_killed_writers_left_and_nothing_else(tmp_path):
    """The regression of the kills above: a cut-off `.merged_model.partial-*` copy (as large as the
    model) and unrenamed `.NAME.*.tmp` files stayed in the folder for good; run and train now remove
    them under their lock (fsio.remove_leftovers)."""
    import tempfile

    from finsent.core.fsio import remove_leftovers

    left = [
        tempfile.mkdtemp(prefix=".merged_model.partial-", dir=tmp_path),
        tempfile.mkdtemp(prefix=".model.old-", dir=tmp_path),
        tempfile.mkstemp(prefix=".report.md.", suffix=".tmp", dir=tmp_path)[1],
    ]
    (Path(left[0]) / "model.safetensors").write_bytes(b"cut")
    kept = [".finsent.lock", ".gitignore", "notes.tmp", "merged_model", ".hidden.tmp"]
    for name in kept:
        (tmp_path / name).write_text("x")
    assert sorted(remove_leftovers(tmp_path, tmp_path / "absent")) == sorted(Path(p).name for p in left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
