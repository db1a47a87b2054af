"""Every bad input: one line naming the file and line or field, exit status 2, no traceback."""

import subprocess
import sys

import pytest

from finsent.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finsent.cli", *args], capture_output=True, text=True, timeout=120
    )


def one_line_error(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_file(capsys, tmp_path):
    err = one_line_error(capsys, "data", "--data", str(tmp_path / "nope.csv"))
    assert "nope.csv: file not found" in err


def test_unreadable_encoding(capsys, tmp_path):
    path = tmp_path / "utf16.csv"
    path.write_bytes("text,label\nProfit up,positive\n".encode("utf-16"))
    err = one_line_error(capsys, "data", "--data", str(path))
    assert "utf16.csv:1: unreadable encoding" in err


def test_missing_column(capsys, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\nProfit up,positive\n")
    err = one_line_error(capsys, "data", "--data", str(path))
    assert "no column 'text' (--text-column)" in err and "sentence, label" in err


def test_label_outside_the_label_set(capsys, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nProfit up,positive\nHmm,mixed\n")
    err = one_line_error(capsys, "data", "--data", str(path))
    assert "d.csv:3: label 'mixed' is not one of positive, neutral, negative" in err


def test_empty_text(capsys, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "Profit up", "label": "positive"}\n{"text": "  ", "label": "neutral"}\n')
    err = one_line_error(capsys, "data", "--data", str(path))
    assert "d.jsonl:2: empty text" in err


def test_bad_config_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lora:\n  rank: 8\n")
    err = one_line_error(capsys, "evaluate", "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert "unknown key 'lora.rank'" in err


def test_skip_invalid_counts_rows(capsys, tmp_path):
    path = tmp_path / "d.csv"
    rows = ["Profit up,positive", "Hmm,mixed", " ,neutral", "Loss,negative", "Flat,neutral"]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    from finsent.data.readers import read_file

    ds = read_file(path, ["positive", "neutral", "negative"], skip_invalid=True)
    assert [e.text for e in ds.examples] == ["Profit up", "Loss", "Flat"]
    assert len(ds.invalid) == 2 and "d.csv:3" in ds.invalid[0] and "d.csv:4" in ds.invalid[1]


def test_malformed_line_is_skipped_and_reported(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"Profit up@positive\nbroken line\nLoss caf\xe9@negative\n")
    from finsent.data.readers import read_file

    ds = read_file(path, ["positive", "neutral", "negative"])
    assert [e.text for e in ds.examples] == ["Profit up", "Loss café"]
    assert ds.malformed == [f"{path}:2: no '@label' in 'broken line'"]


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"], ["evaluate", "--help"]])
def test_help_is_instant_and_does_not_import_torch(args):
    code = (
        "import sys; from finsent.cli import main\ntry: main(%r)\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
        % args
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip().endswith("False")


def test_error_exit_status_from_the_console_script(tmp_path):
    r = run_cli("data", "--data", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.txt: file not found" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "--batch-size", "0", "--out", "x"], "--batch-size/--batch_size: 0 is out of range"),
        (["evaluate", "--limit", "-5", "--out", "x"], "--limit: -5 is out of range"),
        (["serve", "--max-texts", "-1"], "--max-texts/--max_texts: -1 is out of range"),
        (["merge", "--adapter", "a", "--out", "b", "--min-agreement", "2"], "2 is out of range"),
        (
            ["train", "--train.per_device_train_batch_size", "0"],
            "train.per_device_train_batch_size: 0 is out of range",
        ),
        (["data", "--test-size", "1.5", "--split", "stratified"], "data.test_size: 1.5 is out of range"),
        # a ratio of 1 or more would reach transformers as that many warm-up steps
        (["train", "--train.warmup_ratio", "5"], "train.warmup_ratio: 5 is out of range"),
        (["train", "--train.max_steps", "-7"], "train.max_steps: -7 is out of range"),
    ],
)
def test_numbers_are_checked_before_any_work(capsys, args, message):
    try:
        code = main(args)  # a config option: finsent's own check
    except SystemExit as e:  # a command's own flag: argparse's check, through finsent's one-line error
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_repeated_column_names_are_an_error(capsys, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,text\nProfit up,positive,Profit down\n")
    err = one_line_error(capsys, "data", "--data", str(path))
    assert "d.csv: column name repeated in the header: text" in err


def test_outputs_keep_the_users_file_mode(tmp_path):
    import os

    from finsent.core.fsio import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_classifier_takes_one_string_as_one_text(clf):
    assert len(clf.predict("Operating profit rose .")) == 1
    assert len(clf.predict(["Operating profit rose .", "Net sales fell ."])) == 2


@pytest.mark.parametrize(
    "content", [b"not a gguf file at all\n", b"GGUF\x03\x00\x00\x00"], ids=["not-gguf", "truncated"]
)
def test_a_bad_gguf_model_is_one_line(capsys, tmp_path, content):
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    err = one_line_error(capsys, "predict", "--model", str(path), "--model.cache_dir", str(tmp_path), "hi")
    assert f"error: {path}: not a readable GGUF file (" in err  # no untuned-model warning before it
    assert not list((tmp_path / "models").glob("*/config.json"))  # nothing half-converted is trusted


@pytest.mark.parametrize(
    "config, message",
    [
        ("{not json", "cannot be read as JSON"),
        ("[1, 2]", "is not a JSON object"),
        ("{}", "names no peft_type"),
    ],
    ids=["bad-json", "not-an-object", "no-peft-type"],
)
def test_a_bad_adapter_config_is_one_line(capsys, tmp_path, tiny_model_dir, config, message):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(config)
    args = ["predict", "--model", str(tiny_model_dir), "--adapter", str(adapter), "Profit rose."]
    err = one_line_error(capsys, *args)
    assert f"--adapter {adapter}" in err and message in err


def test_the_classifier_refuses_what_the_server_and_predict_refuse(clf):
    """An empty text has no label on any path: the server answers 422, predict skips it as a bad row."""
    with pytest.raises(ValueError, match=r"texts\[1\]: empty text"):
        clf.predict(["Profit rose .", "  "])
    with pytest.raises(TypeError, match=r"texts\[0\]: not a string \(int\)"):
        clf.predict([5])


def test_the_dry_run_refuses_what_a_run_refuses_and_counts_steps_as_the_trainer(
    capsys, tmp_path, tiny_model_dir, all_data
):
    """--dry-run skipped Config.validate (full + 4-bit passed), a PEFT error was a traceback, and its
    step count rounded fractional epochs up to whole ones."""
    base = ["train", "--model", str(tiny_model_dir), "--data", str(all_data), "--dry-run"]
    err = one_line_error(capsys, *base, "--train.method", "full", "--load-in-4bit")
    assert "a 4-bit base cannot" in err
    err = one_line_error(capsys, *base, "--lora.target_modules", "nonexistent_proj")
    assert "lora: Target modules {'nonexistent_proj'} not found" in err
    assert main([*base, "--train.num_train_epochs", "1.5"]) == 0
    assert "optimizer steps  170 (900 examples, 1.5 epochs" in capsys.readouterr().out  # ceil(1.5 * 113)


def test_4_bit_on_a_cpu_and_a_bad_device_are_refused_before_the_folder_is_touched(
    capsys, tmp_path, tiny_model_dir, all_data
):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: 4-bit would train")
    out = tmp_path / "r4"
    err = one_line_error(capsys, "train", "--model", str(tiny_model_dir), "--data", str(all_data),
                         "--load-in-4bit", "--out", str(out))  # fmt: skip
    assert "--load-in-4bit needs a CUDA GPU" in err and not out.exists()
    err = one_line_error(
        capsys, "predict", "--model", str(tiny_model_dir), "--device", "gpu", "Profit rose ."
    )
    assert "--device gpu: use auto, cpu, cuda, cuda:N, mps or xpu" in err


def test_a_run_or_training_folder_as_model_names_the_model_inside(tmp_path):
    from finsent.core.errors import FinsentError
    from finsent.modeling.load import resolve_model

    (tmp_path / "run" / "merged_model").mkdir(parents=True)
    (tmp_path / "run" / "merged_model" / "config.json").write_text("{}")
    (tmp_path / "lora" / "adapter").mkdir(parents=True)
    (tmp_path / "lora" / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(FinsentError, match=f"it holds a model: --model {tmp_path / 'run' / 'merged_model'}$"):
        resolve_model(str(tmp_path / "run"))
    with pytest.raises(
        FinsentError, match=f"it holds an adapter: --adapter {tmp_path / 'lora' / 'adapter'}$"
    ):
        resolve_model(str(tmp_path / "lora"))
    with pytest.raises(FinsentError, match=r"not a Hugging Face model folder\)$"):
        resolve_model(str(tmp_path))
