"""The benchmark table: every model on every test set, each score with its 95% bootstrap interval, and
paired tests of each model against a reference model on the same sentences.

`build_table` turns {(model, test set): (y_true, y_pred)} into a JSON-ready dict; `write_benchtable`
writes it atomically as JSON, Markdown and a PNG (grouped bars of weighted F1 with their intervals).
Published figures of other papers go into the Markdown only, under their own heading: they were measured
on other splits with other prompts, so they never sit in the same table as finsent's own measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from finsent.core.fsio import atomic_path, write_json, write_text
from finsent.evaluation.uncertainty import METRICS, bootstrap_intervals, paired_tests

__all__ = [
    "PUBLISHED_SOURCE",
    "PUBLISHED_WEIGHTED_F1",
    "add_published_reference",
    "build_table",
    "format_interval",
    "format_markdown",
    "plot_table",
    "published_reference_markdown",
    "write_benchtable",
]

# Weighted F1 as published in FinGPT's sentiment benchmark table (None: not reported). Their own test
# splits, prompts and label mappings; nothing here re-measured them.
PUBLISHED_SOURCE = (
    "FinGPT's README, sentiment benchmark (github.com/AI4Finance-Foundation/FinGPT), weighted F1"
)
PUBLISHED_TEST_SETS = ("FPB", "FiQA-SA", "TFNS", "NWGI")
PUBLISHED_WEIGHTED_F1: dict[str, tuple[float | None, ...]] = {
    "FinGPT v3.3 (Llama 2 13B, LoRA)": (0.882, 0.874, 0.903, 0.643),
    "FinGPT v3.2 (Llama 2 7B, LoRA)": (0.850, 0.860, 0.894, 0.636),
    "FinBERT": (0.880, 0.596, 0.733, 0.538),
    "GPT-4": (0.833, 0.630, 0.808, None),
}

Results = Mapping[tuple[str, str], tuple[Sequence[str], Sequence[str]]]


def _ordered(keys: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(keys))  # first appearance, no repeats


def build_table(
    results: Results,
    labels: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    reference: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Score every (model, test set) with bootstrap intervals; test every other model against `reference`.

    results: (model name, test-set name) -> (y_true, y_pred), label strings. labels: one label list, or
    one per test set. Every model is resampled with the same seed, so on one test set all models see the
    same resamples. Returns a JSON-ready dict with 'rows' (one per model and test set) and 'paired'
    (one per test set and non-reference model that has results there, when `reference` is given).
    """
    if not results:
        raise ValueError("benchmark table: no results")
    models = _ordered([m for m, _ in results])
    test_sets = _ordered([s for _, s in results])
    if reference is not None and reference not in models:
        raise ValueError(f"benchmark table: reference model '{reference}' has no results (models: {models})")

    def labels_for(test_set: str) -> list[str]:
        if isinstance(labels, Mapping):
            if test_set not in labels:
                raise ValueError(f"benchmark table: no label list for test set '{test_set}'")
            return list(labels[test_set])
        return list(labels)

    opts = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    rows, paired = [], []
    for test_set in test_sets:
        labs = labels_for(test_set)
        for model in models:
            if (model, test_set) not in results:
                continue
            y_true, y_pred = results[model, test_set]
            try:
                scores = bootstrap_intervals(y_true, y_pred, labs, **opts)
            except ValueError as e:
                raise ValueError(f"benchmark table: {model} on {test_set}: {e}") from None
            rows.append({"test_set": test_set, "model": model, **scores})
        if reference is None or (reference, test_set) not in results:
            continue
        ref_true, ref_pred = results[reference, test_set]
        for model in models:
            if model == reference or (model, test_set) not in results:
                continue
            y_true, y_pred = results[model, test_set]
            if list(y_true) != list(ref_true):  # a paired test needs the same sentences in the same order
                raise ValueError(
                    f"benchmark table: {model} and {reference} on {test_set} have different true labels"
                    " (not the same test sentences in the same order): no paired test"
                )
            test = paired_tests(y_true, y_pred, ref_pred, labs, **opts)
            paired.append({"test_set": test_set, "model": model, "reference": reference, **test})
    return {
        "confidence": confidence,
        "n_resamples": n_resamples,
        "seed": seed,
        "reference": reference,
        "models": models,
        "test_sets": test_sets,
        "rows": rows,
        "paired": paired,
    }


def format_interval(score: Mapping[str, float], digits: int = 3) -> str:
    """{'value', 'low', 'high'} -> '0.842 [0.818, 0.865]'."""
    return f"{score['value']:.{digits}f} [{score['low']:.{digits}f}, {score['high']:.{digits}f}]"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")  # a '|' in a model name would split the Markdown cell


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_markdown(table: Mapping, *, published: bool = False) -> str:
    """The table as Markdown: weighted F1 per model and test set, every metric, the paired tests; with
    `published=True` the published reference figures follow under their own heading."""
    pct = f"{table['confidence']:.0%}"
    n_by_set = {r["test_set"]: r["n"] for r in table["rows"]}
    by_key = {(r["model"], r["test_set"]): r for r in table["rows"]}
    lines = [
        "## Benchmark (measured here)",
        "",
        f"Each score is followed by its {pct} interval: the percentile bootstrap over the test sentences"
        f" ({table['n_resamples']} resamples, seed {table['seed']}; every model sees the same resamples).",
        "",
        "### Weighted F1",
        "",
        "| model | " + " | ".join(f"{_cell(s)} (n={n_by_set[s]})" for s in table["test_sets"]) + " |",
        "|---|" + "---|" * len(table["test_sets"]),
    ]
    for model in table["models"]:
        cells = [
            format_interval(by_key[model, s]["weighted_f1"]) if (model, s) in by_key else "-"
            for s in table["test_sets"]
        ]
        lines.append(f"| {_cell(model)} | " + " | ".join(cells) + " |")
    lines += ["", "### Every metric", "", "| test set | model | n | accuracy | weighted F1 | macro F1 |"]
    lines.append("|---|---|---|---|---|---|")
    for r in table["rows"]:
        scores = " | ".join(format_interval(r[m]) for m in METRICS)
        lines.append(f"| {_cell(r['test_set'])} | {_cell(r['model'])} | {r['n']} | {scores} |")
    if table["paired"]:
        ref = _cell(table["reference"])
        lines += [
            "",
            f"### Paired tests against {ref} (same sentences)",
            "",
            "McNemar: exact binomial test on the sentences exactly one of the two models gets right."
            f" Weighted-F1 difference: model minus {ref}, with its {pct} paired-bootstrap interval.",
            "",
            f"| test set | model | only model right | only {ref} right | McNemar p"
            f" | weighted F1 difference | bootstrap p |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in table["paired"]:
            mc, d = t["mcnemar"], t["weighted_f1_diff"]
            diff = f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
            # no resample on the other side of 0: p is below the bootstrap's resolution, 2 / n_resamples
            boot_p = f"<{2 / table['n_resamples']:.2g}" if d["p_value"] == 0 else _p(d["p_value"])
            lines.append(
                f"| {_cell(t['test_set'])} | {_cell(t['model'])} | {mc['a_right_b_wrong']}"
                f" | {mc['a_wrong_b_right']} | {_p(mc['p_value'])} | {diff} | {boot_p} |"
            )
    markdown = "\n".join(lines) + "\n"
    return add_published_reference(markdown) if published else markdown


def published_reference_markdown() -> str:
    """The published figures (PUBLISHED_WEIGHTED_F1) as a Markdown section, marked as not measured here."""
    lines = [
        "## Published figures (NOT measured here)",
        "",
        f"> Source: {PUBLISHED_SOURCE}. Copied as published, without intervals: other test splits, prompts"
        " and label mappings than the table above, so a difference to it is not a measured difference."
        " FinBERT was trained on the whole Financial PhraseBank, so its FPB figure is not a held-out score.",
        "",
        "| model (published) | " + " | ".join(PUBLISHED_TEST_SETS) + " |",
        "|---|" + "---|" * len(PUBLISHED_TEST_SETS),
    ]
    for model, values in PUBLISHED_WEIGHTED_F1.items():
        cells = ["-" if v is None else f"{v:.3f}" for v in values]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_published_reference(markdown: str) -> str:
    """`markdown` followed by the published reference section."""
    return markdown.rstrip("\n") + "\n\n" + published_reference_markdown()


def plot_table(table: Mapping, path: str | Path) -> None:
    """Grouped bars of weighted F1, one group per test set, one bar per model, the interval as error
    bars; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, test_sets = table["models"], table["test_sets"]
    by_key = {(r["model"], r["test_set"]): r["weighted_f1"] for r in table["rows"]}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 0.45 * len(models) * len(test_sets)), 4.0))
    for i, model in enumerate(models):
        xs, heights, lows, highs = [], [], [], []
        for j, test_set in enumerate(test_sets):
            s = by_key.get((model, test_set))
            if s is None:  # a model not run on this test set leaves a gap, not a zero bar
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            heights.append(s["value"])
            lows.append(max(0.0, s["value"] - s["low"]))
            highs.append(max(0.0, s["high"] - s["value"]))
        ax.bar(xs, heights, width, yerr=[lows, highs], capsize=3, label=model)
    ax.set_xticks(range(len(test_sets)), test_sets)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("weighted F1")
    ax.set_title(f"weighted F1 with {table['confidence']:.0%} bootstrap interval")
    ax.legend(fontsize="small", ncols=min(len(models), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        # tight (not tight_layout, which cannot widen the figure): the legend sits below the axes, and on a
        # narrow figure (one set, five long model names) is wider than it
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_benchtable(
    table: Mapping, out_dir: str | Path, *, stem: str = "benchmark", published: bool = True
) -> dict[str, Path]:
    """Write STEM.json (the table), STEM.md (Markdown, with the published figures unless
    `published=False`) and STEM.png (the plot) into `out_dir`, each atomically; returns the paths."""
    out = Path(out_dir)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md", "plot": out / f"{stem}.png"}
    write_json(paths["json"], table)
    write_text(paths["markdown"], format_markdown(table, published=published))
    plot_table(table, paths["plot"])
    return paths
