"""The GGUF writer: a merged Llama folder to one GGUF file that llama.cpp loads, with its tokenizer."""

from __future__ import annotations

import json
import re
from hashlib import sha256
from pathlib import Path

from finsent.core.errors import FinsentError

# llama.cpp names a byte-level BPE pre-tokenizer by sha256(str(token ids of CHKTXT)), the ids from
# `tokenizer.encode(CHKTXT)` (special tokens included). Copied from llama.cpp's converter,
# conversion/base.py TextModel.get_vocab_base_pre (llama.cpp as vendored in llama-cpp-python 0.3.36);
# only the Llama-family entries finsent exports.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636"
    "\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 "
    "33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb"
    "\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 ?\u6211\u60f3"
    "\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= \u043d\u0435\u0449\u043e "
    "\u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 ''''''```````\""
    "\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll "
    "make it, 'D you like some tea? We'Ve a'lL"
)


PRE_BY_HASH = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3-8B
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM-135M
}


# Llama 3's split pattern as tokenizer.json writes it (llama.cpp src/llama-vocab.cpp, LLAMA3 pre-type)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _permute(w, n_head: int):
    """llama.cpp's row order for q/k (the inverse of transformers' reverse permutation on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor_plan(files, n_blocks: int):
    """(source, hf name, gguf name, gguf tensor kind, shape) per exported tensor, from headers only;
    `source` is the safetensors file.

    Names come from gguf-py's llama table; tensors it does not know are skipped, and so are rotary
    frequencies (llama.cpp recomputes them; Llama 3.x scaling comes from `_rope`). A tied lm_head absent
    from the files simply yields no output.weight: llama.cpp then reuses token_embd.
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
                plan.append((f, hf_name, hit[1], hit[0], shape))
    return plan


def _rope(w, cfg, head_dim: int):
    """Rope base and scaling keys as convert_hf_to_gguf.py writes them; for Llama 3.x ('llama3') the
    per-dimension frequency factors llama.cpp reads from a `rope_freqs` tensor (returned, else None)."""
    import math

    import gguf
    import numpy as np

    params = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    base = float(params.get("rope_theta") or getattr(cfg, "rope_theta", None) or 10000.0)
    w.add_rope_freq_base(base)
    w.add_rope_dimension_count(head_dim)
    kind = str(params.get("rope_type") or params.get("type") or "default").lower()
    factor = params.get("factor")
    if kind == "default":
        return None
    if kind == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(factor))
        return None
    if kind == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(factor))
        w.add_rope_scaling_orig_ctx_len(int(params["original_max_position_embeddings"]))
        for key, add in (
            ("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
            ("attention_factor", w.add_rope_scaling_yarn_attn_factor),
            ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
            ("beta_slow", w.add_rope_scaling_yarn_beta_slow),
        ):
            if params.get(key) is not None:
                add(float(params[key]))
        return None
    if kind == "llama3":
        # conversion/llama.py LlamaModel.generate_extra_tensors, in numpy
        factor = params.get("factor", 8.0)
        low = params.get("low_freq_factor", 1.0)
        high = params.get("high_freq_factor", 4.0)
        old_ctx = params.get("original_max_position_embeddings", 8192)
        freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        factors = []
        for freq in freqs:
            wavelen = 2 * math.pi / freq
            if wavelen < high_wavelen:
                factors.append(1.0)
            elif wavelen > low_wavelen:
                factors.append(factor)
            else:
                smooth = (old_ctx / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        return np.asarray(factors, dtype=np.float32)
    raise FinsentError(
        f"rope scaling '{kind}' (config.json rope_parameters): not supported by the GGUF export"
    )


def _looks_special(token: str) -> bool:
    """convert_hf_to_gguf.py does_token_look_special (the part that concerns Llama-family tokenizers)."""
    return token in ("<pad>", "<mask>") or (token.startswith("<|") and token.endswith("|>"))


def bpe_pre(tokenizer, tok_json: dict) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer.

    First by what tokenizer.json's pre_tokenizer does, when llama.cpp has exactly that split: this holds
    for any vocabulary and says what the folder's tokenizer really does (finsent's converted SmolLM2 lacks
    SmolLM2's digit splitting: it splits like GPT-2, and llama.cpp's 'smollm' would differ on a space run
    before a digit). Else by llama.cpp's own hash of the tokenizer's ids for CHKTXT, as its converter does.
    """
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if tok_json.get("normalizer") is None and not steps[-1].get("add_prefix_space"):
        if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
            return "gpt-2"
        if (
            kinds == ["Digits", "ByteLevel"]
            and steps[0].get("individual_digits")
            and steps[1].get("use_regex")
        ):
            return "smollm"
        if (
            kinds == ["Split", "ByteLevel"]
            and steps[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT
            and steps[0].get("behavior") == "Isolated"
            and not steps[1].get("use_regex", True)
            and tok_json["model"].get("ignore_merges")
        ):
            return "llama-bpe"
    chkhsh = sha256(str(tokenizer.encode(CHKTXT)).encode()).hexdigest()
    if chkhsh in PRE_BY_HASH:
        return PRE_BY_HASH[chkhsh]
    raise FinsentError(
        f"tokenizer pre-tokenizer {kinds} (llama.cpp hash {chkhsh[:12]}...) is not one llama.cpp knows for "
        "Llama-family models; llama.cpp would split text differently from the model's tokenizer"
    )


def _bpe_vocab(tokenizer, n_vocab: int):
    """Tokens and types as convert_hf_to_gguf.py get_vocab_base builds them."""
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added and i in decoder:
            if not decoder[i].normalized:  # llama.cpp expects added tokens pre-normalised
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if decoder[i].special or _looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _spm_vocab(model_dir: Path, tokenizer, tok_json: dict, n_vocab: int):
    """Tokens, scores and types of a SentencePiece (Llama 2) vocabulary, as _create_vocab_sentencepiece
    in convert_hf_to_gguf.py: from tokenizer.model when the folder has one (gguf-py's SentencePieceVocab),
    else from tokenizer.json (transformers 5 saves no tokenizer.model)."""
    import gguf

    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [gguf.TokenType.UNUSED] * n_vocab
    if (model_dir / "tokenizer.model").is_file():
        spm = gguf.vocab.SentencePieceVocab(model_dir)
        for i, (text, score, kind) in enumerate(spm.sentencepiece_tokens()):
            if i < n_vocab:
                tokens[i], scores[i], types[i] = text, score, kind
    else:
        # llama.cpp merges the adjacent pair whose joined piece scores highest; scoring each piece by
        # minus the rank of the BPE merge that builds it makes that order tokenizer.json's merge order.
        # (gguf-py's LlamaHfVocab scores every piece -1000, which leaves the order to chance.)
        model = tok_json["model"]
        merges = model.get("merges") or []
        rank: dict[str, int] = {}
        for r, m in enumerate(merges):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            rank.setdefault(a + b, r)
        for piece, i in model["vocab"].items():
            if i >= n_vocab:
                continue
            tokens[i] = piece.encode()
            if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
                types[i], scores[i] = gguf.TokenType.BYTE, 0.0
            else:
                types[i] = gguf.TokenType.NORMAL
                scores[i] = -float(rank[piece]) if piece in rank else -float(len(merges) + i)
        if model.get("unk_token") in model["vocab"]:
            types[model["vocab"][model["unk_token"]]] = gguf.TokenType.UNKNOWN
    for i, added in tokenizer.added_tokens_decoder.items():
        if i >= n_vocab:
            continue
        text = added.content
        if added.special or _looks_special(text):
            types[i] = gguf.TokenType.CONTROL
        else:
            text = text.replace("\u2581", " ")
            types[i] = gguf.TokenType.USER_DEFINED
        tokens[i], scores[i] = text.encode(), -1000.0
    return tokens, scores, types


def added_special(tokenizer) -> dict[str, bool]:
    """Whether the tokenizer really adds BOS / EOS to an encoded text (what llama.cpp must then do)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {
        "bos": bos is not None and len(ids) > len(plain) and ids[0] == bos,
        "eos": eos is not None and len(ids) > len(plain) and ids[-1] == eos,
    }


def _write_tokenizer(w, model_dir: Path, tokenizer, n_vocab: int) -> None:
    import gguf

    tok_json = json.loads(tokenizer.backend_tokenizer.to_str())
    model = tok_json["model"]
    sentencepiece = (model_dir / "tokenizer.model").is_file() or (
        model["type"] == "BPE" and model.get("byte_fallback")
    )
    if sentencepiece:
        tokens, scores, types = _spm_vocab(model_dir, tokenizer, tok_json, n_vocab)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        first = tokenizer.convert_ids_to_tokens(tokenizer("a", add_special_tokens=False)["input_ids"])[0]
        w.add_add_space_prefix(first.startswith("\u2581"))
    elif model["type"] == "BPE":
        tokens, types = _bpe_vocab(tokenizer, n_vocab)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(bpe_pre(tokenizer, tok_json))
        w.add_token_list(tokens)
        w.add_token_types(types)
    else:
        raise FinsentError(
            f"{model_dir}: a {model['type']} tokenizer; GGUF export supports BPE and SentencePiece"
        )
    # merges (BPE), special ids and the chat template, read from the folder's files as llama.cpp does
    special = gguf.SpecialVocab(model_dir, load_merges=not sentencepiece, n_vocab=n_vocab)
    # SpecialVocab finds a token only through added_tokens or config.json; fill the gaps from the loaded
    # tokenizer (its pad is eos when the folder has none, see finsent.models.load_tokenizer)
    for name, idx in (
        ("bos", tokenizer.bos_token_id),
        ("eos", tokenizer.eos_token_id),
        ("pad", tokenizer.pad_token_id),
        ("unk", tokenizer.unk_token_id),
    ):
        if idx is not None and idx < n_vocab:
            special.special_token_ids.setdefault(name, idx)
    # written always, and as the tokenizer behaves: SpecialVocab only parses simple post-processors, and
    # when the key is absent llama.cpp guesses from the tokenizer type
    special.add_special_token.update(added_special(tokenizer))
    special.add_to_gguf(w, quiet=True)


def _tensor_types(dtype: str, plan, n_layer: int):
    """qtype_of(shape, kind, gguf name): the ggml type of each tensor for the --quant `dtype`."""
    import gguf

    from finsent.deploy.kquants import DEFAULT_TYPE, llama_quant_type

    types = gguf.GGMLQuantizationType
    embd, head = gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.OUTPUT
    if dtype in DEFAULT_TYPE:  # 4- and 5-bit: llama-quantize's own choice, tensor by tensor
        tied = not any(kind == head for *_, kind, _ in plan)
        roles = {embd: "token_embd", head: "output"}
        roles.update({gguf.MODEL_TENSOR.ATTN_V: "attn_v", gguf.MODEL_TENSOR.FFN_DOWN: "ffn_down"})

        def mixed(shape, kind, name):
            if len(shape) == 1:
                return types.F32
            layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
            return types[llama_quant_type(dtype, roles.get(kind, ""), layer, n_layer, shape[-1], tied)]

        return mixed

    matrix_type = {"f16": types.F16, "bf16": types.BF16, "q8_0": types.Q8_0}[dtype]
    # the output head decides between the label words: llama-quantize keeps it above 8 bits, and with tied
    # embeddings (SmolLM2) token_embd is that head. q8_0 keeps both in f16: an all-q8_0 file fell under
    # the 98% agreement target on the demo model (docs/deployment.md, the GGUF table)
    keep_f16 = (embd, head) if dtype == "q8_0" else ()

    def plain(shape, kind, name):  # norms (and any 1-D tensor) stay float32, as llama.cpp writes them
        if len(shape) == 1:
            return types.F32
        return types.F16 if kind in keep_f16 else matrix_type

    return plain


def _quantize(data, qtype):
    """gguf-py's quantisers (f16, bf16, Q4_0, Q5_0, Q5_1, Q8_0), and llama.cpp's K-quants ported."""
    import gguf

    if qtype.name in ("Q4_K", "Q5_K", "Q6_K"):
        from finsent.deploy.kquants import quantize_k

        return quantize_k(data.reshape(-1, data.shape[-1]), qtype.name).reshape(*data.shape[:-1], -1)
    return gguf.quants.quantize(data, qtype)


def write_gguf(model_dir: str | Path, out: str | Path, dtype: str = "f16") -> Path:
    import contextlib

    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig

    from finsent.core.fsio import atomic_path
    from finsent.modeling.load import load_tokenizer

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
    n_vocab = cfg.vocab_size
    if max(tokenizer.get_vocab().values()) >= n_vocab:
        raise FinsentError(f"{model_dir}: the tokenizer has ids beyond config.json's vocab_size {n_vocab}")

    plan = _tensor_plan(files, cfg.num_hidden_layers)
    qtype_of = _tensor_types(dtype, plan, cfg.num_hidden_layers)
    plan = [(*p, qtype_of(p[4], p[3], p[2])) for p in plan]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
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
        rope_freqs = _rope(w, cfg, head_dim)
        if rope_freqs is not None:
            name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
            f32 = gguf.GGMLQuantizationType.F32
            plan.append((rope_freqs, None, name, gguf.MODEL_TENSOR.ROPE_FREQS, rope_freqs.shape, f32))
        w.add_vocab_size(n_vocab)
        w.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{dtype.upper()}"))
        _write_tokenizer(w, model_dir, tokenizer, n_vocab)

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
            for src, hf_name, _, kind, _, qtype in plan:
                if isinstance(src, np.ndarray):
                    w.write_tensor_data(src)
                    continue
                data = readers[src].get_tensor(hf_name).to(torch.float32).numpy()
                if kind == gguf.MODEL_TENSOR.ATTN_Q:
                    data = _permute(data, cfg.num_attention_heads)
                elif kind == gguf.MODEL_TENSOR.ATTN_K:
                    data = _permute(data, cfg.num_key_value_heads)
                w.write_tensor_data(_quantize(data, qtype))
    return out


def load_tokenizer_gguf(path: Path):
    """The tokenizer as stored in the GGUF (proves the file carries a usable tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


# f16, bf16 and q8_0 written whole; q4_0, q4_k_m, q5_k_m mixed tensor by tensor as llama-quantize does
DTYPES = ("f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m")
