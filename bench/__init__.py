"""The product benchmarks: run from the repository root as modules, `python -m bench.predict` etc."""
