"""GGUF export of the tiny Llama: tensors, tokenizer, Modelfile, model card, parity when loaded back."""

import json

import pytest

from finsent.config import Config


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_gguf_round_trip_keeps_predictions(tiny_model_dir, tmp_path, dtype):
    import gguf

    from finsent.data import Example
    from finsent.export import export

    cfg = Config()
    cfg.model.model = str(tiny_model_dir)
    cfg.model.dtype = "float32"
    texts = [
        "Operating profit rose to EUR 13.1 mn .",
        "Net sales fell sharply .",
        "The contract value is EUR 11 mn .",
    ]
    examples = [Example(i, t, "neutral") for i, t in enumerate(texts * 4)]
    out = tmp_path / f"tiny-{dtype}.gguf"
    parity = export(cfg, tiny_model_dir, out, dtype, eval_examples=examples, min_agreement=0.0)
    assert parity["agreement"] >= {"f16": 0.995, "bf16": 0.995, "q8_0": 0.98}[dtype]
    reader = gguf.GGUFReader(out)
    names = {t.name for t in reader.tensors}
    assert {
        "token_embd.weight",
        "output_norm.weight",
        "output.weight",
        "blk.0.attn_q.weight",
        "blk.1.ffn_down.weight",
    } <= names
    kinds = {t.tensor_type.name for t in reader.tensors if t.name == "blk.0.ffn_up.weight"}
    assert kinds == {{"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[dtype]}
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    modelfile = (tmp_path / "Modelfile").read_text()
    assert f"FROM ./{out.name}" in modelfile and "{{ .Prompt }}" in modelfile
    assert "Analyze the sentiment" in modelfile
    card = (tmp_path / "README.md").read_text()
    assert "How to load" in card and dtype in card
    assert json.loads(out.with_suffix(".parity.json").read_text())["dtype"] == dtype


def test_gguf_logits_match_the_source(tiny_model_dir, tmp_path):
    """The q/k permutation and every tensor name are right: f16 logits match float32 closely."""
    import torch
    from transformers import AutoModelForCausalLM

    from finsent.export import write_gguf

    out = write_gguf(tiny_model_dir, tmp_path / "t.gguf", "f16")
    src = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 30, 42, 7, 100, 3]])
    torch.testing.assert_close(back(input_ids=ids).logits, src(input_ids=ids).logits, atol=2e-2, rtol=2e-2)


def test_export_refuses_non_llama(tmp_path):
    from finsent.errors import FinsentError
    from finsent.export import write_gguf

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(FinsentError, match="not Llama"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
