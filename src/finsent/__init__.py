"""finsent: fine-tune Llama-family models with LoRA/QLoRA to classify financial sentiment.

finsent run --out runs/demo          # split, zero-shot, train, evaluate, merge, report
"""

__version__ = "0.1.0"
