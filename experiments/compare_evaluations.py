"""Do two evaluations of the same sentences give the same labels? (predictions.csv against predictions.csv)

    python -m experiments.compare_evaluations runs/demo-evalf32/finetuned runs/demo-evalguard/finetuned \\
        --note "the run's evaluation in float32 against guarded bf16"

Reads each evaluation folder's predictions.csv and metrics.json (as `finsent evaluate` and the
evaluations inside `finsent run` write them), checks that both scored the same rows, and records the
share of identical labels, the largest probability difference, each side's accuracy and scoring dtype,
and the rows whose label moved. Appends one record to experiments/results/run_evaluations.json. Used to
check a change of scoring path that should keep labels (issue 27's guarded bf16 in `finsent run`).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from experiments import RESULTS
from finsent.core.artefacts import METRICS_FILE, PREDICTIONS_FILE
from finsent.core.fsio import write_json
from finsent.modeling.device import cpu_name

RECORD = RESULTS / "run_evaluations.json"


def read(folder: Path) -> tuple[list[dict], dict]:
    with open(folder / PREDICTIONS_FILE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((folder / METRICS_FILE).read_text())


def compare(a: Path, b: Path) -> dict:
    rows_a, m_a = read(a)
    rows_b, m_b = read(b)
    key = ("source_row", "text")
    if [[r[k] for k in key] for r in rows_a] != [[r[k] for k in key] for r in rows_b]:
        raise SystemExit(f"{a} and {b} did not score the same rows in the same order")
    probs = [k for k in rows_a[0] if k.startswith("p_")]
    moved = [
        {"source_row": x["source_row"], "text": x["text"][:120], "a": x["predicted"], "b": y["predicted"]}
        for x, y in zip(rows_a, rows_b)
        if x["predicted"] != y["predicted"]
    ]
    return {
        "a": str(a),
        "b": str(b),
        "n": len(rows_a),
        "same_labels": len(rows_a) - len(moved),
        "max_probability_difference": max(
            abs(float(x[k]) - float(y[k])) for x, y in zip(rows_a, rows_b) for k in probs
        ),
        "accuracy": [m_a["accuracy"], m_b["accuracy"]],
        "dtype": [m_a.get("dtype"), m_b.get("dtype")],
        "seconds": [m_a.get("seconds"), m_b.get("seconds")],
        "moved": moved,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="an evaluation folder (holds predictions.csv, metrics.json)")
    ap.add_argument("b", type=Path, help="another evaluation of the same sentences")
    ap.add_argument("--note", default="", help="what the two are, in words")
    args = ap.parse_args()
    result = compare(args.a, args.b) | {"note": args.note, "cpu": cpu_name()}
    records = json.loads(RECORD.read_text()) if RECORD.exists() else []
    write_json(RECORD, [*records, result])
    print(
        f"{result['same_labels']}/{result['n']} identical labels, max probability difference "
        f"{result['max_probability_difference']:.4f}, accuracy {result['accuracy'][0]:.3f} / "
        f"{result['accuracy'][1]:.3f} ({result['dtype'][0]} / {result['dtype'][1]})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
