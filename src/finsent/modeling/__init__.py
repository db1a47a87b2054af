"""Models: loading (names, folders, GGUF files, hub ids, adapters, 4-bit bases), the embedded default
model, device and dtype, the label scorer, calibration and model cards.
"""
