"""train.report_to: every integration transformers supports, checked early; MLflow with a local file store."""

from __future__ import annotations

import importlib.util

import pytest

from finsent.core.errors import FinsentError
from finsent.training.args import report_to


def test_report_to_lists_all_and_none():
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    assert report_to("none") == [] and report_to("") == [] and report_to(" none ") == []
    assert report_to("all") == "all"
    assert report_to("tensorboard") == ["tensorboard"]
    installed = get_available_reporting_integrations()
    assert report_to(",".join(installed)) == installed
    with pytest.raises(FinsentError, match=r"unknown integration tensorbord, wandbb \(transformers knows"):
        report_to("tensorbord,tensorboard, wandbb")
    absent = [n for n in INTEGRATION_TO_CALLBACK if n not in installed and n not in ("azure_ml", "flyte")]
    if absent:
        with pytest.raises(FinsentError, match=f"train.report_to: {absent[0]} not installed here"):
            report_to(f"tensorboard,{absent[0]}")


@pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None,
    reason="mlflow not installed (pip install 'finsent[mlflow]' or mlflow-skinny to run this test)",
)
def test_mlflow_file_store_receives_the_training_metrics(tiny_model_dir, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient
    from test_train import tiny_config, toy_splits

    from finsent.training.train import train

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "finsent-test")
    monkeypatch.setenv("HF_MLFLOW_LOG_ARTIFACTS", "0")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store without it
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", max_steps=3, report_to="tensorboard,mlflow")
    try:
        train(cfg, toy_splits(4))
    finally:
        if mlflow.active_run():  # never leave a run open for the next test
            mlflow.end_run()
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("finsent-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3] and all(m.value > 0 for m in losses)
    assert "eval_accuracy" in run.data.metrics and "train_loss" in run.data.metrics
    assert float(run.data.params["learning_rate"]) == pytest.approx(cfg.train.learning_rate)
    assert (tmp_path / "t" / "runs").is_dir()  # TensorBoard still logs beside it
