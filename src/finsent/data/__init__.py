"""Data: read labelled sentences from any supported file (one suffix registry), report their flaws,
fetch the Financial PhraseBank, split.
"""
