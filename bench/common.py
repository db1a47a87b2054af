"""What the benchmarks share, and the studies in experiments/ with them: the checkout, the data file,
and the options and test split of a tuned demo model."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FINSENT_DATA_DIR", ROOT.parent / "shared" / "data"))
DATA = DATA_DIR / "kaggle_all_data" / "all-data.csv"  # the notebooks' data file
RESULTS = ROOT / "bench" / "results"


def demo_model_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """--model (the demo's merged model), --data (all-data.csv) and --out (default `out`): shared by the
    scripts that measure a tuned model on the notebooks' test split (bench/prior_shift.py,
    experiments/int8.py)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "merged_model"))
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(out))
    return ap


def demo_test_split(model: str, data: str):
    """(config in float32, the notebooks' test split) for a tuned model folder."""
    from finsent.core.config import resolve
    from finsent.data.splits import make_splits

    cfg = resolve(None, {"model.model": model, "data.data": data, "model.dtype": "float32"}, None)
    return cfg, make_splits(cfg.data)[1]["test"]
