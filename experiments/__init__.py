"""Finished one-off studies (see README.md): run from the repository root as modules,
`python -m experiments.ablate` etc. They may import bench/; bench/ never imports them."""

from bench.common import ROOT

RESULTS = ROOT / "experiments" / "results"  # every study's record
