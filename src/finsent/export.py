"""Export a (merged) Llama-architecture model to GGUF for llama.cpp and Ollama, then check parity.

    finsent export --model runs/demo/merged_model --format gguf --dtype q8_0 --out runs/demo/finsent-q8_0.gguf

Written with the `gguf` package: llama.cpp's tensor names, its q/k row permutation, the BPE tokenizer
(tokens, types, merges, special ids, chat template). An Ollama `Modelfile` with finsent's prompt goes
beside the file. Parity: the GGUF is loaded back with transformers' GGUF loader and its predictions on
the eval split are compared with the source model's.
"""

from __future__ import annotations

import json
from pathlib import Path

from finsent.errors import FinsentError

DTYPES = ("f16", "bf16", "q8_0")
MIN_AGREEMENT = {"f16": 0.995, "bf16": 0.995, "q8_0": 0.98}


def _permute(w, n_head: int):
    """llama.cpp's row order for q/k (the inverse of transformers' reverse permutation on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor_plan(files, n_blocks: int, qtype_of):
    """(file, hf name, gguf name, gguf tensor kind, shape, ggml type) per exported tensor, from headers only.

    Names come from gguf-py's llama table; tensors it does not know are skipped, and so are rotary
    frequencies (llama.cpp recomputes them). A tied lm_head absent from the files simply yields no
    output.weight: llama.cpp then reuses token_embd.
    """
    import gguf
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    skip = (gguf.MODEL_TENSOR.ATTN_ROT_EMBD, gguf.MODEL_TENSOR.ROPE_FREQS)
    plan = []
    for f in files:
        with safe_open(f, framework="pt") as st:
            for hf_name in st.keys():  # noqa: SIM118 (safe_open is not iterable)
                hit = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
                if hit is None or hit[0] in skip:
                    continue
                shape = tuple(st.get_slice(hf_name).get_shape())
                plan.append((f, hf_name, hit[1], hit[0], shape, qtype_of(shape)))
    return plan


def write_gguf(model_dir: str | Path, out: str | Path, dtype: str = "f16") -> Path:
    import contextlib

    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig

    from finsent.fsio import atomic_path
    from finsent.models import load_tokenizer

    if dtype not in DTYPES:
        raise FinsentError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    model_dir = Path(model_dir)
    cfg = AutoConfig.from_pretrained(model_dir)
    if cfg.model_type != "llama":
        raise FinsentError(
            f"{model_dir}: architecture '{cfg.model_type}' is not Llama; GGUF export supports Llama"
        )
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FinsentError(f"{model_dir}: no .safetensors weights (export a merged model: finsent merge)")
    tokenizer = load_tokenizer(str(model_dir))
    tok_json = json.loads(tokenizer.backend_tokenizer.to_str())
    if tok_json["model"]["type"] != "BPE" or tok_json["model"].get("byte_fallback"):
        raise FinsentError(
            f"{model_dir}: GGUF export supports byte-level BPE tokenizers (SmolLM2, Llama 3); "
            "this one is SentencePiece-style"
        )

    ftype, matrix_type = {
        "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
        "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
        "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
    }[dtype]

    def qtype_of(shape):  # norms (and any 1-D tensor) stay float32, as llama.cpp writes them
        return gguf.GGMLQuantizationType.F32 if len(shape) == 1 else matrix_type

    plan = _tensor_plan(files, cfg.num_hidden_layers, qtype_of)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(
        cfg, "rope_theta", 10000.0
    )
    out = Path(out)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        w.add_name(model_dir.name)
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_block_count(cfg.num_hidden_layers)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(cfg.num_attention_heads)
        w.add_head_count_kv(cfg.num_key_value_heads)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_rope_freq_base(float(rope))
        w.add_rope_dimension_count(head_dim)
        w.add_vocab_size(len(tokenizer))
        w.add_file_type(ftype)

        # tokens and types as llama.cpp's convert_hf_to_gguf.py builds them for BPE
        vocab = tokenizer.get_vocab()
        tokens = [""] * len(tokenizer)
        for piece, idx in vocab.items():
            if idx < len(tokens):
                tokens[idx] = piece
        special = set(tokenizer.all_special_ids)
        added = {t.content for t in tokenizer.added_tokens_decoder.values()}
        types = [
            gguf.TokenType.CONTROL
            if i in special
            else gguf.TokenType.USER_DEFINED
            if t in added
            else gguf.TokenType.NORMAL
            for i, t in enumerate(tokens)
        ]
        w.add_tokenizer_model("gpt2")
        # TODO: the real pre-tokenizer name (SmolLM2: "smollm"); llama.cpp derives it from a hash of
        # the tokenizer's output on a probe text (convert_hf_to_gguf.py get_vocab_base_pre)
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types(types)
        # merges, bos/eos/unk/pad ids, add_bos/add_eos flags and the chat template, read from
        # tokenizer.json, tokenizer_config.json, chat_template.jinja and config.json
        special_vocab = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
        # SpecialVocab finds a token only through added_tokens or config.json; fill the gaps from the
        # loaded tokenizer (its pad is eos when the folder has none, see finsent.models.load_tokenizer)
        for name, idx in (
            ("bos", tokenizer.bos_token_id),
            ("eos", tokenizer.eos_token_id),
            ("pad", tokenizer.pad_token_id),
            ("unk", tokenizer.unk_token_id),
        ):
            if idx is not None and idx < len(tokens):
                special_vocab.special_token_ids.setdefault(name, idx)
        special_vocab.add_to_gguf(w, quiet=True)

        # tensor infos first, then the data one tensor at a time: only one tensor is ever in memory
        for _, _, name, _, shape, qtype in plan:
            nbytes = int(np.prod(gguf.quants.quant_shape_to_byte_shape(shape, qtype)))
            w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        with contextlib.ExitStack() as stack:
            stack.callback(w.close)
            readers = {f: stack.enter_context(safe_open(f, framework="pt")) for f in files}
            for f, hf_name, _, kind, _, qtype in plan:
                data = readers[f].get_tensor(hf_name).to(torch.float32).numpy()
                if kind == gguf.MODEL_TENSOR.ATTN_Q:
                    data = _permute(data, cfg.num_attention_heads)
                elif kind == gguf.MODEL_TENSOR.ATTN_K:
                    data = _permute(data, cfg.num_key_value_heads)
                w.write_tensor_data(gguf.quants.quantize(data, qtype))
    return out


def modelfile(codec, gguf_name: str) -> str:
    """An Ollama Modelfile that sends finsent's prompt and reads back a short answer."""
    t = codec.template
    words = ", ".join(codec.label_words)
    return (
        f"# ollama create finsent -f Modelfile && ollama run finsent 'Operating profit rose .'\n"
        f"# answers one of: {words}\n"
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{t.prefix}{{{{ .Prompt }}}}{t.suffix}{t.answer_sep}"""\n'
        "PARAMETER temperature 0\n"
        f"PARAMETER num_predict {max(len(ids) for ids in codec.label_ids) + 1}\n"
    )


def export(
    cfg,
    model_dir: str | Path,
    out: str | Path,
    dtype: str = "f16",
    eval_examples=None,
    min_agreement: float | None = None,
) -> dict:
    """Write the GGUF and Modelfile, then compare GGUF and source predictions on the eval split."""
    import torch
    from transformers import AutoModelForCausalLM

    from finsent.data import make_splits
    from finsent.fsio import write_text
    from finsent.model_card import write_model_card
    from finsent.models import load_model
    from finsent.parity import certify, summary_line
    from finsent.prompts import PromptCodec
    from finsent.scoring import classify

    out = Path(out)
    write_gguf(model_dir, out, dtype)
    source, tokenizer, device = load_model(cfg.model, dtype=torch.float32)
    codec = PromptCodec.from_config(cfg, tokenizer)
    write_text(out.parent / "Modelfile", modelfile(codec, out.name))
    if eval_examples is None:
        eval_examples = make_splits(cfg.data)[1]["eval"]
    texts = [e.text for e in eval_examples]
    before = classify(source, codec, texts)
    del source
    loaded = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).to(
        device
    )
    after = classify(loaded, PromptCodec.from_config(cfg, load_tokenizer_gguf(out)), texts)
    print(f"GGUF {dtype}: {out} ({out.stat().st_size / 1e6:.0f} MB)")
    parity = certify(
        before,
        after,
        out.with_suffix(".parity.json"),
        where="eval split",
        what=f"GGUF {dtype} / {model_dir}",
        min_agreement=MIN_AGREEMENT[dtype] if min_agreement is None else min_agreement,
        extra={"dtype": dtype, "bytes": out.stat().st_size},
    )
    write_model_card(
        out.parent,
        cfg,
        "gguf",
        metrics=_saved_metrics(model_dir),
        file=str(out),
        extra={"file": out.name, "tensor type": dtype, "parity": summary_line(parity)},
    )
    return parity


def load_tokenizer_gguf(path: Path):
    """The tokenizer as stored in the GGUF (proves the file carries a usable tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _saved_metrics(model_dir) -> dict | None:
    """The test metrics a merged model carries in its own folder (`finsent run` writes them), if any."""
    path = Path(model_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None
