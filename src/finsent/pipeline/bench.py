"""The benchmark: a model, its zero-shot base and two baselines on the suite's test sets, in one table.

Every row of a test set is scored on the same test rows (the table's paired tests compare them sentence by
sentence). A test text the model was trained on is never scored silently: left out and counted, or refused.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import time
from pathlib import Path

from finsent.core.artefacts import (
    BENCH_PREDICTIONS,
    BENCHMARK_STEM,
    MERGED_MODEL_DIR,
    METRICS_FILE,
    MODEL_DIR,
)
from finsent.core.config import load_saved_config, save_config
from finsent.core.errors import FinsentError
from finsent.core.options import Config, ModelConfig
from finsent.data.bench import LABELS, bench_set, hub_source, load_bench_set, missing
from finsent.data.corpora import BENCH_SETS, DATA_DIR_ENV
from finsent.data.splits import spread

MAJORITY, TFIDF = "majority class", "TF-IDF + LR"

# where each local corpus comes from (by the first word of its name), for the note on a set not found
HOW_TO_GET = {
    "fpb": "the hub's takala/financial_phrasebank or its authors (Malo et al. 2014)",
    "all": "Kaggle's 'Sentiment Analysis for Financial News' (ankurzing)",
    "semeval": "the SemEval-2017 Task 5 site or the SSIX bitbucket, under the task's data agreement",
    "fiqa": "the FiQA 2018 (WWW'18 open challenge) site",
    "sentfin": "Kaggle (SEntFiN 1.0, ankurzing; cite the paper)",
}


@dataclasses.dataclass
class _Set:
    name: str
    train: list
    test: list  # the rows scored: --limit test rows (data.splits.spread), less those the model was trained on
    considered: int  # test rows before the overlap guard
    exact: int = 0  # left out: the same text is in the model's training data
    normalised: int = 0  # left out: the same text once case, spacing and punctuation are ignored


def _note(notes: list[str], note: str) -> None:
    if note:
        notes.append(note)
        print(f"bench: note: {note}", flush=True)


def normalise(text: str) -> str:
    """'Profit  rose.' and 'profit rose' are one text: the comparison a mixture's leak removal makes
    (data.mixture.normalised), so a test row the mixture kept out of training is never flagged here."""
    from finsent.data.mixture import normalised

    return normalised(text)


def load_sets(names: list[str] | None, data_dir, limit: int, seen, strict: bool, notes: list) -> list[_Set]:
    """The named sets (default all) whose files are local, noting each missing one (none: an error): their
    training split and `limit` test rows (0: all), less the test texts the model was trained on."""
    found = []
    for bs in [bench_set(n) for n in names] if names else BENCH_SETS:
        rel = missing(bs, data_dir)
        found += [bs] if rel is None else []
        if rel:
            source = hub_source(bs) or HOW_TO_GET[bs.corpus.split(":")[0].split("-")[0]]
            _note(notes, f"{bs.name} skipped: {rel} not in the data folder (get it from {source})")
    if not found:
        where = data_dir or os.environ.get(DATA_DIR_ENV) or f"${DATA_DIR_ENV} (not set)"
        raise FinsentError(f"no benchmark set found under {where}: {'; '.join(notes)}")
    sets = []
    for bs in found:
        train, test = load_bench_set(bs.name, data_dir)
        # the baselines train on `train`: never on a test text, which the PhraseBank's repeated sentences
        # (FPB's and the notebooks' splits keep their sources' rows) put on both sides
        tested = {normalise(e.text) for e in test}
        kept = [e for e in train if normalise(e.text) not in tested]
        if len(kept) < len(train):
            _note(notes, f"{bs.name}: {len(train) - len(kept)} training rows whose text is also a test text "
                         "left out of the baselines' training")  # fmt: skip
        train = kept
        test = spread(test, limit)  # (the notebooks' split is ordered by label)
        s = _Set(bs.name, train, test, len(test))
        guard_overlap(s, seen, strict, notes)
        sets += [s] if s.test else []
        _note(notes, "" if s.test else f"{s.name} skipped: no test text left to score")
    return sets


def training_texts(folder: str | None) -> tuple[tuple[set, set] | None, str]:
    """(exact, normalised) texts of the train + eval splits of the saved config's data; or None, and why."""
    not_checked = "training data not found: overlap not checked"
    if folder is None or not Path(folder).expanduser().is_dir():
        return None, f"{not_checked} (the model is not a folder with a saved config)"
    try:
        from finsent.data.splits import make_splits

        saved = load_saved_config(folder)
        if saved is None:
            return None, f"{not_checked} (no saved config in {folder})"
        _, splits = make_splits(saved.data)
    except Exception as e:  # any failure to read it is a note in the table, never a silent pass
        return None, f"{not_checked} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    texts = [e.text for part in ("train", "eval") for e in splits.get(part, [])]
    return ({*texts}, {normalise(t) for t in texts} - {""}), ""


def guard_overlap(s: _Set, seen: tuple[set, set] | None, strict: bool, notes: list[str]) -> None:
    """Leave out of `s.test` the texts the model was trained on, counted and noted; `strict`: refuse."""
    if seen is None:
        return
    kept = []
    for e in s.test:
        if e.text in seen[0]:
            s.exact += 1
        elif normalise(e.text) in seen[1]:
            s.normalised += 1
        else:
            kept.append(e)
    if s.exact + s.normalised:
        shared = (f"{s.name}: {s.exact + s.normalised} of {s.considered} test texts are in the model's "
                  f"training data ({s.exact} exact, {s.normalised} once normalised)")  # fmt: skip
        if strict:
            raise FinsentError(f"--strict-overlap: {shared}; without it the other {len(kept)} are scored")
        _note(notes, f"overlap: {shared}: left out, scored on the other {len(kept)}")
    s.test = kept


def against_rows(
    folder: str | Path, sets: list[_Set], notes: list[str], strict: bool = False, limit: int = 0
) -> tuple[str, dict[str, list[str]], bool]:
    """An earlier `finsent bench` output in `folder` (another model on the same suite) joins the table:
    each set's test rows become those both benches scored (its model was kept off its own training texts,
    this one off this model's), so every row and paired test compares the same sentences. Returns its
    model's row name, {set: its predictions, in the order of `s.test`}, and whether that bench checked its
    model's overlap (a row it did not check is noted, and refused under `strict`)."""
    folder = Path(folder)
    try:
        table = json.loads((folder / f"{BENCHMARK_STEM}.json").read_text(encoding="utf-8"))
        name = table["roles"]["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FinsentError(
            f"--against {folder}: not a finsent bench output ({type(e).__name__}: {e})"
        ) from None
    checked = table.get("overlap_checked") is True
    if not checked:
        unchecked = f"--against {folder}: {name}'s rows were not checked against its training data"
        if strict:
            raise FinsentError(f"--strict-overlap: {unchecked}")
        _note(notes, unchecked + " (its notes: " + "; ".join(table.get("notes") or ["none"]) + ")")
    why = "its training data" + (
        f", or its --limit {table.get('limit')} against {limit} here"
        if table.get("limit", 0) != limit
        else ""
    )
    preds: dict[str, list[str]] = {}
    for s in sets:
        path = folder / BENCH_PREDICTIONS.format(test_set=s.name)
        if not path.is_file():
            _note(notes, f"--against: {s.name} was not scored in {folder}: no {name} row there")
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            theirs = {(r["source_row"], r["text"]): r["predicted"] for r in csv.DictReader(fh)}
        before = len(s.test)
        s.test = [e for e in s.test if (str(e.source_row), e.text) in theirs]
        preds[s.name] = [theirs[str(e.source_row), e.text] for e in s.test]
        if len(s.test) < before:
            _note(notes, f"--against: {s.name}: {before - len(s.test)} test rows that {name} did not score "
                         f"({why}) left out, scored on the other {len(s.test)}")  # fmt: skip
    return name, preds, checked


def zero_shot_base(model_cfg: ModelConfig, adapter: str | None) -> tuple[ModelConfig | None, str]:
    """The model without its fine-tuning: the adapter's base; for a whole fine-tuned model, the base its
    saved config, metrics or run folder records. Or None and why not."""
    if adapter:
        return copy.deepcopy(model_cfg), ""
    folder = Path(model_cfg.model).expanduser()
    saved = load_saved_config(folder) if folder.is_dir() else None
    if saved is None:
        return None, f"zero-shot row skipped: {model_cfg.model} is no model finsent fine-tuned (no base)"
    recorded = dataclasses.replace(model_cfg, load_in_4bit=False)
    try:  # a metrics.json that records the base
        recorded.model = str(json.loads((folder / METRICS_FILE).read_text()).get("base_model") or "")
    except (OSError, ValueError, AttributeError):
        recorded.model = ""
    # finsent's own layouts: RUN/merged_model and TRAIN/model, beside the config that trained them
    parent = load_saved_config(folder.parent) if folder.name in (MERGED_MODEL_DIR, MODEL_DIR) else None
    for mc in (saved.model, recorded, parent.model if parent else None):
        if mc is not None and _is_base(mc.model, folder):
            return mc, ""
    return None, f"zero-shot row skipped: nothing beside {model_cfg.model} records its base model"


def _is_base(spec: str, folder: Path) -> bool:
    """`spec` names a model other than `folder`: a name, or a folder that is no fine-tuned model itself."""
    path = Path(spec).expanduser()
    if not spec or not path.exists():
        return bool(spec) and not path.is_absolute() and not spec.startswith((".", "~"))
    own = load_saved_config(path) if path.is_dir() else None
    itself = own is not None and Path(own.model.model).expanduser().resolve() == path.resolve()
    return path.resolve() != folder.resolve() and not itself


def _display(spec: str) -> str:
    """A short name for a table row: a hub id or model name as is, a path by its last two parts."""
    path = Path(spec).expanduser()
    return "/".join(path.resolve().parts[-2:]) if path.exists() else spec


def _score(cfg: Config, mc: ModelConfig, adapter, sets: list[_Set], batch_size: int, name: str, notes=None):
    """{set: (predictions, probabilities, labels)} of one model, loaded once. With `notes` (the zero-shot
    base: context, never a reason to lose the model's row) a model that does not load is only a note."""
    from finsent.evaluation.evaluate import load_for_evaluation, run_evaluation
    from finsent.modeling.load import float32_labels

    mc = float32_labels(mc)  # as the run's evaluations score: float32's labels
    try:
        model, codec, device, calibration, recheck = load_for_evaluation(cfg, mc, adapter)
    except FinsentError as e:
        if notes is None:
            raise
        _note(notes, f"zero-shot row skipped: {e}")
        return {}
    out = {}
    for s in sets:
        start = time.perf_counter()
        _, preds, probs = run_evaluation(model, codec, s.test, batch_size, desc=f"{s.name} {name}",
                                         calibration=calibration, recheck=recheck)  # fmt: skip
        _progress(s, name, preds, time.perf_counter() - start, device)
        out[s.name] = (preds, probs, list(codec.labels))
    return out


def _progress(s: _Set, name: str, preds: list[str], seconds: float, where: str = "") -> None:
    acc = sum(p == e.label for e, p in zip(s.test, preds)) / max(len(preds), 1)
    line = f"bench: {s.name} | {name} | n={len(preds)} | {seconds:.1f}s{' on ' + where if where else ''}"
    print(f"{line} | accuracy {acc:.3f}", flush=True)


def _baselines(s: _Set) -> dict[str, list[str]]:
    """The majority class and TF-IDF + LR (C chosen on the training split only), fitted on `s.train`."""
    from threadpoolctl import threadpool_limits  # (scikit-learn's own dependency)

    from finsent.evaluation.baselines import choose_c, majority_baseline, tfidf_logreg_baseline

    texts, out = [e.text for e in s.test], {}
    for name, predict in (
        (MAJORITY, lambda: majority_baseline(s.train, texts)),
        (TFIDF, lambda: tfidf_logreg_baseline(s.train, texts, C=choose_c(s.train))),
    ):
        start = time.perf_counter()
        # one BLAS thread: small fits, where 2 threads on a busy 2-core machine took 6.0 s, not 0.23 s
        with threadpool_limits(limits=1):
            out[name] = predict()
        _progress(s, name, out[name], time.perf_counter() - start)
    return out


def _write_predictions(path: Path, s: _Set, preds: list[str], probs: list, labels: list[str]) -> None:
    from finsent.core.fsio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["source_row", "text", "label", "predicted", *(f"p_{lab}" for lab in labels)])
        for e, p, pr in zip(s.test, preds, probs):
            w.writerow([e.source_row, e.text, e.label, p, *(f"{x:.6f}" for x in pr)])


def bench(
    cfg: Config, model_cfg: ModelConfig, adapter: str | None, out: str | Path, sets: list[str] | None = None,
    zero_shot: bool = True, baselines: bool = True, batch_size: int = 32, data_dir=None, *,
    limit: int = 0, strict_overlap: bool = False, n_resamples: int = 1000, against: str | None = None,
) -> dict:  # fmt: skip
    """Score the model (with `adapter`), its zero-shot base and the baselines on every local benchmark set
    (with `against`, an earlier bench output: its model's row too, on the rows both scored: against_rows);
    write the table (json, md, png) and the model's predictions per set into `out`; return the table."""
    from finsent.core.fsio import out_folder
    from finsent.core.labels import normalise_label
    from finsent.evaluation.benchtable import build_table

    out_folder(out, model_ok=False)  # before any scoring
    labels = [normalise_label(x) for x in cfg.data.labels]
    if sorted(labels) != sorted(LABELS):  # a model answering other labels cannot be scored on these sets
        raise FinsentError(f"the model's labels {labels} are not the benchmark's {LABELS}")
    notes: list[str] = []
    seen, note = training_texts(adapter or model_cfg.model)
    if seen is None and strict_overlap:  # strict: what cannot be shown clean is not scored
        raise FinsentError(f"--strict-overlap: {note}")
    _note(notes, note)
    chosen = load_sets(sets, data_dir, limit, seen, strict_overlap, notes)
    other, other_preds, other_checked = (
        against_rows(against, chosen, notes, strict_overlap, limit) if against else (None, {}, True)
    )
    chosen = [s for s in chosen if s.test]
    if not chosen:
        raise FinsentError("no test rows left to score: " + "; ".join(notes))
    base, note = zero_shot_base(model_cfg, adapter) if zero_shot else (None, "")
    _note(notes, note)
    name = f"{_display(adapter)} on {_display(model_cfg.model)}" if adapter else _display(model_cfg.model)
    scored = _score(cfg, model_cfg, adapter, chosen, batch_size, name)
    zs_name = f"zero-shot {_display(base.model)}" if base else None
    if other and other in (name, zs_name, MAJORITY, TFIDF):  # two runs' models both show as train/model, say
        other += " (--against)"
    zs = _score(cfg, base, None, chosen, batch_size, zs_name, notes) if base else {}
    out, results = Path(out), {}
    for s in chosen:
        truth = [e.label for e in s.test]
        results[name, s.name] = (truth, scored[s.name][0])
        _write_predictions(out / BENCH_PREDICTIONS.format(test_set=s.name), s, *scored[s.name])
        if zs:
            results[zs_name, s.name] = (truth, zs[s.name][0])
        if s.name in other_preds:
            results[other, s.name] = (truth, other_preds[s.name])
        for b, preds in (_baselines(s) if baselines else {}).items():
            results[b, s.name] = (truth, preds)
    table = build_table(results, LABELS, reference=name, n_resamples=n_resamples)
    table.update(
        model=model_cfg.model, adapter=adapter, zero_shot_base=base.model if zs else None,
        roles={"model": name, "zero_shot": zs_name if zs else None, "against": other,
               **{k: v if baselines else None for k, v in (("majority", MAJORITY), ("tfidf", TFIDF))}},
        overlap={s.name: {"considered": s.considered, "exact": s.exact, "normalised": s.normalised,
                          "removed": s.exact + s.normalised, "scored": len(s.test)} for s in chosen},
        overlap_checked=seen is not None and other_checked, limit=limit, notes=notes,
        sets={s.name: {"train": len(s.train), "split": bench_set(s.name).about} for s in chosen},
    )  # fmt: skip
    _write(table, out, cfg)
    return table


def _write(table: dict, out: Path, cfg: Config) -> None:
    """The table; its Markdown holds the overlap and notes above the published figures."""
    from finsent.core.fsio import write_text
    from finsent.evaluation.benchtable import add_published_reference, format_markdown, write_benchtable

    paths = write_benchtable(table, out, stem=BENCHMARK_STEM, published=True)
    md = [format_markdown(table), "### Overlap with the model's training data, and notes", ""]
    if table["overlap_checked"]:
        md += ["| test set | test rows | left out: exact | left out: normalised | scored |", "|---" * 5 + "|"]
        md += [f"| {k} | {o['considered']} | {o['exact']} | {o['normalised']} | {o['scored']} |"
               for k, o in table["overlap"].items()] + [""]  # fmt: skip
    md += [f"- {n}" for n in table["notes"]] or ["- none"]
    write_text(paths["markdown"], add_published_reference("\n".join(md) + "\n"))
    save_config(cfg, out)
    print(f"bench: wrote {paths['json']}, {paths['markdown']}, {paths['plot']}", flush=True)
