"""Integration on the embedded SmolLM2-135M: conversion, evaluation, a few real training steps."""

import csv
import json
import math
import time
from pathlib import Path

import pytest

from finsent.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_embedded_model_converts_once_then_loads_fast():
    from finsent.modeling.load import resolve_model

    folder = resolve_model("smollm2-135m")
    stamp = (Path(folder) / "config.json").stat().st_mtime
    start = time.perf_counter()
    assert resolve_model("smollm2-135m") == folder
    assert time.perf_counter() - start < 1.0
    assert (Path(folder) / "config.json").stat().st_mtime == stamp


def test_evaluate_cli_writes_every_output(all_data, tmp_path, capsys):
    out = tmp_path / "zs"
    code = main(
        [
            "evaluate",
            "--data",
            str(all_data),
            "--split",
            "seed",
            "--subset",
            "test",
            "--limit",
            "24",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "sentences/s" in printed
    m = json.loads((out / "metrics.json").read_text())
    for key in (
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "per_label",
        "confusion_matrix",
        "n",
        "unparsed",
        "examples_per_second",
    ):
        assert key in m
    assert m["n"] == 24 and m["examples_per_second"] > 0
    assert set(m["per_label"]["positive"]) == {"precision", "recall", "f1", "support", "accuracy"}
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 24
    # metrics.json and predictions.csv tell the same story
    assert m["accuracy"] == sum(r["label"] == r["predicted"] for r in rows) / 24
    assert list(rows[0]) == [
        "source_row",
        "text",
        "label",
        "predicted",
        "p_positive",
        "p_neutral",
        "p_negative",
    ]
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "finsent_config.yaml").is_file()


def test_generate_method_runs_on_the_real_model(all_data, tmp_path, capsys):
    out = tmp_path / "gen"
    assert (
        main(
            ["evaluate", "--data", str(all_data), "--limit", "12", "--method", "generate", "--out", str(out)]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "generate" and m["n"] == 12
    assert sum(sum(r) for r in m["confusion_matrix"]["matrix"]) == 12


def test_train_embedded_model_a_few_steps(all_data, tmp_path):
    out = tmp_path / "t"
    code = main(
        [
            "train",
            "--config",
            str(ROOT / "configs" / "smollm2-cpu.yaml"),
            "--train.method",
            "lora",
            "--data",
            str(all_data),
            "--train.max_steps",
            "3",
            "--train.per_device_train_batch_size",
            "4",
            "--train.logging_steps",
            "1",
            "--train.evaluation_strategy",
            "no",
            "--train.report_to",
            "none",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    log = json.loads((out / "train_log.json").read_text())
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    from safetensors.torch import load_file

    # LoRA's B matrices start at zero: three optimizer steps must have moved every one of them
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)
    card = (out / "adapter" / "README.md").read_text()
    assert (
        str(out / "adapter") in card and ".partial-" not in card
    )  # written before the rename, names the final folder
