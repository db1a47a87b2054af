"""Sharded, resumable `finsent predict`: torchrun with 2 CPU processes writes what one process writes,
and a restarted run skips the shards already written."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finsent.core.errors import FinsentError

TORCHRUN = Path(sys.executable).parent / "torchrun"
needs_torchrun = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    """In-process calls run as one process, whatever launched pytest."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def write_input(all_data: Path, path: Path, n: int = 300) -> Path:
    """`n` sentences of all-data.csv with an id column, plus a bad row (empty text) and a text with
    a line break and quotes (a CSV field over two lines), so that shards must join rows exactly."""
    rows = []
    with open(all_data, encoding="latin-1", newline="") as fh:
        for i, (_, text) in enumerate(csv.reader(fh)):
            if i == n:
                break
            rows.append([i, text])
    rows.insert(57, ["bad", "   "])
    rows.insert(200, ["multi", 'Profit rose "sharply" .\nSales fell , the company said .'])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerows(rows)
    return path


def cli(model_dir: Path, inp: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "finsent", "predict", "--model", str(model_dir), "--dtype", "float32", "--input", str(inp),
            "--out", str(out), *extra]  # fmt: skip


def run(args: list[str], torchrun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var, None)
    launcher = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2"] if torchrun else [sys.executable]
    # a session of its own: on a timeout torchrun's workers go too, not only torchrun
    proc = subprocess.Popen(
        launcher + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def assert_same_predictions(a: list[list[str]], b: list[list[str]], atol: float = 1e-5) -> None:
    """Same header, ids, texts and labels in the same order; probabilities equal to `atol`."""
    assert a[0] == b[0] and len(a) == len(b)
    for x, y in zip(a[1:], b[1:]):
        assert x[:3] == y[:3]
        assert [float(p) for p in x[3:]] == pytest.approx([float(p) for p in y[3:]], abs=atol)


@needs_torchrun
def test_torchrun_two_processes_match_one(tiny_model_dir, all_data, tmp_path):
    inp = write_input(all_data, tmp_path / "in.csv")
    one = run(cli(tiny_model_dir, inp, tmp_path / "one.csv"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run(cli(tiny_model_dir, inp, tmp_path / "two.csv"), torchrun=True)
    assert two.returncode == 0, two.stderr[-3000:]
    # the shard plan is whole 256-row chunks, so both runs make the same batches: identical bytes
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    rows = read_rows(tmp_path / "two.csv")
    assert [r[0] for r in rows[:6]] == ["id", "0", "1", "2", "3", "4"]
    assert len(rows) == 1 + 301  # 300 sentences + the two-line one; the empty one is skipped
    assert "multi" in [r[0] for r in rows] and "bad" not in [r[0] for r in rows]
    assert "2 shards" in two.stderr and "skipped" in two.stderr  # the bad row is reported once
    assert two.stderr.count("empty text") == 1
    assert not (tmp_path / "two.csv.shards").exists()


def test_one_process_sharded_matches_plain(clf, all_data, tmp_path, monkeypatch):
    """--shard-rows alone (no torchrun): 3 shards, the same JSONL bytes as the streamed path, made by
    the same classify() calls (one loop: a shard's batches are the plain run's batches of its rows)."""
    from finsent.serving.predict import predict
    from finsent.serving.rows import Input

    real, batches = clf.predict, []
    monkeypatch.setattr(clf, "predict", lambda texts: batches.append(list(texts)) or real(texts))
    inp = write_input(all_data, tmp_path / "in.csv", n=600)
    plain = predict(clf, Input(path=str(inp)), str(tmp_path / "plain.jsonl"))
    plain_batches, batches[:] = list(batches), []
    sharded = predict(clf, Input(path=str(inp)), str(tmp_path / "sharded.jsonl"), shard_rows=256)
    assert sharded["shards"] == 3 and sharded["predicted"] == plain["predicted"] == 601
    # 602 input rows, the bad one (row 58) in the first chunk: 255 + 256 + 90 texts
    assert [len(b) for b in plain_batches] == [255, 256, 90] and batches == plain_batches
    assert (tmp_path / "sharded.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
    assert not (tmp_path / "sharded.jsonl.shards").exists()


def interrupted_run(clf, inp: Path, out: Path, monkeypatch) -> Path:
    """A run killed while classifying its second shard: shard 0 written, shard 1 not."""
    from finsent.serving.predict import predict
    from finsent.serving.rows import Input

    real, calls = clf.predict, []

    def dies(texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(texts)

    monkeypatch.setattr(clf, "predict", dies)
    with pytest.raises(KeyboardInterrupt):
        predict(clf, Input(path=str(inp)), str(out), shard_rows=256)
    monkeypatch.setattr(clf, "predict", real)
    folder = out.with_name(out.name + ".shards")
    names = sorted(p.name for p in folder.iterdir())
    # no temporary file of the unfinished shard, no output
    assert names == ["manifest.json", "part-00000-of-00002.csv", "part-00000-of-00002.json"], names
    assert not out.exists()
    return folder


@needs_torchrun
def test_restart_skips_written_shard(clf, tiny_model_dir, all_data, tmp_path, monkeypatch):
    from finsent.serving.predict import predict
    from finsent.serving.rows import Input

    inp = write_input(all_data, tmp_path / "in.csv")
    predict(clf, Input(path=str(inp)), str(tmp_path / "plain.csv"))
    folder = interrupted_run(clf, inp, tmp_path / "out.csv", monkeypatch)
    # mark shard 0 (same byte length, so its marker still vouches for it): a rerun must take it as written
    part = folder / "part-00000-of-00002.csv"
    rows = read_rows(part)
    rows[0][2] = rows[0][2].upper()
    with open(part, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    assert part.stat().st_size == json.loads((folder / "part-00000-of-00002.json").read_text())["bytes"]

    # two processes now, and no --shard-rows: the manifest's plan is resumed
    again = run(cli(tiny_model_dir, inp, tmp_path / "out.csv"), torchrun=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rank 0: 1 of 1 shards already written, skipped (part-00000-of-00002)" in again.stderr
    assert "(1 from an earlier run)" in again.stderr
    out, plain = read_rows(tmp_path / "out.csv"), read_rows(tmp_path / "plain.csv")
    assert out[1][2] == plain[1][2].upper()  # shard 0 came from disk, not from the model
    out[1][2] = plain[1][2]
    assert_same_predictions(out, plain)
    assert not folder.exists()


def test_changed_input_or_options_refused(clf, tiny_model_dir, all_data, tmp_path, monkeypatch, capsys):
    from finsent.cli import main
    from finsent.serving.predict import predict
    from finsent.serving.rows import Input

    inp = write_input(all_data, tmp_path / "in.csv")
    interrupted_run(clf, inp, tmp_path / "out.csv", monkeypatch)
    with pytest.raises(FinsentError, match=r"another strict: rerun with the same input and options"):
        predict(clf, Input(path=str(inp), strict=True), str(tmp_path / "out.csv"), shard_rows=256)
    with open(inp, "a", encoding="utf-8") as fh:
        fh.write("999,One more sentence .\n")
    # the command line: one line, exit status 2, and the partial run is left alone
    code = main(cli(tiny_model_dir, inp, tmp_path / "out.csv", "--shard-rows", "256")[2:])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith("finsent predict: error: ") and "holds a partial run with another input" in err
    assert (tmp_path / "out.csv.shards" / "part-00000-of-00002.json").exists()


def test_sharding_needs_a_file_input_and_output(clf, tmp_path):
    from finsent.serving.predict import predict
    from finsent.serving.rows import Input

    with pytest.raises(FinsentError, match="needs --input FILE and --out FILE"):
        predict(clf, Input(["Profit rose ."]), str(tmp_path / "o.csv"), shard_rows=10)
    with pytest.raises(FinsentError, match="needs --input FILE and --out FILE"):
        predict(clf, Input(path=str(tmp_path / "missing.csv")), None, shard_rows=10)


def test_a_model_replaced_in_place_is_refused_on_resume(tiny_model_dir, all_data, tmp_path, monkeypatch):
    """The manifest named the model by its path only: a folder replaced between a kill and the rerun had
    its predictions mixed with the old model's (512 of 1,500 rows in the review)."""
    import shutil

    from finsent.serving.api import Classifier
    from finsent.serving.predict import predict
    from finsent.serving.rows import Input

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    clf = Classifier.load(str(model), dtype="float32")
    inp = write_input(all_data, tmp_path / "in.csv")
    interrupted_run(clf, inp, tmp_path / "out.csv", monkeypatch)
    weights = next(model.glob("*.safetensors"))
    shutil.copyfile(weights, tmp_path / "w")
    os.replace(tmp_path / "w", weights)  # another file under the same name
    with pytest.raises(FinsentError, match=r"holds a partial run with another model_files"):
        predict(clf, Input(path=str(inp)), str(tmp_path / "out.csv"), shard_rows=256)


def test_a_run_started_before_model_files_were_recorded_resumes(clf, all_data, tmp_path, monkeypatch, capsys):
    from finsent.serving.predict import predict
    from finsent.serving.rows import Input

    inp = write_input(all_data, tmp_path / "in.csv")
    folder = interrupted_run(clf, inp, tmp_path / "out.csv", monkeypatch)
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("model_files", "adapter_files"):  # as an older finsent wrote it
        del manifest["options"][key]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    predict(clf, Input(path=str(inp)), str(tmp_path / "out.csv"), shard_rows=256)
    assert "started by an older finsent" in capsys.readouterr().err and not folder.exists()


def test_every_row_bad_leaves_no_sharded_output(clf, tmp_path):
    from finsent.serving.predict import predict
    from finsent.serving.rows import Input

    inp = tmp_path / "bad.jsonl"
    inp.write_text('{"text": ""}\n' * 12)
    with pytest.raises(FinsentError, match="every one of the 12 input rows was bad"):
        predict(clf, Input(path=str(inp)), str(tmp_path / "x.csv"), shard_rows=5)
    assert not (tmp_path / "x.csv").exists()
