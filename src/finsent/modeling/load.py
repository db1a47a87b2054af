"""Loading a model and tokenizer: a name, folder, GGUF file or hub id; LoRA adapters; 4-bit bases."""

from __future__ import annotations

from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.fsio import cache_root
from finsent.core.registry import EMBEDDED, ZERO_SHOT_ACCURACY
from finsent.modeling.device import launched_with_fsdp, pick_device, pick_dtype
from finsent.modeling.embedded import _convert_gguf, embedded_gguf


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
            raise FinsentError(
                f"--model {spec}: folder has no config.json (not a Hugging Face model folder){_inside(path)}"
            )
        return str(path)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec  # a hub id: transformers fetches it (online) or finds it in the HF cache
    raise FinsentError(
        f"--model {spec}: not a known model name, an existing folder, a .gguf file, or a hub id"
    )


def warn_if_untuned(spec: str) -> None:
    """A warning on stderr when `spec` is a base model that finsent never tuned (no saved config)."""
    import sys

    from finsent.core.artefacts import CONFIG_FILE

    if Path(spec).expanduser().is_dir() and (Path(spec).expanduser() / CONFIG_FILE).is_file():
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
    if adapter:  # every caller (CLI, Classifier, evaluate, merge) is checked here, before any loading
        check_adapter(adapter, mc.model, path)
    device = pick_device(mc.device)
    dtype = dtype or pick_dtype(mc.dtype, device, training=trainable)
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

        try:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
        except (KeyError, TypeError, ValueError) as e:  # an adapter_config.json PEFT cannot use
            raise FinsentError(
                f"--adapter {adapter}: PEFT cannot load it ({type(e).__name__}: {e})"
            ) from None
    if not trainable:
        model.eval()
    return model, tokenizer, device


def check_adapter(adapter: str, model: str, resolved: str) -> None:
    """A one-line error unless `adapter` holds an adapter_config.json, was trained on `model` (which
    resolved to the folder `resolved`) and names its PEFT type."""
    from finsent.core.config import adapter_base, peft_record, same_model

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise FinsentError(f"--adapter {adapter}: no adapter_config.json there")
    base = adapter_base(adapter)
    if base and not same_model(model, base, resolved=resolved):
        raise FinsentError(
            f"--adapter {adapter}: it was trained on {base}, not on {model}; pass --model {base}"
        )
    if "peft_type" not in peft_record(Path(adapter)):
        raise FinsentError(
            f"--adapter {adapter}: adapter_config.json names no peft_type (not a PEFT adapter)"
        )


def float32_labels(mc):
    """A copy of the model options `mc` that scores with float32's labels at the least cost, for the
    evaluations inside `finsent run` and `finsent bench`. A 4-bit base stays 4-bit (what was trained). On
    a CPU with the guard on (mc.guard > 0) the options stay as given: `auto` is float32, or bf16 with the
    float32 recheck of near-ties where the CPU has AMX or AVX512-BF16, and bf16 or fp16 asked for by name
    is rechecked the same way (load_scorer). Anywhere else (a GPU, the guard off) it is float32: a plain
    bf16 pass moved 5 of the demo model's 900 test labels (docs/reliability.md)."""
    import copy

    import torch

    mc = copy.deepcopy(mc)
    on_cpu = torch.device(pick_device(mc.device)).type == "cpu"
    if not mc.load_in_4bit and not (on_cpu and mc.guard > 0):
        mc.dtype = "float32"
    return mc


def load_scorer(mc, adapter: str | None = None, priors=None):
    """(model, tokenizer, device, recheck) for classifying: load_model's, and where the scoring dtype is
    bf16/fp16 on a CPU and mc.guard > 0, the model in that dtype with a float32 twin as a scoring.Recheck
    (else None): 1.5 times float32's memory. Both are loaded from the same files (an adapter included);
    the fast copy borrows the twin's float32 output head, because a bf16 head rounds logits near 20 to
    steps of 1/8, which tied two labels exactly (docs/reliability.md). `priors`: the label shares a
    fixed --priors gives, as offsets (calibration.prior_offsets), so that the guard measures the gap that
    decides the label after the prior correction."""
    import torch

    from finsent.modeling.scoring import Recheck

    device = pick_device(mc.device)
    on_cpu = torch.device(device).type == "cpu"
    dtype = pick_dtype(mc.dtype, device, guarded=mc.guard > 0 and on_cpu)
    if not on_cpu or dtype == torch.float32 or mc.guard <= 0 or mc.load_in_4bit:
        return (*load_model(mc, adapter, dtype=dtype), None)
    exact, tokenizer, device = load_model(mc, adapter, dtype=torch.float32)
    fast, _, _ = load_model(mc, adapter, dtype=dtype)
    inner = fast.get_base_model() if hasattr(fast, "get_base_model") else fast
    inner.set_output_embeddings(exact.get_output_embeddings())
    return fast, tokenizer, device, Recheck(exact, mc.guard, offsets=priors)


def _inside(folder: Path) -> str:
    """A hint for a run or training folder given as --model: the model folders finsent wrote inside it."""
    from finsent.core.artefacts import ADAPTER_DIR, MERGED_MODEL_DIR, MODEL_DIR

    found = [folder / n for n in (MERGED_MODEL_DIR, MODEL_DIR) if (folder / n / "config.json").is_file()]
    if (folder / ADAPTER_DIR / "adapter_config.json").is_file():
        return f"; it holds an adapter: --adapter {folder / ADAPTER_DIR}"
    return f"; it holds a model: --model {found[0]}" if found else ""
