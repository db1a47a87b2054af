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


def _tensor_name(hf: str) -> str | None:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    if parts[:2] != ["model", "layers"]:
        return None
    i, rest = parts[2], ".".join(parts[3:])
    table = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    return f"blk.{i}.{table[rest]}" if rest in table else None


def write_gguf(model_dir: str | Path, out: str | Path, dtype: str = "f16") -> Path:
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import load_file
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
    state = {}
    for f in files:
        state.update(load_file(f))
    tokenizer = load_tokenizer(str(model_dir))
    tok_json = json.loads(tokenizer.backend_tokenizer.to_str())
    if tok_json["model"]["type"] != "BPE" or tok_json["model"].get("byte_fallback"):
        raise FinsentError(
            f"{model_dir}: GGUF export supports byte-level BPE tokenizers (SmolLM2, Llama 3); "
            "this one is SentencePiece-style"
        )

    ftype = {
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(
        cfg, "rope_theta", 10000.0
    )
    out = Path(out)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
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
        merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"].get("merges", [])]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        for name, idx in (
            ("bos", tokenizer.bos_token_id),
            ("eos", tokenizer.eos_token_id),
            ("pad", tokenizer.pad_token_id),
            ("unk", tokenizer.unk_token_id),
        ):
            if idx is not None:
                getattr(w, f"add_{name}_token_id")(idx)
        if getattr(tokenizer, "chat_template", None):
            w.add_chat_template(tokenizer.chat_template)

        for hf_name, tensor in state.items():
            name = _tensor_name(hf_name)
            if name is None:
                continue
            data = tensor.to(torch.float32).numpy()
            if name.endswith("attn_q.weight"):
                data = _permute(data, cfg.num_attention_heads)
            elif name.endswith("attn_k.weight"):
                data = _permute(data, cfg.num_key_value_heads)
            if data.ndim == 1:  # norms stay float32, as llama.cpp writes them
                w.add_tensor(name, data.astype(np.float32))
            elif dtype == "f16":
                w.add_tensor(name, data.astype(np.float16))
            else:
                qtype = gguf.GGMLQuantizationType.BF16 if dtype == "bf16" else gguf.GGMLQuantizationType.Q8_0
                q = gguf.quants.quantize(data, qtype)
                w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
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
    from finsent.evaluate import make_codec
    from finsent.fsio import write_json, write_text
    from finsent.model_card import write_model_card
    from finsent.models import load_model
    from finsent.scoring import classify

    out = Path(out)
    write_gguf(model_dir, out, dtype)
    source, tokenizer, device = load_model(cfg.model, dtype=torch.float32)
    codec = make_codec(cfg, tokenizer)
    write_text(out.parent / "Modelfile", modelfile(codec, out.name))
    if eval_examples is None:
        eval_examples = make_splits(cfg.data)[1]["eval"]
    texts = [e.text for e in eval_examples]
    before, _ = classify(source, codec, texts)
    del source
    loaded = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).to(
        device
    )
    gguf_tok = load_tokenizer_gguf(out)
    after, _ = classify(loaded, make_codec(cfg, gguf_tok), texts)
    agree = sum(a == b for a, b in zip(before, after)) / len(texts)
    need = MIN_AGREEMENT[dtype] if min_agreement is None else min_agreement
    parity = {
        "dtype": dtype,
        "agreement": agree,
        "n": len(texts),
        "min_agreement": need,
        "bytes": out.stat().st_size,
    }
    write_json(out.with_suffix(".parity.json"), parity)
    write_model_card(
        out.parent,
        cfg,
        "gguf",
        metrics=_metrics_of(model_dir),
        file=str(out),
        extra={
            "file": out.name,
            "tensor type": dtype,
            "parity (eval split)": f"{agree:.1%} identical predictions to {model_dir}",
        },
    )
    print(
        f"GGUF {dtype}: {out} ({out.stat().st_size / 1e6:.0f} MB); predictions identical to the source model "
        f"on {agree:.1%} of {len(texts)} eval sentences"
    )
    if agree < need:
        raise FinsentError(f"{out}: {dtype} export agrees on only {agree:.1%} (< {need:.1%})")
    return parity


def load_tokenizer_gguf(path: Path):
    """The tokenizer as stored in the GGUF (proves the file carries a usable tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _metrics_of(model_dir) -> dict | None:
    """Test metrics saved beside a merged model by `finsent run` (merged/metrics.json), if any."""
    for cand in (Path(model_dir) / "metrics.json", Path(model_dir).parent / "merged" / "metrics.json"):
        if cand.is_file():
            return json.loads(cand.read_text())
    return None
