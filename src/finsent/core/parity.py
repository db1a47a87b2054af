"""Parity: is a converted model (merged, exported to GGUF) still the model that was measured?

`finsent merge`, `finsent export` and `finsent run` certify their output the same way: the same
sentences are classified before and after the conversion, predictions and probabilities compared, the
result written as JSON beside the output, and the command fails below the required agreement.
"""

from __future__ import annotations

from pathlib import Path

from finsent.core.errors import FinsentError

# (predictions, per-label probabilities), as scoring.classify returns them
Outputs = tuple[list[str], list[list[float]]]


def compare(before: Outputs, after: Outputs, min_agreement: float, where: str) -> dict:
    """Agreement of the predictions, the largest probability difference, and whether it passes."""
    (preds_a, probs_a), (preds_b, probs_b) = before, after
    if len(preds_a) != len(preds_b) or not preds_a:
        raise ValueError(f"parity: {len(preds_a)} against {len(preds_b)} predictions")
    n = len(preds_a)
    agreement = sum(a == b for a, b in zip(preds_a, preds_b)) / n
    max_diff = max(
        (abs(x - y) for pa, pb in zip(probs_a, probs_b) for x, y in zip(pa, pb)),
        default=0.0,
    )
    return {
        "agreement": agreement,
        "n": n,
        "split": where,
        "max_probability_difference": float(max_diff),
        "min_agreement": min_agreement,
        "passed": agreement >= min_agreement,
    }


def certify(
    before: Outputs,
    after: Outputs,
    report: str | Path,
    *,
    where: str,
    what: str,
    min_agreement: float,
    extra: dict | None = None,
) -> dict:
    """compare(), write the result to `report` (JSON), print one line, and raise below `min_agreement`.
    `what` names the pair, e.g. 'merged model / adapter': it starts the line and the error."""
    from finsent.core.fsio import write_json

    parity = compare(before, after, min_agreement, where) | (extra or {})
    report = Path(report)
    write_json(report, parity)
    print(
        f"{what} parity on {parity['n']} sentences ({where}): {parity['agreement']:.1%} identical "
        f"predictions, max probability difference {parity['max_probability_difference']:.2e}"
    )
    if not parity["passed"]:
        raise FinsentError(
            f"{what}: agreement on only {parity['agreement']:.1%} of the {where} (< {min_agreement:.1%}); "
            f"not a faithful conversion (see {report})"
        )
    return parity


def summary_line(parity: dict) -> str:
    """'100.0% identical predictions (900 sentences of the test split)': for cards and reports."""
    return (
        f"{parity['agreement']:.1%} identical predictions ({parity['n']} sentences of the {parity['split']})"
    )
