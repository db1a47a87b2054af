"""Bad input on the data side that a newcomer's review found handled wrongly: an output path that is a
file, a CSV quote never closed, line numbers after a multi-line field, scores out of a corpus's range,
a mixture listing one file twice, a damaged first JSON record, a bench that cannot check its overlap.
Each is a one-line error (exit 2) naming the file, line or field, or a counted bad row."""

from __future__ import annotations

import errno
import json

import pytest
from conftest import DATA_DIR

from finsent.cli import main
from finsent.core.errors import FinsentError
from finsent.core.fsio import write_failure
from finsent.data.readers import read_file

LABELS = ["positive", "neutral", "negative"]


def rows_csv(path, n: int = 30, bad: dict[int, str] | None = None):
    """A `text,label` CSV of n rows (the label by the row's verb); `bad` replaces data row i's line."""
    verbs = {"positive": "rose", "neutral": "said", "negative": "fell"}
    lines = ["text,label"]
    for i in range(n):
        label = list(verbs)[i % 3]
        lines.append((bad or {}).get(i, f"The profit {verbs[label]} by {i} percent .,{label}"))
    path.write_text("\n".join(lines) + "\n")
    return path


def one_line_error(capsys, argv: list[str]) -> str:
    """The command's error: one line, exit 2 (a data summary may come before it), no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith(f"finsent {argv[0]}: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("command", ["data", "evaluate", "bench", "run", "train"])
def test_an_out_that_is_a_file_is_refused_before_any_work(command, tmp_path, capsys, tiny_model_dir):
    data = rows_csv(tmp_path / "d.csv")
    (tmp_path / "afile").write_text("mine\n")
    args = {
        "data": ["data", "--data", str(data)],
        "evaluate": ["evaluate", "--model", str(tiny_model_dir), "--data", str(data)],
        "bench": ["bench", "--model", str(tiny_model_dir), "--sets", "semeval-headlines"],
        "run": ["run", "--model", str(tiny_model_dir), "--data", str(data)],
        "train": ["train", "--model", str(tiny_model_dir), "--data", str(data)],
    }[command]
    err = one_line_error(capsys, [*args, "--out", str(tmp_path / "afile")])
    assert f"--out {tmp_path / 'afile'}: is a file, not a folder; choose another --out" in err
    err = one_line_error(capsys, [*args, "--out", str(tmp_path / "afile" / "sub")])
    assert f"lies under {tmp_path / 'afile'}, which is a file, not a folder" in err
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_a_path_of_the_wrong_kind_is_explained_by_its_errno():
    for code, words in ((errno.EEXIST, "a file is in the way of a folder"),
                        (errno.ENOTDIR, "a file is in the way of a folder"),
                        (errno.EISDIR, "it is a folder, where a file goes")):  # fmt: skip
        err = write_failure(OSError(code, "x", "/o/p"), None)
        assert err is not None and str(err) == f"/o/p: {words}; choose another --out"


def test_exported_splits_are_one_set(tmp_path, capsys):
    data = rows_csv(tmp_path / "d.csv")
    out = tmp_path / "o"
    assert main(["data", "--data", str(data), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    (out / "test.csv").unlink()
    (out / "test.csv").mkdir()  # the one split that cannot be replaced
    other = rows_csv(tmp_path / "e.csv", n=45)
    err = one_line_error(capsys, ["data", "--data", str(other), "--out", str(out)])
    assert err.endswith(f"--out {out}: test.csv is a folder; choose another --out")
    assert {p.name: p.read_bytes() for p in out.glob("*.csv") if p.is_file()} == {
        k: v for k, v in before.items() if k != "test.csv"
    }  # the earlier train and eval splits, untouched


def test_a_quote_never_closed_is_an_error_naming_its_line_and_the_lines_it_took(tmp_path, capsys):
    data = rows_csv(tmp_path / "q.csv", bad={10: '"A meeting of the board,neutral'})
    with pytest.raises(FinsentError) as e:
        read_file(data, LABELS)
    assert str(e.value).startswith(
        f"{data}:12: expected 2 fields, got 1: the row runs on to line 31, the file's end (a quote opened here never closed?)"
    )
    ds = read_file(data, LABELS, skip_invalid=True)  # counted, and the rows it swallowed are visible
    assert len(ds.examples) == 10 and len(ds.invalid) == 1


def test_line_numbers_count_the_lines_inside_a_quoted_field(tmp_path):
    data = rows_csv(tmp_path / "m.csv", bad={1: '"a text\nover\nthree lines",neutral', 6: "bad,bullish"})
    with pytest.raises(FinsentError, match=f"{data}:10: label 'bullish'"):  # line 8 before the fix
        read_file(data, LABELS)


def test_a_non_string_text_is_a_bad_row(tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text('{"text": "Profit rose .", "label": "positive"}\n{"text": 5, "label": "neutral"}\n')
    with pytest.raises(FinsentError, match=r"t.jsonl:2: text 5 is not a string"):
        read_file(data, LABELS)


def semeval(path, records):
    path.write_text(json.dumps(records, indent=1))
    return path


HEADLINE = {"id": 1, "company": "BP", "title": "BP profit rises", "sentiment": 0.5}


def test_a_corpus_score_outside_minus_one_to_one_is_a_bad_row(tmp_path):
    path = semeval(tmp_path / "h.json", [HEADLINE, {**HEADLINE, "id": 2, "title": "x", "sentiment": 7}])
    with pytest.raises(FinsentError, match=r"record 1: sentiment 7 is outside the corpus's range \[-1, 1\]"):
        read_file(path, LABELS)
    path = semeval(tmp_path / "u.json", [HEADLINE, {**HEADLINE, "id": 2, "title": "x", "sentiment": "1_0"}])
    with pytest.raises(FinsentError, match=r"record 1: sentiment '1_0' is not a number"):
        read_file(path, LABELS)


def test_a_damaged_first_record_does_not_hide_the_format(tmp_path):
    first = {k: v for k, v in HEADLINE.items() if k != "company"}
    path = semeval(tmp_path / "h.json", [first, {**HEADLINE, "id": 2, "title": "Shell profit falls"}])
    assert read_file(path, LABELS).flaws()[0].startswith("SemEval-2017 headlines:")
    obj = tmp_path / "o.json"
    obj.write_text(json.dumps({"1": HEADLINE, "2": HEADLINE}, indent=1))
    with pytest.raises(FinsentError, match="a JSON object whose records are not FiQA 2018 posts"):
        read_file(obj, LABELS)


def test_sentfin_labels_are_checked_in_every_entity(tmp_path):
    path = tmp_path / "SEntFiN.csv"
    path.write_text(
        'S No.,Title,Decisions,Words\n1,A up B down,"{""A"": ""positive"", ""B"": ""negative""}",4\n'
        '2,A and B,"{""A"": ""bullish"", ""B"": ""positive""}",3\n'
    )
    with pytest.raises(FinsentError, match=r"SEntFiN.csv:3: Decisions label 'bullish' is not one of"):
        read_file(path, LABELS)


def test_user_scores_beyond_minus_one_to_one_are_reported_and_a_mapped_label_set_explained(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("text,label\nGood,7\nBad,-3\nSo so,0.05\n")
    ds = read_file(path, LABELS, label_map="scores")
    assert any("the scores run from -3 to 7, labelled by thresholds -0.1,0.1" in n for n in ds.flaws())
    with pytest.raises(FinsentError, match=r"score '7' means 'positive', which is not one of bullish"):
        read_file(path, ["bullish", "neutral", "bearish"], label_map="scores")


def test_a_mixture_refuses_one_file_twice_and_a_huge_weight_and_names_sources(tmp_path, monkeypatch):
    from finsent.core.options import DataConfig
    from finsent.data.splits import make_splits

    monkeypatch.setenv("FINSENT_DATA_DIR", str(DATA_DIR))
    sentfin = DATA_DIR / "sentfin" / "SEntFiN.csv"
    twice = DataConfig(sources=["sentfin cap=30", f"{sentfin} cap=30 name=again"])
    with pytest.raises(FinsentError, match=f"sentfin and again are the same file \\({sentfin}\\)"):
        make_splits(twice)
    with pytest.raises(
        FinsentError, match="weight=1e\\+09 is out of range \\(must be above 0 and at most 100\\)"
    ):
        make_splits(DataConfig(sources=["sentfin weight=1e9"]))
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        rows_csv(folder / "train.csv")
    ds, splits = make_splits(DataConfig(sources=[f"{a / 'train.csv'}", f"{b / 'train.csv'} name=other"]))
    assert {e.source for e in splits["train"]} == {"train", "other"}


def test_strict_overlap_refuses_a_model_whose_training_data_is_gone(tmp_path, capsys, tiny_model_dir):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "finsent_config.yaml").write_text(f"data:\n  data: {tmp_path / 'gone.csv'}\n")
    err = one_line_error(
        capsys, ["bench", "--model", str(model), "--strict-overlap", "--out", str(tmp_path / "b")]
    )
    assert "--strict-overlap: training data not found: overlap not checked" in err
    assert not (tmp_path / "b").exists()


def test_a_misspelt_corpus_name_or_a_folder_as_data_says_what_data_takes(tmp_path, capsys):
    err = one_line_error(capsys, ["data", "--data", "sentfn"])
    assert "sentfn: no such file, nor a corpus name (under $FINSENT_DATA_DIR: semeval-headlines" in err
    err = one_line_error(capsys, ["data", "--sources", "sentfn,all-data"])
    assert "sentfn: no such file, nor a corpus name" in err
    err = one_line_error(capsys, ["data", "--data", str(tmp_path)])
    assert err.endswith(f"{tmp_path}: a folder; pass a data file in it, or a corpus name")


def test_a_json_lines_record_without_the_text_or_label_field_says_which(tmp_path):
    data = tmp_path / "k.jsonl"
    data.write_text(
        '{"text": "Profit rose .", "label": "positive"}\n{"txt": "Sales fell .", "label": "negative"}\n'
    )
    with pytest.raises(FinsentError, match=r"k.jsonl:2: no 'text' field"):
        read_file(data, LABELS)
    data.write_text('{"text": "Profit rose .", "label": "positive"}\n{"text": "Sales fell ."}\n')
    with pytest.raises(FinsentError, match=r"k.jsonl:2: no 'label' field"):
        read_file(data, LABELS)


def test_a_closed_multi_line_row_with_a_field_too_many_is_one_malformed_row(tmp_path):
    data = rows_csv(tmp_path / "c.csv", bad={3: '"a text\nover two lines",neutral,extra'})
    ds = read_file(data, LABELS)  # counted, not a stop: its quote was closed
    assert len(ds.examples) == 29 and ds.malformed == [f"{data}:5: expected 2 fields, got 3"]


def test_exported_splits_are_replaced_together_or_not_at_all(tmp_path, monkeypatch, capsys):
    """A write that fails on the last split (a full disk) leaves every earlier split as it was."""
    import os

    import finsent.core.fsio as fsio

    data = rows_csv(tmp_path / "d.csv")
    out = tmp_path / "o"
    assert main(["data", "--data", str(data), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    real = fsio.os.replace

    def full_on_test(src, dst, *a, **k):
        if str(dst).endswith("test.csv"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(fsio.os, "replace", full_on_test)
    err = one_line_error(
        capsys, ["data", "--data", str(rows_csv(tmp_path / "e.csv", n=45)), "--out", str(out)]
    )
    assert "no space left on device" in err
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("command", ["data", "evaluate", "bench"])
def test_an_out_that_holds_a_model_an_empty_out_and_an_unwritable_out_are_refused_first(
    command, tmp_path, capsys, tiny_model_dir
):
    """evaluate/bench/data write finsent_config.yaml (and metrics.json) into --out: a model folder's own
    files. Refused before any work, as are '' (the working folder) and a place no file can be made."""
    data = rows_csv(tmp_path / "d.csv")
    args = {
        "data": ["data", "--data", str(data)],
        "evaluate": ["evaluate", "--model", str(tiny_model_dir), "--data", str(data)],
        "bench": ["bench", "--model", str(tiny_model_dir), "--sets", "semeval-headlines"],
    }[command]
    before = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    err = one_line_error(capsys, [*args, "--out", str(tiny_model_dir)])
    assert f"--out {tiny_model_dir}: holds a model (config.json)" in err
    assert {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()} == before
    if command != "data":  # (data without --out only prints its split)
        assert one_line_error(capsys, [*args, "--out", ""]).endswith("--out is empty: name a folder")
    err = one_line_error(capsys, [*args, "--out", "/proc/finsent-test/x"])
    assert (
        "cannot write /proc/finsent-test/x: No such file or directory (in /proc); choose another --out" in err
    )


def test_a_misspelt_phrasebank_name_is_no_phrasebank(capsys):
    """Any name starting with 'fpb' read the PhraseBank's 50% file; only fpb and fpb:SUBSET do now."""
    err = one_line_error(capsys, ["data", "--data", "fpb-notebok"])
    assert "fpb-notebok: no such file, nor a corpus name" in err
    from finsent.data.phrasebank import is_phrasebank

    assert is_phrasebank("fpb:75agree", "x") and not is_phrasebank("fpb_mine.csv", "fpb_mine.csv")


def test_a_saved_config_names_its_local_files_absolutely(tmp_path, monkeypatch):
    """A relative --data in a saved config named another file (or none) when read from another working
    folder: bench's overlap check then scored the model's own training texts with only a note."""
    from finsent.core.config import load_saved_config, save_config
    from finsent.core.options import Config

    monkeypatch.chdir(tmp_path)
    rows_csv(tmp_path / "d.csv")
    (tmp_path / "m").mkdir()
    cfg = Config()
    cfg.data.data, cfg.data.test_data, cfg.model.model = "d.csv", "", "m"
    cfg.data.sources = ["d.csv cap=5", "sentfin", "fpb:50agree"]
    save_config(cfg, tmp_path / "out")
    monkeypatch.chdir("/")
    saved = load_saved_config(tmp_path / "out")
    assert saved.data.data == str(tmp_path / "d.csv") and saved.model.model == str(tmp_path / "m")
    assert saved.data.sources == [f"{tmp_path / 'd.csv'} cap=5", "sentfin", "fpb:50agree"]
    assert cfg.data.data == "d.csv"  # the caller's config is not changed
    cfg.data.data = "missing/x.csv"  # not there: kept as given
    save_config(cfg, tmp_path / "out")
    assert load_saved_config(tmp_path / "out").data.data == "missing/x.csv"


def test_leak_normalisation_ignores_underscores():
    """all-data.csv writes one PhraseBank sentence's '-' as '-_': the same sentence once normalised."""
    from finsent.data.mixture import normalised

    assert normalised("DMASIA-16 ASMobile -_ 2006") == normalised("DMASIA-16 ASMobile - 2006")
    assert normalised("Diageo_Shares_Surge") == "diageo shares surge"


def test_one_bad_byte_in_a_utf8_file_is_pointed_at(tmp_path, capsys):
    """A UTF-8 file with one stray byte is read as Latin-1 whole, garbling every 'é' and '€' silently:
    a note names the byte's line. A Latin-1 file (the PhraseBank's encoding) gets no note."""
    from finsent.data.readers import iter_records

    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes("text\nSociété Générale rose € 5\n".encode() + b"bad \xff byte\n")
    assert [r["text"] for _, r, _ in iter_records(mixed)][0].startswith("SociÃ©tÃ©")
    assert f"note: {mixed}: not UTF-8 (line 3: byte 0xff), so read as Latin-1" in capsys.readouterr().err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\nSociété Générale rose\n".encode("latin-1"))
    assert [r["text"] for _, r, _ in iter_records(latin)] == ["Société Générale rose"]
    assert "not UTF-8" not in capsys.readouterr().err
