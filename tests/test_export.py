"""GGUF export of the tiny Llama: tensors, tokenizer, Modelfile, model card, parity when loaded back."""

import json

import pytest

from finsent.core.options import Config


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_gguf_round_trip_keeps_predictions(tiny_model_dir, tmp_path, dtype):
    import gguf

    from finsent.data.dataset import Example
    from finsent.deploy.export import export

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
    parity = export(cfg, tiny_model_dir, out, dtype, eval_examples=examples)  # the default gate
    assert parity["min_agreement"] == {"f16": 0.995, "bf16": 0.995, "q8_0": 0.98}[dtype]
    assert parity["passed"] and parity["agreement"] >= parity["min_agreement"]
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


def test_an_export_below_its_threshold_fails_and_is_moved_aside(tiny_model_dir, tmp_path, monkeypatch):
    """The gate uses the per-type thresholds: one that no export can meet fails the command, and the
    file is moved to NAME.gguf.rejected with the reason beside it."""
    import finsent.deploy.export as export_module
    from finsent.core.errors import FinsentError
    from finsent.data.dataset import Example

    cfg = Config()
    cfg.model.model, cfg.model.dtype = str(tiny_model_dir), "float32"
    examples = [Example(i, t, "neutral") for i, t in enumerate(["Profit rose .", "Sales fell ."] * 3)]
    monkeypatch.setitem(export_module.MIN_AGREEMENT, "q8_0", 1.01)
    out = tmp_path / "tiny-q8_0.gguf"
    with pytest.raises(FinsentError, match="agreement on only 100.0% .* moved to .*tiny-q8_0.gguf.rejected"):
        export_module.export(cfg, tiny_model_dir, out, "q8_0", eval_examples=examples)
    assert not out.exists() and (tmp_path / "tiny-q8_0.gguf.rejected").is_file()
    assert "(< 101.0%)" in (tmp_path / "tiny-q8_0.gguf.rejected.txt").read_text()
    assert not json.loads((tmp_path / "tiny-q8_0.rejected.parity.json").read_text())["passed"]
    assert not (tmp_path / "tiny-q8_0.parity.json").exists() and not (tmp_path / "Modelfile").exists()


def test_a_failed_or_killed_re_export_leaves_the_certified_file_as_it_was(
    tiny_model_dir, tmp_path, monkeypatch
):
    """The GGUF is checked under a hidden name and renamed into place only once it passes: a second export
    to the same name that fails its check (or is killed) leaves the first file and its record alone."""
    import finsent.deploy.export as export_module
    from finsent.core.errors import FinsentError
    from finsent.data.dataset import Example

    cfg = Config()
    cfg.model.model, cfg.model.dtype = str(tiny_model_dir), "float32"
    examples = [Example(i, t, "neutral") for i, t in enumerate(["Profit rose .", "Sales fell ."] * 3)]
    out = tmp_path / "m.gguf"
    export_module.export(cfg, tiny_model_dir, out, "f16", eval_examples=examples)
    first, record = out.read_bytes(), out.with_suffix(".parity.json").read_text()
    seen = []
    import finsent.modeling.scoring as scoring

    real = scoring.classify

    def watch(model, codec, texts, *a, **k):  # while the new file is checked: where is it?
        seen.append({p.name for p in tmp_path.iterdir()})
        return real(model, codec, texts, *a, **k)

    monkeypatch.setattr(scoring, "classify", watch)
    monkeypatch.setitem(export_module.MIN_AGREEMENT, "q8_0", 1.01)
    with pytest.raises(FinsentError, match="moved to .*m.gguf.rejected"):
        export_module.export(cfg, tiny_model_dir, out, "q8_0", eval_examples=examples)
    assert {"m.gguf", ".m.gguf.unchecked.gguf"} <= seen[-1]  # checked under its hidden name
    assert out.read_bytes() == first and out.with_suffix(".parity.json").read_text() == record
    assert not (tmp_path / ".m.gguf.unchecked.gguf").exists()
    # a kill while checking left the hidden file: the next export removes it
    (tmp_path / ".m.gguf.unchecked.gguf").write_bytes(b"GGUF cut off")
    monkeypatch.setitem(export_module.MIN_AGREEMENT, "q8_0", 0.98)
    export_module.export(cfg, tiny_model_dir, out, "q8_0", eval_examples=examples)
    assert json.loads(out.with_suffix(".parity.json").read_text())["dtype"] == "q8_0"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.gguf")) == []


def test_two_exports_in_one_folder_share_one_card(tiny_model_dir, tmp_path):
    """f16 and q8_0 exported side by side: the card lists both checked files and says which one the
    Modelfile builds; a file whose record no longer matches its bytes is left out of the list."""
    from finsent.data.dataset import Example
    from finsent.deploy.export import export

    cfg = Config()
    cfg.model.model, cfg.model.dtype = str(tiny_model_dir), "float32"
    examples = [Example(i, t, "neutral") for i, t in enumerate(["Profit rose .", "Sales fell ."] * 3)]
    export(cfg, tiny_model_dir, tmp_path / "m-f16.gguf", "f16", eval_examples=examples)
    assert "other checked GGUF" not in (tmp_path / "README.md").read_text()
    export(cfg, tiny_model_dir, tmp_path / "m-q8_0.gguf", "q8_0", eval_examples=examples)
    card = (tmp_path / "README.md").read_text()
    assert "- file: m-q8_0.gguf" in card and "- tensor type: q8_0" in card
    assert "other checked GGUF files here: `m-f16.gguf` (f16, " in card
    assert "- Modelfile: builds `m-q8_0.gguf`, the latest export" in card
    assert "FROM ./m-q8_0.gguf" in (tmp_path / "Modelfile").read_text()
    with open(tmp_path / "m-f16.gguf", "ab") as fh:  # changed since its check: no longer listed
        fh.write(b"x")
    export(cfg, tiny_model_dir, tmp_path / "m-q8_0.gguf", "q8_0", eval_examples=examples)
    assert "m-f16.gguf" not in (tmp_path / "README.md").read_text()


def test_gguf_logits_match_the_source(tiny_model_dir, tmp_path):
    """The q/k permutation and every tensor name are right: f16 logits match float32 closely."""
    import torch
    from transformers import AutoModelForCausalLM

    from finsent.deploy.gguf import write_gguf

    out = write_gguf(tiny_model_dir, tmp_path / "t.gguf", "f16")
    src = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 30, 42, 7, 100, 3]])
    torch.testing.assert_close(back(input_ids=ids).logits, src(input_ids=ids).logits, atol=2e-2, rtol=2e-2)


def test_export_refuses_non_llama(tmp_path):
    from finsent.core.errors import FinsentError
    from finsent.deploy.gguf import write_gguf

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(FinsentError, match="not Llama"):
        write_gguf(tmp_path, tmp_path / "x.gguf")


def test_modelfile_template_renders_the_trained_prompt(tiny):
    """Ollama's TEMPLATE, read as Ollama's parser reads it and {{ .Prompt }} filled in, is the prompt
    finsent trains and scores on, byte for byte: it ends with the suffix, the answer is generated."""
    from finsent.core.prompts import PromptCodec
    from finsent.deploy.ollama import modelfile, parse_modelfile

    codec = PromptCodec.from_config(Config(), tiny[1])
    assert Config().prompt.template == "notebook"
    commands = parse_modelfile(modelfile(codec, "finsent-f16.gguf"))
    sentence = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn ."
    rendered = commands["template"][0].replace("{{ .Prompt }}", sentence)
    assert rendered == codec.template.render(sentence)
    assert not rendered.endswith(" ")
    assert commands["model"] == ["./finsent-f16.gguf"]
    assert commands["temperature"] == ["0"] and commands["repeat_penalty"] == ["1"]
    assert commands["num_predict"] == [str(max(len(ids) for ids in codec.label_ids) + 1)]
    assert commands["stop"] == ["\n"]


def test_modelfile_parser_follows_ollama():
    from finsent.deploy.ollama import parse_modelfile

    text = 'FROM ./m.gguf\n# c\nPARAMETER stop "<|im_end|>"\nPARAMETER stop x y\nSYSTEM """a\n  b"""\n'
    assert parse_modelfile(text) == {
        "model": ["./m.gguf"],
        "stop": ["<|im_end|>", "x y"],
        "system": ["a\n  b"],
    }


def _tokenizer_with(pre_tokenizer):
    """The conftest tokenizer's vocabulary with another pre-tokenizer."""
    from conftest import _build_tokenizer
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_build_tokenizer().backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def _fields(path) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.tokens")}


def test_gguf_tokenizer_metadata_as_llama_cpp_reads_it(tiny_model_dir, tmp_path):
    """GPT-2-style byte-level BPE (the tiny tokenizer) is 'gpt-2', SmolLM2's (digits split one by one)
    'smollm'; add_bos/add_eos say what the tokenizer really does."""
    from conftest import build_tiny_llama
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    from finsent.deploy.gguf import added_special, write_gguf

    fields = _fields(write_gguf(tiny_model_dir, tmp_path / "gpt2.gguf"))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.add_bos_token"] == added_special(tok)["bos"] is False
    assert fields["tokenizer.ggml.add_eos_token"] is False
    assert fields["tokenizer.ggml.bos_token_id"] == tok.bos_token_id

    smol = _tokenizer_with(
        pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    )
    folder = tmp_path / "smol"
    build_tiny_llama(smol).save_pretrained(folder)
    smol.save_pretrained(folder)
    assert _fields(write_gguf(folder, tmp_path / "smol.gguf"))["tokenizer.ggml.pre"] == "smollm"


def test_gguf_refuses_a_pre_tokenizer_llama_cpp_does_not_know(tmp_path):
    from conftest import build_tiny_llama
    from tokenizers import pre_tokenizers

    from finsent.core.errors import FinsentError
    from finsent.deploy.gguf import write_gguf

    odd = _tokenizer_with(pre_tokenizers.Sequence([pre_tokenizers.Punctuation(), pre_tokenizers.ByteLevel()]))
    build_tiny_llama(odd).save_pretrained(tmp_path)
    odd.save_pretrained(tmp_path)
    with pytest.raises(FinsentError, match="llama.cpp"):
        write_gguf(tmp_path, tmp_path / "x.gguf")


def test_check_text_is_llama_cpp_s():
    from hashlib import sha256

    from finsent.deploy.gguf import CHKTXT

    # sha256 of chktxt in llama.cpp's conversion/base.py get_vocab_base_pre
    assert sha256(CHKTXT.encode()).hexdigest() == (
        "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da"
    )


@pytest.fixture(scope="module")
def spm_source(tmp_path_factory):
    """A tiny Llama-2-style SentencePiece tokenizer (tokenizer.model, byte fallback), trained here."""
    import io

    import sentencepiece as spm
    from conftest import CORPUS
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("spm")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        split_digits=True,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": False})
    )
    return folder, AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("with_model_file", [True, False], ids=["tokenizer.model", "tokenizer.json"])
def test_sentencepiece_llama_exports_and_loads_back(spm_source, tmp_path, with_model_file):
    """Llama 2 layout (tokenizer.model) and what transformers 5 saves (tokenizer.json only): tokenizer
    model 'llama' with scores and types; loaded back, the same token ids and logits."""
    import shutil

    import torch
    from conftest import CORPUS, build_tiny_llama
    from transformers import AutoModelForCausalLM

    from finsent.deploy.gguf import load_tokenizer_gguf, write_gguf

    source, tok = spm_source
    build_tiny_llama(tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    if with_model_file:
        shutil.copy(source / "tokenizer.model", tmp_path)
    assert (tmp_path / "tokenizer.model").is_file() == with_model_file
    out = write_gguf(tmp_path, tmp_path / "spm.gguf", "f16")
    fields = _fields(out)
    assert fields["tokenizer.ggml.model"] == "llama"
    assert (
        fields["tokenizer.ggml.add_bos_token"] is True and fields["tokenizer.ggml.add_space_prefix"] is True
    )
    assert len(fields["tokenizer.ggml.scores"]) == len(tok)
    back = load_tokenizer_gguf(out)
    for text in [*CORPUS, "Net sales fell 5 % in 2009 .", "[Operating profit rose] ="]:
        assert back(text)["input_ids"] == tok(text)["input_ids"], text
    src = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    ids = torch.tensor([tok(CORPUS[0])["input_ids"]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, src(input_ids=ids).logits, atol=2e-2, rtol=2e-2)


def test_llama3_rope_scaling_writes_rope_freqs(tmp_path):
    """Llama 3.x rope scaling: llama.cpp's per-dimension factors, which are transformers' own llama3
    frequencies divided into the unscaled ones."""
    import gguf
    import numpy as np
    import torch
    from conftest import _build_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from finsent.deploy.gguf import write_gguf

    tok = _build_tokenizer()
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=131072,
        rope_parameters=rope,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reader = gguf.GGUFReader(write_gguf(tmp_path, tmp_path / "l3.gguf"))
    factors = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, torch.device("cpu"))
    plain = 1.0 / (500000.0 ** (torch.arange(0, 32, 2, dtype=torch.float32) / 32))
    np.testing.assert_allclose(factors, (plain / scaled).numpy(), rtol=1e-4)
    assert reader.fields["llama.rope.freq_base"].contents() == 500000.0


def test_export_missing_model_is_a_one_line_error(tmp_path, capsys):
    from finsent.cli import main

    for model, says in ((tmp_path / "nope", "no such folder"), (tmp_path / "file.txt", "not a folder")):
        if model.suffix:
            model.write_text("x")
        assert main(["export", "--model", str(model), "--out", str(tmp_path / "x.gguf")]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_export_the_embedded_model_by_name(tmp_path, monkeypatch):
    """`finsent export --model smollm2-135m`: resolved like everywhere else; no BOS, as its tokenizer adds
    none. llama.cpp's hash names its vocabulary 'smollm', but finsent's converted tokenizer lacks SmolLM2's
    digit splitting and splits like GPT-2, which is what the GGUF must say."""
    from hashlib import sha256

    from conftest import DATA_DIR

    from finsent.cli import main
    from finsent.deploy.gguf import CHKTXT, PRE_BY_HASH
    from finsent.modeling.load import load_tokenizer, resolve_model

    monkeypatch.setenv("FINSENT_DATA_DIR", str(DATA_DIR))  # no saved config: the eval split is PhraseBank's
    out = tmp_path / "smol-q8_0.gguf"
    assert (
        main(["export", "--model", "smollm2-135m", "--data", "fpb", "--quant", "q8_0", "--out", str(out)])
        == 0
    )
    fields = _fields(out)
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.add_bos_token"] is False
    tok = load_tokenizer(resolve_model("smollm2-135m"))
    assert PRE_BY_HASH[sha256(str(tok.encode(CHKTXT)).encode()).hexdigest()] == "smollm"
    assert (tmp_path / "Modelfile").is_file()
