"""Labelled data read from one file: its examples and what was wrong with the file."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Example:
    source_row: int
    text: str
    label: str
    source: str = ""  # the data source's name in a mixture (data.sources); "" for one file


@dataclass
class LabelledData:
    """Labelled examples read from one file (or combined from several sources), with what was wrong
    with them. Not a Hugging Face `datasets.Dataset`: training builds one of those from the splits."""

    path: str
    examples: list[Example]
    malformed: list[str] = field(default_factory=list)  # "file:line: why", rows skipped
    invalid: list[str] = field(default_factory=list)  # rows skipped by --skip-invalid
    # what a corpus reader left out on purpose, and why, or how it built its rows (formats.py)
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0  # extra copies of a sentence with the same label
    conflicts: int = 0  # sentences that appear with more than one label
    dropped_by_dedupe: int = 0
    in_train_and_test: int = 0  # --split file: sentences of the test file also in the training data
    thin_eval: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (distinct, rows)
    split: str = ""  # the split made of it (auto resolved), its sizes and the rows in none of them
    sizes: dict[str, int] = field(default_factory=dict)
    unused: int = 0
    test_from: str = "--test-data"  # where a file split's test part came from, as split_line names it

    def split_line(self) -> str:
        """`train N, eval N, test N of M usable rows (split)`: what every command that splits prints."""
        s = self.sizes
        if not s:
            return ""
        of = (
            f" of {len(self.examples)} usable rows"
            if self.split != "file"
            else f", test from {self.test_from}"
        )
        return f"train {s['train']}, eval {s['eval']}, test {s['test']}{of} ({self.split} split)"

    def flaws(self) -> list[str]:
        out = list(self.notes)
        out += [f"malformed: {m}" for m in self.malformed]
        out += [f"skipped: {m}" for m in self.invalid]
        if self.duplicates:
            out.append(f"duplicate sentences: {self.duplicates} extra copies")
        if self.conflicts:
            out.append(f"conflicting labels: {self.conflicts} sentences have more than one label")
        if self.dropped_by_dedupe:
            out.append(f"--dedupe dropped {self.dropped_by_dedupe} rows")
        if self.in_train_and_test:
            out.append(
                f"leak: {self.in_train_and_test} sentences of the test file are also in the training data"
                + (
                    " (--dedupe removed them from train and eval)"
                    if self.dropped_by_dedupe
                    else " (--dedupe removes them)"
                )
            )
        if 2 * self.unused > len(self.examples):
            out.append(
                f"split: {self.unused} of {len(self.examples)} usable rows ({self.unused / len(self.examples):.0%})"
                f" are in no split: the {self.split} split keeps a fixed number of sentences per label"
                " (data.train_per_label, data.test_per_label, data.eval_per_label); --split stratified uses"
                " every row"
            )
        for label, (distinct, rows) in self.thin_eval.items():
            out.append(
                f"eval split: {rows} '{label}' rows hold only {distinct} distinct sentence(s) (the notebook"
                " split samples eval with replacement from what train and test leave); the eval split fits"
                " the temperature and is what training's eval metrics and the parity checks of `merge` and"
                " `export` without examples measure: lower data.train_per_label / data.test_per_label or use"
                " --split stratified"
            )
        return out


def _find_repeats(ds: LabelledData, dedupe: bool) -> None:
    by_text: dict[str, list[Example]] = defaultdict(list)
    for ex in ds.examples:
        by_text[ex.text].append(ex)
    conflicting = {t for t, exs in by_text.items() if len({e.label for e in exs}) > 1}
    ds.conflicts = len(conflicting)
    ds.duplicates = sum(len(exs) - len({e.label for e in exs}) for exs in by_text.values())
    if dedupe:
        seen: set[str] = set()
        kept = []
        for ex in ds.examples:
            if ex.text in conflicting or ex.text in seen:
                continue
            seen.add(ex.text)
            kept.append(ex)
        ds.dropped_by_dedupe = len(ds.examples) - len(kept)
        ds.examples = kept
