"""Decisions made once: an adapter's base is checked whatever names a model, --seed seeds training
(the split has --split-seed), one range check for files and flags, and one mark for the options that do
not change what a run produces (resume hash, sharded predict)."""

import json

import pytest
import yaml

from finsent.cli import COMMANDS, main
from finsent.cli.flags import parse
from finsent.core.config import build_config, resolve
from finsent.core.errors import FinsentError
from finsent.core.options import SECTIONS, Config, affects_outputs, outputs_only


def _adapter(tmp_path, base: str):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    return folder


def test_a_config_file_cannot_replace_the_adapters_base(tmp_path):
    adapter = _adapter(tmp_path, "meta-llama/Llama-3.2-1B")
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text(yaml.safe_dump({"model": {"model": "smollm2-135m"}}))
    with pytest.raises(
        FinsentError, match=r"cfg.yaml: model.model smollm2-135m: the adapter .* was trained on"
    ):
        resolve(str(yaml_file), {}, str(adapter))
    # the same base in the file, or none, passes; a shipped config naming another model is refused too
    yaml_file.write_text(yaml.safe_dump({"model": {"model": "meta-llama/Llama-3.2-1B"}}))
    assert resolve(str(yaml_file), {}, str(adapter)).model.model == "meta-llama/Llama-3.2-1B"
    with pytest.raises(FinsentError, match="smollm2-cpu.yaml: model.model"):
        resolve("smollm2-cpu", {}, str(adapter))


def test_the_refusal_is_one_line_exit_2_from_the_cli(tmp_path, capsys):
    adapter = _adapter(tmp_path, "meta-llama/Llama-3.2-1B")
    code = main(
        ["evaluate", "--config", "smollm2-cpu", "--adapter", str(adapter), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "was trained on meta-llama/Llama-3.2-1B" in err


def test_seed_is_the_training_seed_and_the_split_has_its_own():
    over = parse(COMMANDS, ["train", "--seed", "7", "--split-seed", "3"])[3]
    assert over == {"train.seed": "7", "data.seed": "3"}
    cfg = build_config(overrides=over)
    assert (cfg.train.seed, cfg.data.seed) == (7, 3)
    saved = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))  # what finsent_config.yaml records
    assert (saved["train"]["seed"], saved["data"]["seed"]) == (7, 3)
    assert parse(COMMANDS, ["data", "--split-seed", "5"])[3] == {"data.seed": "5"}


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("train.per_device_train_batch_size", 0, "must be at least 1"),
        ("data.test_size", 1.5, "must be above 0 and below 1"),
        ("lora.lora_dropout", 1.0, "must be at least 0 and below 1"),
    ],
)
def test_one_range_check_for_files_and_flags(key, value, why, tmp_path, capsys):
    yaml_file = tmp_path / "c.yaml"
    section, name = key.split(".")
    yaml_file.write_text(yaml.safe_dump({section: {name: value}}))
    with pytest.raises(FinsentError) as from_file:
        build_config(str(yaml_file))
    with pytest.raises(FinsentError) as from_flag:
        build_config(overrides={key: str(value)})
    assert why in str(from_file.value) and why in str(from_flag.value)
    assert str(from_file.value).split(": ", 1)[1] == str(from_flag.value).split(": ", 1)[1]


def test_at_most_is_checked_for_command_flags(capsys):
    with pytest.raises(SystemExit) as e:
        parse(COMMANDS, ["serve", "--port", "70000"])
    assert (
        e.value.code == 2
        and "70000 is out of range (must be at least 0 and at most 65535)" in capsys.readouterr().err
    )


def test_options_that_do_not_change_outputs_leave_the_resume_hash_alone():
    from finsent.training.checkpoints import config_hash

    base = Config()
    for key, value in [
        ("model.device", "cpu"),
        ("train.report_to", "none"),
        ("train.logging_steps", 3),
        ("train.output_dir", "elsewhere"),
        ("train.eval_batch_size", 7),
    ]:
        other = build_config(overrides={key: value})
        assert config_hash(other) == config_hash(base), key
    for key, value in [("train.learning_rate", 1e-3), ("train.seed", 1), ("data.seed", 1), ("lora.r", 8)]:
        assert config_hash(build_config(overrides={key: value})) != config_hash(base), key


def test_outputs_only_drops_exactly_the_marked_options():
    d = outputs_only(Config().to_dict())
    for sec, cls in SECTIONS.items():
        for name in cls.__dataclass_fields__:
            assert (name in d[sec]) == affects_outputs(sec, name)
    assert not affects_outputs("model", "device") and affects_outputs("model", "dtype")


def test_every_loader_checks_the_adapters_base(tiny_model_dir, tmp_path):
    """Not only the CLI: the Python API, evaluate and merge load through load_model, which refuses an
    adapter on another base; a registry name and its hub id, or the folder a name resolved to, agree."""
    from finsent.core.config import same_model
    from finsent.modeling.load import load_model
    from finsent.serving.api import Classifier

    adapter = _adapter(tmp_path, "meta-llama/Llama-3.2-1B")
    cfg = Config()
    cfg.model.model = str(tiny_model_dir)
    with pytest.raises(FinsentError, match="it was trained on meta-llama/Llama-3.2-1B"):
        load_model(cfg.model, str(adapter))
    with pytest.raises(FinsentError, match="it was trained on meta-llama/Llama-3.2-1B"):
        Classifier.from_config(cfg, str(adapter))
    assert same_model("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert same_model("smollm2-135m", str(tiny_model_dir), resolved=tiny_model_dir)
    assert not same_model("smollm2-135m", "meta-llama/Llama-3.2-1B")
