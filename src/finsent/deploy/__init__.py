"""Shipping a model: the float32 merge and its parity check, GGUF for llama.cpp, the Ollama Modelfile,
the hub push. Beside serving/, in the same layer.
"""
