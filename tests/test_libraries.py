"""The library-backed pieces: metrics through scikit-learn, model cards through huggingface_hub. No model loads."""

import json

import pytest

from finsent.config import Config
from finsent.metrics import UNPARSED, classification_metrics, plot_confusion
from finsent.model_card import write_model_card

LABELS = ["positive", "neutral", "negative"]
# "negative" never occurs in y_true (absent label); "neutral" is never predicted; one answer is unparsed
Y = ["positive", "positive", "positive", "neutral", "neutral"]
P = ["positive", "negative", UNPARSED, "positive", "positive"]


def test_metrics_match_sklearn_with_absent_label_and_unparsed():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    m = classification_metrics(Y, P, LABELS)
    present = ["positive", "neutral"]
    assert m["accuracy"] == pytest.approx(accuracy_score(Y, P)) == pytest.approx(0.2)
    assert m["macro_f1"] == pytest.approx(f1_score(Y, P, labels=present, average="macro", zero_division=0))
    assert m["weighted_f1"] == pytest.approx(
        f1_score(Y, P, labels=present, average="weighted", zero_division=0)
    )
    prec, rec, f1, sup = precision_recall_fscore_support(Y, P, labels=LABELS, zero_division=0)
    for i, lab in enumerate(LABELS):
        got = m["per_label"][lab]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((prec[i], rec[i], f1[i]))
        assert got["support"] == sup[i] and type(got["support"]) is int
    assert m["per_label"]["neutral"]["precision"] == 0.0  # never predicted
    assert m["unparsed"] == 1
    assert m["confusion_matrix"]["columns"] == [*LABELS, UNPARSED]
    assert m["confusion_matrix"]["matrix"] == confusion_matrix(Y, P, labels=[*LABELS, UNPARSED])[:3].tolist()
    # plain Python numbers only: the JSON output is the same as before scikit-learn
    assert json.loads(json.dumps(m)) == m
    assert all(type(v) is int for row in m["confusion_matrix"]["matrix"] for v in row)


def test_plot_confusion_with_unparsed_column(tmp_path):
    m = classification_metrics(Y, P, LABELS)
    plot_confusion(m, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]  # no temporary file left behind


@pytest.mark.parametrize("kind, library", [("adapter", "peft"), ("merged", "transformers"), ("gguf", "gguf")])
def test_model_card_metadata_round_trips(tmp_path, kind, library):
    from huggingface_hub import ModelCard

    cfg = Config()
    m = classification_metrics(Y, P, LABELS)
    path = write_model_card(
        tmp_path, cfg, kind, metrics=m, extra={"note": "x"}, file=str(tmp_path / "m.gguf")
    )
    card = ModelCard.load(path)
    assert card.data.base_model == cfg.model.model
    assert card.data.library_name == library
    assert card.data.pipeline_tag == "text-classification"
    assert {"finsent", "financial-sentiment", "text-classification", "lora"} <= set(card.data.tags)
    assert ("gguf" in card.data.tags) == (kind == "gguf")
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == pytest.approx(m["accuracy"])
    assert results["f1"].metric_value == pytest.approx(m["weighted_f1"])
    assert results["accuracy"].task_type == "text-classification"
    assert results["accuracy"].dataset_name == cfg.data.data
    # the Markdown body is still there under the YAML header
    assert card.text.startswith(f"# finsent {kind}: financial sentiment classifier")
    assert "## Metrics" in card.text and "## How to load" in card.text and "- note: x" in card.text


def test_model_card_without_metrics_has_no_model_index(tmp_path):
    from huggingface_hub import ModelCard

    path = write_model_card(tmp_path, Config(), "adapter")
    text = path.read_text()
    assert text.startswith("---\n") and "model-index" not in text and "## Metrics" not in text
    assert ModelCard.load(path).data.eval_results is None
