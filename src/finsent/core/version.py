"""finsent's version, on the ground floor so that any layer can name it without importing the package
root (which offers `Classifier`, from the serving layer)."""

__version__ = "0.1.0"
