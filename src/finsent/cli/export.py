"""finsent export: a merged Llama model to GGUF for llama.cpp and Ollama, kept only if predictions agree."""

from dataclasses import dataclass

from finsent.cli import common
from finsent.core.fields import opt
from finsent.core.options import Config
from finsent.deploy.gguf import DTYPES

HELP = "export a merged Llama model to GGUF (llama.cpp, Ollama) with a parity check"
EXAMPLE = "finsent export --model runs/demo/merged_model --quant q8_0 --out runs/demo/finsent-q8_0.gguf"
# data: the parity check's eval split (none recorded or given: finsent's built-in sentences)
SECTIONS = ("model", "data")
REFUSED = {"--dtype": "--quant for the GGUF tensor type (--model.dtype is the weights dtype)"}


@dataclass
class Args:
    config: str | None = common.config()
    format: str = opt("gguf", "file format", choices=("gguf",))
    out: str = common.out("the GGUF file to write", "FILE.gguf")
    quant: str = opt(
        "f16",
        "GGUF tensor type: f16, bf16, q8_0, or llama-quantize's 4/5-bit mixes q4_0, q4_k_m, q5_k_m",
        choices=DTYPES,
    )
    min_agreement: float | None = opt(
        None,
        "required share of identical predictions (default: 99.5% for f16/bf16, 98% for q8_0, 90% for "
        "q5_k_m, q4_k_m and q4_0)",
        at_least=0,
        at_most=1,
    )


def main(args: Args, cfg: Config) -> int:
    from finsent.deploy.export import export

    export(cfg, cfg.model.model, args.out, args.quant, min_agreement=args.min_agreement)
    return 0
