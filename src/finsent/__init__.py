"""finsent: fine-tune Llama-family models with LoRA/QLoRA to classify financial sentiment.

finsent run --out runs/demo          # split, zero-shot, train, evaluate, merge, report
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from finsent import Classifier` without importing torch at `import finsent`
    if name == "Classifier":
        from finsent.serving.api import Classifier

        return Classifier
    raise AttributeError(name)
