"""The ground floor: errors, console output, atomic files, labels, prompts, parity, the names of every
artefact, the registry of known models and the option dataclasses. It imports nothing else of finsent.
"""
