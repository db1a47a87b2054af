"""The quality options: train.loss, label smoothing, class weights, rsLoRA/DoRA; checked once, passed on."""

from __future__ import annotations

import pytest

from finsent.core.errors import FinsentError
from finsent.core.options import Config


def test_label_loss_options_are_validated_before_any_work():
    cfg = Config()
    cfg.train.fast = False
    cfg.train.loss = "label"
    with pytest.raises(FinsentError, match="train.fast"):
        cfg.validate()
    cfg = Config()
    cfg.train.fast = True
    cfg.set("train.label_smoothing", 0.1)
    with pytest.raises(FinsentError, match="train.loss=label"):
        cfg.validate()
    cfg.train.loss = "label"
    cfg.validate()
    cfg.set("train.class_weights", "1,2")
    with pytest.raises(FinsentError, match="train.class_weights"):
        cfg.validate()
    with pytest.raises(FinsentError, match="label_smoothing"):
        cfg.set("train.label_smoothing", 1.0)
    with pytest.raises(FinsentError, match="train.loss"):
        cfg.set("train.loss", "focal")


def test_rslora_and_dora_reach_peft(tiny):
    from finsent.training.args import lora_config

    model, _ = tiny
    cfg = Config()
    cfg.lora.use_rslora, cfg.lora.use_dora = True, True
    lc = lora_config(cfg, model)
    assert lc.use_rslora and lc.use_dora


def test_auto_class_weights_follow_the_training_split(tiny_model_dir, tmp_path, capsys):
    """An imbalanced training split: 'auto' gives the rare label the larger weight, and training uses them."""
    from test_train import tiny_config, toy_splits

    from finsent.training.train import class_weights

    splits = toy_splits(6)
    splits["train"] = [e for e in splits["train"] if e.label != "negative"] + [
        e for e in splits["train"] if e.label == "negative"
    ][:2]
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", class_weights="auto")
    w = class_weights(cfg, splits["train"])
    assert w == pytest.approx([14 / (3 * 6), 14 / (3 * 6), 14 / (3 * 2)])
    assert "class weights (training rows): positive 0.778 (6)" in capsys.readouterr().err
