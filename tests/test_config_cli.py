"""Options as users of HF/TRL write them: bare and --no- booleans, dashes or underscores, earlier names,
pass-through of other SFTConfig keys, and one validate() that never edits the caller's config."""

import json
import subprocess
import sys

import pytest

from finsent.cli import COMMANDS, main
from finsent.cli.flags import parse
from finsent.core.config import build_config
from finsent.core.errors import FinsentError
from finsent.core.options import Config


def parsed(*argv: str) -> dict:
    return parse(COMMANDS, list(argv))[3]


def test_boolean_flags_bare_negated_and_valued():
    assert parsed("data", "--dedupe") == {"data.dedupe": True}
    assert parsed("data", "--no-dedupe") == {"data.dedupe": False}
    assert parsed("train", "--train.fast", "false") == {"train.fast": False}
    assert parsed("train", "--train.fast") == {"train.fast": True}
    assert parsed("train", "--no-train.fast") == {"train.fast": False}


def test_dash_and_underscore_spellings_are_the_same_option():
    a = parsed("train", "--train.learning-rate", "1e-4", "--text_column", "sentence")
    b = parsed("train", "--train.learning_rate", "1e-4", "--text-column", "sentence")
    assert a == b == {"train.learning_rate": "1e-4", "data.text_column": "sentence"}
    assert parse(COMMANDS, ["train", "--dry_run"])[2].dry_run


def test_the_seed_split_and_template_are_now_called_notebook(tmp_path):
    cfg = build_config(overrides={"data.split": "seed", "prompt.template": "seed"})
    assert (cfg.data.split, cfg.prompt.template) == ("notebook", "notebook")
    assert parsed("data", "--split", "seed") == {"data.split": "seed"}  # accepted by the parser too
    with pytest.raises(SystemExit):
        parse(COMMANDS, ["data", "--split", "random-ish"])


def test_help_shows_defaults_choices_and_an_example(capsys):
    for command in ("data", "evaluate", "train", "merge", "run", "predict", "serve", "export", "env"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "example:" in text and f"finsent {command}" in text, command
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    common = " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["train", "--help-all"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.0002)" in text and "{auto,notebook,stratified,random,file}" in text
    # --help lists the common options (those with a short flag); --help-all every option
    assert "{auto,notebook,stratified,random,file}" in common and "--train.lr_scheduler_type" not in common
    assert "--train.lr_scheduler_type" in text and len(common) < len(text) / 2


def test_version_and_env():
    from finsent import __version__

    r = subprocess.run([sys.executable, "-m", "finsent", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"finsent {__version__}"
    r = subprocess.run([sys.executable, "-m", "finsent", "env", "--json"], capture_output=True, text=True)
    info = json.loads(r.stdout)
    assert info["finsent"] == __version__ and info["device (auto)"] in ("cpu", "cuda")
    assert info["dtype (auto)"].split(" for scoring")[0] in ("float32", "bfloat16", "float16")


def test_extra_trainer_keys_pass_through(tmp_path):
    from finsent.training.args import sft_config

    cfg = build_config(overrides={"train.extra": "{eval_accumulation_steps: 2, logging_first_step: false}"})
    cfg.train.output_dir = str(tmp_path)
    args = sft_config(cfg, on_cuda=False, n_eval=0)
    assert args.eval_accumulation_steps == 2 and args.logging_first_step is False
    assert args.save_total_limit is None  # the default keeps every checkpoint, as the notebooks did
    cfg.train.extra = {"save_total_limit": 2}
    with pytest.raises(FinsentError, match="train.extra.save_total_limit: set train.save_total_limit"):
        sft_config(cfg, on_cuda=False, n_eval=0)
    cfg.train.extra = {}
    cfg.train.save_total_limit = 2
    assert sft_config(cfg, on_cuda=False, n_eval=0).save_total_limit == 2
    cfg.train.extra = {"learning_rate": 1.0}
    with pytest.raises(FinsentError, match="train.extra.learning_rate: set train.learning_rate instead"):
        sft_config(cfg, on_cuda=False, n_eval=0)
    cfg.train.extra = {"no_such_key": 1}
    with pytest.raises(FinsentError, match="train.extra.no_such_key: not a TrainingArguments"):
        sft_config(cfg, on_cuda=False, n_eval=0)


def test_validate_returns_a_resolved_copy_and_never_mutates():
    cfg = Config()
    cfg.train.fast, cfg.train.gradient_checkpointing = True, True
    resolved = cfg.validate(world_size=2)
    assert cfg.train.fast and cfg.train.gradient_checkpointing  # the caller's config is untouched
    assert resolved.train.fast  # DDP keeps the fast path (run inside DDP's forward: parallel.py)
    single = cfg.validate(world_size=1)
    assert single.train.fast and not single.train.gradient_checkpointing  # fast needs the kv cache
    cfg.train.packing = True
    with pytest.raises(FinsentError, match="exclude each other"):
        cfg.validate()


def one_line(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(COMMANDS, list(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_flag_spellings_review(capsys):
    """Every spelling's --no- form; no value after --no-; no silent abbreviations; a bad boolean is a
    usage line; an unknown flag is named by the command's own parser."""
    assert parsed("train", "--no-data.dedupe") == {"data.dedupe": False}
    assert parsed("train", "--no-train.group-by-length") == {"train.group_by_length": False}
    assert "unrecognized arguments: false" in one_line(capsys, "train", "--no-train.fast", "false")
    # a --no- form takes no value: what follows is the command's own argument (predict's text)
    assert parse(COMMANDS, ["predict", "--no-load-in-4bit", "Profit rose ."])[2].texts == ["Profit rose ."]
    assert "cannot read 'maybe' as bool" in one_line(capsys, "train", "--train.fast", "maybe")
    err = one_line(capsys, "train", "--train.max_step", "2")
    assert err.startswith("finsent train: error: unrecognized arguments: --train.max_step 2")


def test_wrong_types_are_refused_not_truncated(tmp_path):
    for key, value in (("lora.r", True), ("train.learning_rate", True), ("lora.r", "1.5e0"), ("lora.r", 1.5)):
        with pytest.raises(FinsentError, match="cannot read"):
            build_config(overrides={key: value})
    assert build_config(overrides={"lora.r": "1e1"}).lora.r == 10
    with pytest.raises(FinsentError, match="train.extra: not a YAML mapping"):
        build_config(overrides={"train.extra": "{a: [1"})


def test_a_saved_config_fed_back_neither_clears_nor_resumes_nor_moves_the_run(tmp_path, monkeypatch):
    """A saved config held train.overwrite: true, so `--config saved.yaml` cleared the run's checkpoints
    without --overwrite; and a model folder's config sent a new training into that model's run folder."""
    from finsent.core.config import load_saved_config, resolve, save_config

    cfg = Config()
    cfg.train.overwrite = cfg.train.resume = True
    cfg.train.output_dir = str(tmp_path / "old-run" / "train")
    save_config(cfg, tmp_path / "model")
    saved = load_saved_config(tmp_path / "model")
    assert not saved.train.overwrite and not saved.train.resume
    assert (
        resolve(overrides={"model.model": str(tmp_path / "model")}).train.output_dir
        == Config().train.output_dir
    )
    # a --config file still says where its run goes
    assert resolve(str(tmp_path / "model" / "finsent_config.yaml")).train.output_dir == cfg.train.output_dir


def test_a_template_file_travels_as_its_text(tmp_path, monkeypatch):
    """The saved config named a template file by a relative path: read elsewhere, or with the model
    moved or pushed, the prompt was gone. It carries the file's text, which build_template reads."""
    from finsent.core.config import load_saved_config, save_config
    from finsent.core.prompts import build_template

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("Headline: {text}\nSentiment:")
    cfg = Config()
    cfg.prompt.template = "t.txt"
    save_config(cfg, tmp_path / "m")
    monkeypatch.chdir("/")
    saved = load_saved_config(tmp_path / "m")
    assert saved.prompt.template == "Headline: {text}\nSentiment:"
    t = build_template(saved.prompt.template, ["positive", "neutral", "negative"])
    assert t == build_template(str(tmp_path / "t.txt"), ["positive", "neutral", "negative"])
    cfg.prompt.template = "notebook"  # a name stays a name
    save_config(cfg, tmp_path / "m")
    assert load_saved_config(tmp_path / "m").prompt.template == "notebook"


def test_a_test_file_is_never_ignored(tmp_path, capsys):
    from finsent.data.splits import make_splits

    rows = "".join(
        f"Profit {i} rose .,positive\nSales {i} fell .,negative\nHe {i} said .,neutral\n" for i in range(10)
    )
    (tmp_path / "train.csv").write_text("text,label\n" + rows)
    (tmp_path / "test.csv").write_text("text,label\nA new sentence .,neutral\n")
    cfg = build_config(
        overrides={"data.data": str(tmp_path / "train.csv"), "data.test_data": str(tmp_path / "test.csv")}
    )
    assert [e.text for e in make_splits(cfg.data)[1]["test"]] == ["A new sentence ."]  # auto: the file
    cfg.data.split = "random"  # a note (configs saved so by an older finsent still load), not silence
    assert "A new sentence ." not in [e.text for e in make_splits(cfg.data)[1]["test"]]
    assert (
        "is not read: a test file is the test split with --split file, not random" in capsys.readouterr().err
    )
    # with sources, each source has its own test split: --test-data is not every source's test file
    cfg = build_config(
        overrides={
            "data.sources": [str(tmp_path / "train.csv")],
            "data.test_data": str(tmp_path / "test.csv"),
        }
    )
    assert "A new sentence ." not in [e.text for e in make_splits(cfg.data)[1]["test"]]


def test_saved_paths_keep_a_symlinks_name_and_a_source_path_with_spaces(tmp_path, monkeypatch):
    from finsent.core.config import load_saved_config, save_config

    (tmp_path / "sp ace").mkdir()
    (tmp_path / "sp ace" / "a.csv").write_text("text,label\nx,positive\n")
    (tmp_path / "all-data.csv").write_text("x")
    (tmp_path / "sp ace" / "mine.csv").symlink_to(tmp_path / "all-data.csv")  # its name decides the split
    monkeypatch.chdir(tmp_path / "sp ace")  # (entries are split on whitespace: an absolute path with one
    cfg = Config()  # would not read back)
    cfg.data.data, cfg.data.sources = "mine.csv", ["a.csv weight=2"]
    save_config(cfg, tmp_path / "out")
    saved = load_saved_config(tmp_path / "out")
    assert saved.data.data == str(tmp_path / "sp ace" / "mine.csv") and saved.data.sources == [
        "a.csv weight=2"
    ]


def test_a_run_resumed_from_its_saved_config_is_the_same_run(tmp_path, monkeypatch):
    """`finsent train --config RUN/finsent_config.yaml --resume` was refused as other options: the stamp
    hashed `d.csv` and the template's file name, the saved config spells an absolute path and the text."""
    from finsent.core.config import load_saved_config, save_config
    from finsent.training.checkpoints import config_hash

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("text,label\nx,positive\n")
    (tmp_path / "t.txt").write_text("Say: {text}")
    cfg = Config()
    cfg.data.data, cfg.prompt.template = "d.csv", "t.txt"
    save_config(cfg, tmp_path / "run")
    assert config_hash(load_saved_config(tmp_path / "run")) == config_hash(cfg)
    assert config_hash(cfg, as_saved=False) != config_hash(cfg)  # (stamps written before: still accepted)
