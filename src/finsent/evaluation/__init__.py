"""Evaluation: the one path from a model to its written evaluation, and the metrics."""
