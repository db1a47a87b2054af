"""`finsent train --dry-run`: parameters, optimizer steps and a memory estimate, without any weights.

    finsent train --config configs/llama-3.2-1b-notebook.yaml --dry-run

The architecture is built on the meta device (from the HF cache, a local folder, or, offline, the
notebooks' known architectures below) and LoRA attached as training would attach it.
"""

from __future__ import annotations

import math

from finsent.config import Config
from finsent.train_args import lora_config


def dry_run(cfg: Config) -> dict:
    """Resolve everything without weights: the architecture on the meta device, LoRA attached."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model_cfg = _architecture(cfg.model.model, cfg.model.cache_dir)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(model_cfg)
    total = sum(p.numel() for p in base.parameters())
    peft_model = get_peft_model(base, lora_config(cfg, base))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    tc = cfg.train
    n_train = _train_size(cfg)
    per_step = tc.per_device_train_batch_size * tc.gradient_accumulation_steps
    steps = (
        tc.max_steps if tc.max_steps > 0 else math.ceil(n_train / per_step) * math.ceil(tc.num_train_epochs)
    )
    bytes_per = (
        0.5 if cfg.model.load_in_4bit else (2 if cfg.model.dtype in ("auto", "bfloat16", "float16") else 4)
    )
    base_gb = total * bytes_per / 1e9
    # LoRA weights in fp32 + their grads + two AdamW moments
    lora_gb = trainable * 4 * 4 / 1e9
    seq = 128  # a PhraseBank prompt is under 128 tokens
    layers, hidden = model_cfg.num_hidden_layers, model_cfg.hidden_size
    # Activations kept for the backward pass, per token and layer. Korthikanti et al. 2022 ("Reducing
    # Activation Recomputation in Large Transformer Models") count 34 x hidden bytes for a layer in 16-bit
    # (attention scores left out: fused attention keeps none); with gradient checkpointing only the layer's
    # input is kept, 2 x hidden bytes. The final x 2 is for float32 activations (CPU training), so on a GPU
    # in 16-bit the estimate errs high.
    bytes_per_token_layer = 2 if tc.gradient_checkpointing else 34
    act_gb = tc.per_device_train_batch_size * seq * hidden * layers * bytes_per_token_layer * 2 / 1e9
    return {
        "model": cfg.model.model,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "trainable_percent": 100 * trainable / total,
        "train_examples": n_train,
        "optimizer_steps": steps,
        "memory_estimate_gb": {
            "weights": round(base_gb, 2),
            "lora_and_optimizer": round(lora_gb, 2),
            "activations": round(act_gb, 2),
            "total": round(base_gb + lora_gb + act_gb, 2),
        },
    }


def _train_size(cfg: Config) -> int:
    dc = cfg.data
    if dc.split == "notebook":
        return dc.train_per_label * len(dc.labels)
    from finsent.data import make_splits

    return len(make_splits(dc)[1]["train"])


# Architectures of the notebooks' models, so --dry-run works offline without their weights.
KNOWN_ARCHITECTURES = {
    "meta-llama/Llama-3.2-1B": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        rope_theta=500000.0,
    ),
    "meta-llama/Llama-2-7b-hf": dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        tie_word_embeddings=False,
    ),
}
KNOWN_ARCHITECTURES["NousResearch/Llama-2-7b-hf"] = KNOWN_ARCHITECTURES["meta-llama/Llama-2-7b-hf"]


def _architecture(spec: str, cache_dir: str):
    """The model's config: from the HF cache or local folder, else (offline) the known architecture."""
    from transformers import AutoConfig, LlamaConfig

    from finsent.models import resolve_model

    if spec in KNOWN_ARCHITECTURES:
        try:
            return AutoConfig.from_pretrained(spec, local_files_only=True)
        except OSError:
            return LlamaConfig(**KNOWN_ARCHITECTURES[spec])
    return AutoConfig.from_pretrained(resolve_model(spec, cache_dir))
