"""One way to name a model everywhere: flag > --config FILE > the config saved beside the adapter or
model folder > defaults, for every command; conflicts are one-line errors."""

import json

import pytest

from finsent.core.config import resolve, save_config
from finsent.core.errors import FinsentError
from finsent.core.options import Config


def adapter_dir(tmp_path, base: str, saved: Config | None = None):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    if saved:
        save_config(saved, folder)
    return folder


def test_precedence_flag_over_file_over_saved_over_default(tmp_path):
    saved = Config()
    saved.model.model, saved.data.labels, saved.prompt.template = "org/base", ["up", "down"], "chat"
    saved.model.dtype = "bfloat16"
    adapter = adapter_dir(tmp_path, "org/base", saved)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model:\n  dtype: float16\nprompt:\n  label_words: up=bullish\n")
    cfg = resolve(str(yaml_file), {"model.dtype": "float32"}, str(adapter))
    assert cfg.model.model == "org/base"  # saved beside the adapter
    assert cfg.data.labels == ["up", "down"] and cfg.prompt.template == "chat"  # saved
    assert cfg.prompt.label_words == "up=bullish"  # the file over the saved config
    assert cfg.model.dtype == "float32"  # the flag over the file
    assert resolve().model.model == Config().model.model  # nothing given: the defaults


def test_adapter_without_finsent_config_names_its_base_from_peft(tmp_path):
    adapter = adapter_dir(tmp_path, "org/llama-base")
    assert resolve(adapter=str(adapter)).model.model == "org/llama-base"  # never the embedded default


def test_model_that_contradicts_the_adapter_is_an_error(tmp_path):
    saved = Config()
    saved.model.model = "org/base"
    adapter = adapter_dir(tmp_path, "org/base", saved)
    with pytest.raises(FinsentError, match="was trained on org/base; drop --model"):
        resolve(overrides={"model.model": "org/other"}, adapter=str(adapter))
    assert resolve(overrides={"model.model": "org/base"}, adapter=str(adapter)).model.model == "org/base"


def test_not_an_adapter_folder(tmp_path):
    with pytest.raises(FinsentError, match="no adapter_config.json"):
        resolve(adapter=str(tmp_path))


def test_model_folder_supplies_its_saved_config(tmp_path):
    saved = Config()
    saved.model.model, saved.data.labels = str(tmp_path), ["bull", "bear"]
    save_config(saved, tmp_path)
    assert resolve(overrides={"model.model": str(tmp_path)}).data.labels == ["bull", "bear"]


def test_predict_takes_labels_template_and_config_flags(tiny_model_dir, capsys):
    from finsent.cli import main

    code = main(
        [
            "predict",
            "--model",
            str(tiny_model_dir),
            "--labels",
            "up,down",
            "--label-words",
            "up=profit,down=sales",
            "--dtype",
            "float32",
            "Operating profit rose .",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    header = captured.out.splitlines()[0]
    assert header == "text,predicted,p_up,p_down"
    assert "untuned base model" in captured.err  # a base model without a finsent config


def test_untuned_warning_names_the_measured_zero_shot_accuracy(capsys):
    from finsent.core.registry import DEFAULT_MODEL
    from finsent.modeling.load import warn_if_untuned

    warn_if_untuned(DEFAULT_MODEL)
    assert "measured zero-shot accuracy is 0.336" in capsys.readouterr().err
