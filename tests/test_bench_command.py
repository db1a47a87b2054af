"""finsent bench: the model, its zero-shot base and the baselines on small corpora in the published formats
(written to tmp_path, FINSENT_DATA_DIR pointed there); the overlap guard; bad arguments."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from finsent.cli import main
from finsent.core.artefacts import BENCH_PREDICTIONS, BENCHMARK_STEM, CONFIG_FILE, MERGED_MODEL_DIR
from finsent.core.config import load_saved_config, save_config, self_contained
from finsent.core.options import Config
from finsent.data.phrasebank import DATA_DIR_ENV
from finsent.pipeline.bench import load_sets, normalise, zero_shot_base

WORDS = {
    "positive": "profit rose and sales beat estimates",
    "neutral": "the company held its annual meeting",
    "negative": "net loss widened and jobs were cut",
}
SCORES = {"positive": 0.5, "neutral": 0.0, "negative": -0.5}
# two SemEval test headlines that the planted training data holds: one as is, one re-cased and re-punctuated
PLANTED = ["Acme 3 profit rose and sales beat estimates", "Acme 5 net loss widened and jobs were cut"]
PLANTED_VARIANT = "acme 5 NET LOSS widened, and jobs were cut!"


def _rows(prefix: str, n: int) -> list[tuple[str, str]]:
    labels = list(WORDS)
    return [(f"{prefix} {i} {WORDS[labels[i % 3]]}", labels[i % 3]) for i in range(n)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The PhraseBank's 50% file and SemEval-2017 headlines (train and test), small, as published."""
    root = tmp_path_factory.mktemp("corpora")
    fpb = root / "financial_phrasebank" / "Sentences_50Agree.txt"
    fpb.parent.mkdir()
    fpb.write_bytes("".join(f"{t} .@{lab}\n" for t, lab in _rows("Sentence", 48)).encode("latin-1"))
    sem = root / "semeval2017_task5"
    sem.mkdir()
    train = [{"id": i, "company": "X", "title": t, "sentiment": SCORES[lab]} for i, (t, lab) in
             enumerate(_rows("Firm", 30))]  # fmt: skip
    test = [{"id": 100 + i, "company": "Acme", "title": t, "sentiment score": str(SCORES[lab])} for i, (t, lab)
            in enumerate(_rows("Acme", 14))]  # fmt: skip
    (sem / "Headline_Trainingdata.json").write_text(json.dumps(train))
    (sem / "Headlines_Testdata_withscores.json").write_text(json.dumps(test))
    return root


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny Llama whose saved config names its training data: 15 sentences of its
    own, two of them the SemEval test headlines PLANTED (one re-cased and re-punctuated)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("tuned")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(root / "adapter")
    rows = _rows("Own", 13) + [(PLANTED[0], "positive"), (PLANTED_VARIANT, "negative")]
    with open(root / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    (root / "test.csv").write_text("text,label\nOwn test sentence,neutral\n")
    cfg = Config()
    cfg.model.model = str(tiny_model_dir)
    cfg.data.data, cfg.data.split, cfg.data.test_data = (
        str(root / "train.csv"),
        "file",
        str(root / "test.csv"),
    )
    cfg.data.eval_size = 0.2  # every row of train.csv is in the train or eval split: both are training data
    save_config(cfg, root / "adapter")
    return root / "adapter"


def bench(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["bench", "--n-resamples", "200", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bench_writes_the_table_with_zero_shot_and_baselines(
    capsys, monkeypatch, data_dir, adapter, tiny_model_dir, tmp_path
):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    out = tmp_path / "bench"
    code, stdout, _ = bench(capsys, "--adapter", str(adapter), "--limit", "10", "--out", str(out))
    assert code == 0, stdout
    table = json.loads((out / f"{BENCHMARK_STEM}.json").read_text())
    assert set(table["test_sets"]) == {"fpb", "semeval-headlines"}  # the two sets written; the rest noted
    assert any("fpb-notebook skipped: kaggle_all_data/all-data.csv not in the data folder" in n
               for n in table["notes"])  # fmt: skip
    roles = table["roles"]
    assert table["zero_shot_base"] == str(tiny_model_dir) and roles["zero_shot"].startswith("zero-shot ")
    assert roles["model"].endswith(f"adapter on {'/'.join(tiny_model_dir.resolve().parts[-2:])}")
    rows = {(r["model"], r["test_set"]): r for r in table["rows"]}
    for test_set in ("fpb", "semeval-headlines"):
        for role in ("model", "zero_shot", "majority", "tfidf"):
            assert (roles[role], test_set) in rows, (role, test_set)
        # every model of a set on the same rows, tested against the model by pairs
        assert len({rows[roles[r], test_set]["n"] for r in roles if roles[r]}) == 1
        assert {p["model"] for p in table["paired"] if p["test_set"] == test_set} == {
            roles["zero_shot"], roles["majority"], roles["tfidf"]}  # fmt: skip
    # the TF-IDF baseline learns these word-coded labels; the majority class cannot
    assert (
        rows[roles["tfidf"], "fpb"]["accuracy"]["value"] > rows[roles["majority"], "fpb"]["accuracy"]["value"]
    )
    assert (out / f"{BENCHMARK_STEM}.png").read_bytes()[:4] == b"\x89PNG" and (out / CONFIG_FILE).is_file()
    md = (out / f"{BENCHMARK_STEM}.md").read_text()
    assert "Published figures (NOT measured here)" in md and roles["tfidf"] in md
    assert md.index("left out: exact") < md.index("Published figures")
    with open(out / BENCH_PREDICTIONS.format(test_set="fpb"), newline="") as fh:
        preds = list(csv.DictReader(fh))
    assert len(preds) == 10 and set(preds[0]) >= {"text", "label", "predicted", "p_positive"}
    assert stdout.count("bench: fpb | ") == 4 and "n=10 |" in stdout  # one progress line a model


def test_a_test_set_that_overlaps_the_training_data_is_reported_or_refused(
    capsys, monkeypatch, data_dir, adapter, tmp_path
):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert normalise(PLANTED_VARIANT) == normalise(PLANTED[1]) != normalise(PLANTED[0])
    out = tmp_path / "b"
    args = ["--adapter", str(adapter), "--sets", "semeval-headlines", "--limit", "8", "--no-zero-shot"]
    code, stdout, _ = bench(capsys, *args, "--out", str(out))
    assert code == 0
    table = json.loads((out / f"{BENCHMARK_STEM}.json").read_text())
    overlap = table["overlap"]["semeval-headlines"]
    assert overlap == {"considered": 8, "exact": 1, "normalised": 1, "removed": 2, "scored": 6}
    assert {r["n"] for r in table["rows"]} == {6} and table["overlap_checked"]
    assert table["roles"]["zero_shot"] is None and len(table["models"]) == 3  # the model and two baselines
    assert "overlap: semeval-headlines: 2 of 8 test texts are in the model's training data" in stdout
    assert "| semeval-headlines | 8 | 1 | 1 | 6 |" in (out / f"{BENCHMARK_STEM}.md").read_text()
    with open(out / BENCH_PREDICTIONS.format(test_set="semeval-headlines"), newline="") as fh:
        scored = {r["text"] for r in csv.DictReader(fh)}
    assert not scored & set(PLANTED)
    # strict: refused in one line, before any model is loaded
    code, _, err = bench(capsys, *args, "--strict-overlap", "--out", str(tmp_path / "s"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "--strict-overlap: semeval-headlines: 2 of 8 test texts" in err
        and "1 exact, 1 once normalised" in err
    )
    assert not (tmp_path / "s").exists()


def test_against_joins_an_earlier_bench_on_the_rows_both_scored(
    capsys, monkeypatch, data_dir, adapter, tiny_model_dir, tmp_path
):
    """The adapter's bench left out 2 SemEval test headlines it was trained on; the plain model's bench,
    run --against it, scores the other 6 only, with the adapter's row and a paired test on those rows."""
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--sets", "semeval-headlines,fpb", "--limit", "8", "--no-zero-shot", "--no-baselines"]
    assert bench(capsys, "--adapter", str(adapter), *common, "--out", str(first))[0] == 0
    # its fpb predictions are gone: that set gets no row of it, with a note
    (first / BENCH_PREDICTIONS.format(test_set="fpb")).unlink()
    code, stdout, _ = bench(capsys, "--model", str(tiny_model_dir), *common, "--against", str(first),
                            "--out", str(second))  # fmt: skip
    assert code == 0, stdout
    table = json.loads((second / f"{BENCHMARK_STEM}.json").read_text())
    earlier = json.loads((first / f"{BENCHMARK_STEM}.json").read_text())["roles"]["model"]
    assert table["roles"]["against"] == earlier
    rows = {(r["model"], r["test_set"]): r for r in table["rows"]}
    assert (
        rows[earlier, "semeval-headlines"]["n"]
        == rows[table["roles"]["model"], "semeval-headlines"]["n"]
        == 6
    )
    assert (earlier, "fpb") not in rows and rows[table["roles"]["model"], "fpb"]["n"] == 8
    assert [p["model"] for p in table["paired"]] == [earlier]
    with open(second / BENCH_PREDICTIONS.format(test_set="semeval-headlines"), newline="") as fh:
        assert not {r["text"] for r in csv.DictReader(fh)} & set(PLANTED)
    assert "--against: semeval-headlines: 2 test rows" in stdout and "fpb was not scored in" in stdout
    assert not table["overlap_checked"]  # (the tiny model records no training data)
    # the adapter against the adapter's bench: both checked
    code, _, _ = bench(capsys, "--adapter", str(adapter), *common, "--against", str(first),
                       "--out", str(tmp_path / "third"))  # fmt: skip
    assert (
        code == 0
        and json.loads((tmp_path / "third" / f"{BENCHMARK_STEM}.json").read_text())["overlap_checked"]
    )
    # against a bench that could not check its model: this table says so, and strict refuses
    code, stdout, _ = bench(capsys, "--adapter", str(adapter), *common, "--against", str(second),
                            "--out", str(tmp_path / "fourth"))  # fmt: skip
    table = json.loads((tmp_path / "fourth" / f"{BENCHMARK_STEM}.json").read_text())
    assert code == 0 and not table["overlap_checked"]
    assert any("rows were not checked against its training data" in n for n in table["notes"])
    fpb_only = ["--sets", "fpb", *common[2:]]  # (the adapter's own planted overlap is in SemEval's set)
    code, _, err = bench(capsys, "--adapter", str(adapter), *fpb_only, "--against", str(second),
                         "--strict-overlap", "--out", str(tmp_path / "fifth"))  # fmt: skip
    assert code == 2 and "--strict-overlap: --against" in err
    # rows the other bench left out because of its --limit are not called its training data
    code, stdout, _ = bench(capsys, "--model", str(tiny_model_dir), *common[:3], "10", *common[4:],
                            "--against", str(first), "--out", str(tmp_path / "sixth"))  # fmt: skip
    assert code == 0 and "(its training data, or its --limit 8 against 10 here)" in stdout
    # not a bench folder: one line, exit 2
    code, _, err = bench(capsys, "--model", str(tiny_model_dir), *common, "--against", str(tmp_path),
                         "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "not a finsent bench output" in err and len(err.strip().splitlines()) == 1


def test_a_model_without_training_data_is_scored_with_a_note(
    capsys, monkeypatch, data_dir, tiny_model_dir, tmp_path
):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    out = tmp_path / "plain"
    code, stdout, _ = bench(
        capsys,
        "--model",
        str(tiny_model_dir),
        "--sets",
        "fpb",
        "--limit",
        "6",
        "--no-baselines",
        "--out",
        str(out),
    )
    assert code == 0
    table = json.loads((out / f"{BENCHMARK_STEM}.json").read_text())
    assert table["models"] == [table["roles"]["model"]] and not table["overlap_checked"]
    assert any(n.startswith("training data not found: overlap not checked") for n in table["notes"])
    assert any(n.startswith("zero-shot row skipped") for n in table["notes"])
    assert "training data not found: overlap not checked" in (out / f"{BENCHMARK_STEM}.md").read_text()


def test_the_zero_shot_base_of_a_whole_fine_tuned_model(tiny_model_dir, tmp_path):
    """A merged model's own config names itself: its base is what the run beside it trained."""
    run = tmp_path / "run"
    merged = run / MERGED_MODEL_DIR
    merged.mkdir(parents=True)
    cfg = Config()
    cfg.model.model = str(tiny_model_dir)
    save_config(cfg, run)
    save_config(self_contained(cfg, merged), merged)
    base, note = zero_shot_base(load_saved_config(merged).model, None)
    assert base is not None and base.model == str(tiny_model_dir) and note == ""
    # a copy of it elsewhere: its config names the original, itself a fine-tuned model, not a base
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    save_config(self_contained(cfg, merged), copy_dir)
    mc = load_saved_config(copy_dir).model
    assert mc.model == str(merged.resolve())
    mc.model = str(copy_dir)  # as `--model copy` names it
    base, note = zero_shot_base(mc, None)
    assert base is None and "records its base model" in note
    base, note = zero_shot_base(Config().model, None)  # the embedded model: untuned, no base
    assert base is None and note.startswith("zero-shot row skipped")


def test_limit_takes_rows_evenly_spaced_through_the_test_split(monkeypatch, data_dir):
    """A test split ordered by label (the notebooks') must not give a one-label quick check."""
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    notes: list[str] = []
    (s,) = load_sets(["semeval-headlines"], None, 5, None, False, notes)
    assert [e.text.split()[1] for e in s.test] == ["0", "2", "5", "8", "11"] and s.considered == 5
    assert notes == []
    (s,) = load_sets(["semeval-headlines"], None, 100, None, False, notes)
    assert len(s.test) == 14  # a limit above the split's size: all of it
    # more than half of a split ordered by label: every label keeps its share (a step of
    # len // limit = 1 took the first 600 of 900: no negative at all)
    from finsent.data.splits import spread

    ordered = ["positive"] * 300 + ["neutral"] * 300 + ["negative"] * 300
    for limit, each in ((600, 200), (450, 150), (3, 1)):
        picked = spread(ordered, limit)
        assert len(picked) == limit and {x: picked.count(x) for x in set(picked)} == dict.fromkeys(
            ("positive", "neutral", "negative"), each
        )
    assert spread(ordered, 0) == ordered == spread(ordered, 901)


def test_baselines_never_train_on_a_test_text(monkeypatch, tmp_path):
    """The PhraseBank repeats sentences, and FPB's split keeps its rows: a repeat on both sides was in
    the baselines' training. Those training rows are left out, counted in a note."""
    fpb = tmp_path / "financial_phrasebank" / "Sentences_50Agree.txt"
    fpb.parent.mkdir()
    rows = _rows("Sentence", 40) + [("Sentence 1 the company held its annual meeting", "neutral")] * 6
    fpb.write_bytes("".join(f"{t} .@{lab}\n" for t, lab in rows).encode("latin-1"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    notes: list[str] = []
    (s,) = load_sets(["fpb"], None, 0, None, False, notes)
    tested = {normalise(e.text) for e in s.test}
    assert tested and not [e for e in s.train if normalise(e.text) in tested]
    assert any("training rows whose text is also a test text left out of the baselines" in n for n in notes)


def test_a_wide_legend_is_not_cut_off(tmp_path):
    """One test set, five long model names: the saved plot grows to hold the legend below the axes."""
    import matplotlib.image

    from finsent.evaluation.benchtable import plot_table

    models = [f"runs/a-rather-long-run-name-{i}/merged_model" for i in range(5)]
    row = {"value": 0.8, "low": 0.7, "high": 0.9}
    table = {"models": models, "test_sets": ["fpb"], "confidence": 0.95,
             "rows": [{"model": m, "test_set": "fpb", "weighted_f1": row} for m in models]}  # fmt: skip
    plot_table(table, tmp_path / "p.png")
    height, width = matplotlib.image.imread(tmp_path / "p.png").shape[:2]
    assert width > 700 and height > 400  # the figure alone: 500 x 400 pixels


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sets", "nope"], "unknown benchmark set 'nope'"),
        (["--limit", "-1"], "--limit: -1 is out of range"),
        (["--n-resamples", "0"], "0 is out of range"),
        (["--sets", "fpb-notebook"], "no benchmark set found under"),
        ([], "the following arguments are required: --out"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, monkeypatch, data_dir, tiny_model_dir, args, message):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    out = [] if not args else ["--out", "unused"]
    try:
        code = main(["bench", "--model", str(tiny_model_dir), *args, *out])
    except SystemExit as e:  # argparse's own checks, through finsent's one-line usage error
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
