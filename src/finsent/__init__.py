"""finsent: fine-tune Llama-family models with LoRA/QLoRA to classify financial sentiment.

finsent run --data my.csv --out runs/mine     # split, zero-shot, train, evaluate, merge, report

from finsent import Classifier
clf = Classifier.load("runs/mine/merged_model")
"""

from finsent.core.version import __version__

__all__ = ["Classifier", "__version__"]


def __getattr__(name: str):
    # `from finsent import Classifier` without importing torch at `import finsent`
    if name == "Classifier":
        from finsent.serving.api import Classifier

        return Classifier
    raise AttributeError(name)
