"""Labels: how a raw label value is normalised and mapped onto the label set, and each label's answer word.

Ground floor: data, prompts, scoring and metrics all use these, and import nothing of finsent's but errors.
"""

from __future__ import annotations

from finsent.core.errors import FinsentError

# The generate method's answer that names no label: counted as wrong, never folded into a class.
UNPARSED = "unparsed"


def best_label(probabilities, labels):
    """The label of the highest probability; a tie goes to the label listed first. Every path that turns
    probabilities into a label (scoring, calibration and priors, hence evaluate, predict, serve and the
    API) calls this, so ties break the same way everywhere."""
    row = list(probabilities)
    return labels[max(range(len(row)), key=row.__getitem__)]


def normalise_label(raw: object) -> str:
    return " ".join(str(raw).split()).lower()


def parse_pairs(spec: str, what: str) -> dict[str, str]:
    """'0=negative, 1=positive' -> {'0': 'negative', '1': 'positive'} (keys and values normalised)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise FinsentError(f"{what}: '{part}' is not of the form key=value")
        k, v = part.split("=", 1)
        out[normalise_label(k)] = normalise_label(v)
    return out


class LabelMapper:
    """Maps raw label values to the label set; a value outside it is an error naming where it was."""

    def __init__(self, labels: list[str], label_map: str = ""):
        self.labels = [normalise_label(x) for x in labels]
        if len(set(self.labels)) != len(self.labels) or len(self.labels) < 2:
            raise FinsentError(f"--labels: need two or more distinct labels, got {labels}")
        self.mapping = parse_pairs(label_map, "--label-map")

    def __call__(self, raw: object) -> str | None:
        lab = normalise_label(raw)
        lab = self.mapping.get(lab, lab)
        return lab if lab in self.labels else None


def label_words_for(labels: list[str], spec: str) -> list[str]:
    """The answer word of each label: the label itself unless `spec` ('positive=bullish,...') says otherwise."""
    pairs = parse_pairs(spec, "--label-words") if spec else {}
    unknown = set(pairs) - set(labels)
    if unknown:
        raise FinsentError(f"--label-words: {', '.join(sorted(unknown))} not in the label set {labels}")
    words = [pairs.get(lab, lab) for lab in labels]
    if len(set(words)) != len(words):
        raise FinsentError(f"--label-words: two labels share an answer word: {words}")
    return words
