"""The library-backed pieces: metrics through scikit-learn, model cards through huggingface_hub. No model loads."""

import json

import pytest

from finsent.core.options import Config
from finsent.evaluation.metrics import UNPARSED, classification_metrics, plot_confusion
from finsent.modeling.card import write_model_card

LABELS = ["positive", "neutral", "negative"]


def fpb_config() -> Config:
    """The defaults on the notebooks' data (--data has no default: the card names the data set used)."""
    cfg = Config()
    cfg.data.data = "fpb"
    return cfg


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

    cfg = fpb_config()
    m = classification_metrics(Y, P, LABELS)
    path = write_model_card(
        tmp_path, cfg, kind, metrics=m, extra={"note": "x"}, file=str(tmp_path / "m.gguf")
    )
    card = ModelCard.load(path)
    # the hub id of the embedded default: the hub refuses a base_model that is not a hub id
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == ["takala/financial_phrasebank"]
    assert card.data.library_name == library
    assert card.data.pipeline_tag == "text-generation"
    assert {"finsent", "financial-sentiment", "text-classification", "lora"} <= set(card.data.tags)
    assert ("gguf" in card.data.tags) == (kind == "gguf")
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == pytest.approx(m["accuracy"])
    assert results["f1"].metric_value == pytest.approx(m["weighted_f1"])
    assert results["accuracy"].task_type == "text-classification"
    assert results["accuracy"].dataset_name == cfg.data.data
    assert results["accuracy"].dataset_type == "takala/financial_phrasebank"
    assert results["accuracy"].dataset_config == "sentences_50agree"
    # the Markdown body is still there under the YAML header
    assert card.text.startswith(f"# finsent {kind}: financial sentiment classifier")
    assert "## Metrics" in card.text and "## How to load" in card.text and "- note: x" in card.text


def test_model_card_without_metrics_has_no_model_index(tmp_path):
    from huggingface_hub import ModelCard

    path = write_model_card(tmp_path, fpb_config(), "adapter")
    text = path.read_text()
    assert text.startswith("---\n") and "model-index" not in text and "## Metrics" not in text
    assert ModelCard.load(path).data.eval_results is None


def _peft_folder(path):
    """A tiny LoRA adapter saved by PEFT: its save_pretrained writes PEFT's own README.md."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    lora = LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(LlamaForCausalLM(tiny), lora)
    model.save_pretrained(path)
    return model


def test_model_card_extends_pefts_card_and_rewrites_only_its_own_section(tmp_path):
    from huggingface_hub import ModelCard

    folder = tmp_path / "adapter"
    peft_model = _peft_folder(folder)
    peft_card = ModelCard.load(folder / "README.md")
    assert peft_card.data.library_name == "peft"
    peft_tags = set(peft_card.data.tags) - {t for t in peft_card.data.tags if t.startswith("base_model:")}
    m = classification_metrics(Y, P, LABELS)

    write_model_card(folder, fpb_config(), "adapter", metrics=m, extra={"optimizer steps": 3})
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "peft"
    assert card.data.pipeline_tag == peft_card.data.pipeline_tag == "text-generation"  # PEFT's, kept
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == ["takala/financial_phrasebank"]
    assert peft_tags | {"finsent", "financial-sentiment", "text-classification", "lora"} <= set(
        card.data.tags
    )
    assert len(card.data.tags) == len(set(card.data.tags))
    assert "base_model:adapter:" not in card.data.tags  # PEFT's tag with an empty base is replaced
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "f1"}
    # finsent's section on top, PEFT's text below it, once
    assert card.text.startswith("# finsent adapter: financial sentiment classifier")
    assert card.text.index("## How to load") < card.text.index("## PEFT")
    lines = card.text.splitlines()
    assert card.text.count("Model Card for Model ID") == 1 and card.text.count("- PEFT ") == 1
    # PEFT's headings sit below "## PEFT": its "# Model Card" is now "###", its "### Framework" "#####"
    assert "### Model Card for Model ID" in lines and "##### Framework versions" in lines

    # again, as after a re-run (without metrics this time): one finsent section, PEFT's text still once
    write_model_card(folder, fpb_config(), "adapter", extra={"optimizer steps": 5})
    again = ModelCard.load(folder / "README.md")
    text = again.text
    assert text.count("# finsent adapter:") == 1 and text.count("## How to load") == 1
    assert text.count("## PEFT") == 1 and text.count("Model Card for Model ID") == 1
    assert "- optimizer steps: 5" in text and "- optimizer steps: 3" not in text
    assert again.data.eval_results is None and "model-index" not in (folder / "README.md").read_text()
    assert again.data.library_name == "peft" and again.data.tags == card.data.tags

    # training again into the same folder: PEFT rewrites the card's metadata, then finsent writes its card
    peft_model.save_pretrained(folder)
    write_model_card(folder, fpb_config(), "adapter")
    third = ModelCard.load(folder / "README.md")
    assert third.text.count("# finsent adapter:") == 1 and third.text.count("## PEFT") == 1
    assert third.text.count("Model Card for Model ID") == 1 and third.text.count("- PEFT ") == 1
    assert third.data.tags == card.data.tags and third.data.base_model == card.data.base_model


def test_model_card_shows_plain_library_loading(tmp_path):
    from huggingface_hub import ModelCard

    cfg = fpb_config()
    texts = {}
    for kind in ("adapter", "merged", "gguf"):
        folder = tmp_path / kind
        path = write_model_card(
            folder, cfg, kind, file=str(folder / "m.gguf"), prompt_example="PROMPT FOR ONE SENTENCE"
        )
        texts[kind] = ModelCard.load(path).text
    assert "AutoPeftModelForCausalLM.from_pretrained" in texts["adapter"]
    assert "PeftModel.from_pretrained" in texts["adapter"]
    assert "AutoModelForCausalLM.from_pretrained" in texts["merged"]
    assert "finsent serve --model" in texts["merged"]
    gguf = texts["gguf"].lower()
    assert "llama-completion -m" in gguf and "-no-cnv" in gguf and "--temp 0" in gguf
    assert "from llama_cpp import llama" in gguf and "llama(model_path=" in gguf
    assert "ollama create finsent -f modelfile" in gguf and "ollama run finsent" in gguf
    assert 'gguf_file="m.gguf"' in texts["gguf"]
    for text in texts.values():
        assert "PROMPT FOR ONE SENTENCE" in text  # the caller's rendered prompt is shown
        assert "def classify(text):" in text and "log_softmax" in text  # the label words are scored
        assert "ANSWERS = {" in text and 'SUFFIX = "] ="' in text


def test_model_card_snippet_runs_on_a_tiny_model(tmp_path):
    """The plain-transformers snippet of the merged card is valid Python that scores every label."""
    import re

    from transformers import LlamaConfig, LlamaForCausalLM

    path = write_model_card(tmp_path, fpb_config(), "merged")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", path.read_text(), re.S) if "classify" in b]
    # a tiny random model and a one-id-per-character tokenizer stand in for the folder's
    code = re.sub(r"(?m)^(model|tokenizer) = .*$", r"\1 = \1", code)

    def tokenizer(s, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) % 60 + 2 for c in s]}

    tiny = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    ns = {"model": LlamaForCausalLM(tiny), "tokenizer": tokenizer}
    exec(code, ns)  # also prints the example sentence's label
    label, scores = ns["classify"]("Profit rose .")
    assert set(scores) == set(LABELS) and label in LABELS
    assert all(s < 0 for s in scores.values())


def test_model_card_base_model_is_a_hub_id_or_absent(tmp_path):
    """The hub refuses a push whose base_model is a local path: a GGUF exported from a merged folder
    names the merged card's base; a local base with no card gets no base_model at all."""
    from huggingface_hub import ModelCard

    write_model_card(tmp_path / "merged", fpb_config(), "merged")
    cfg = fpb_config()
    cfg.model.model = str(tmp_path / "merged")  # as `finsent export --model runs/demo/merged_model` has it
    gguf = write_model_card(tmp_path / "gguf", cfg, "gguf", file=str(tmp_path / "gguf" / "m.gguf"))
    assert ModelCard.load(gguf).data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    (tmp_path / "local").mkdir()
    cfg.model.model = str(tmp_path / "local")
    cfg.data.data = str(tmp_path / "news.csv")
    card = ModelCard.load(write_model_card(tmp_path / "out", cfg, "merged"))
    assert card.data.base_model is None and card.data.datasets is None
