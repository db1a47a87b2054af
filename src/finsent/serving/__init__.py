"""Using a model: the Python Classifier, predict over files and stdin (sharded under torchrun), and the
HTTP service with its micro-batcher and limits. Beside deploy/, in the same layer.
"""
