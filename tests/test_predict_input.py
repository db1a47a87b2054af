"""What `finsent predict` reads: one line rule for stdin and files, and texts too long for the model.

Both found by piping all-data.csv (lines ended by a lone \\r) into `finsent predict`: stdin saw one
172k-token text, and the scorer asked for a 29.6 GB attention mask instead of reporting a bad row."""

import csv
import io
import os
import subprocess
import sys

import pytest

from finsent.cli import main
from finsent.core.errors import FinsentError
from finsent.modeling.scoring import length_batches

# a lone \r ends a line (all-data.csv), \r\n and \n too; \x85 (Latin-1's reading of cp1252's '...') and a
# form feed do not; the third line is Latin-1, the others UTF-8
LINES = b"Profit rose .\rSales fell .\r\nCaf\xe9 opened \x85 more\nA\x0cB costs rose\rlast line"


def _finsent(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "finsent", *args], input=stdin, capture_output=True, env=env, timeout=300
    )


def test_stdin_and_a_txt_file_split_lines_alike(tiny_model_dir, tmp_path):
    # the reference: Python's universal newlines (\n, \r\n, \r), not finsent's reader
    expected = [ln.strip() for ln in io.TextIOWrapper(io.BytesIO(LINES), encoding="latin-1", newline=None)]
    assert len(expected) == 5
    src = tmp_path / "in.txt"
    src.write_bytes(LINES)
    base = ["predict", "--model", str(tiny_model_dir), "--dtype", "float32", "--out"]
    piped = _finsent(base + [str(tmp_path / "piped.csv")], stdin=LINES)
    assert piped.returncode == 0, piped.stderr.decode()
    filed = _finsent(base + [str(tmp_path / "filed.csv"), "--input", str(src)])
    assert filed.returncode == 0, filed.stderr.decode()
    assert (tmp_path / "piped.csv").read_bytes() == (tmp_path / "filed.csv").read_bytes()
    rows = list(csv.DictReader((tmp_path / "piped.csv").open(encoding="utf-8")))
    assert [r["text"] for r in rows] == expected


def test_binary_stdin_is_one_line_error(tiny_model_dir):
    r = _finsent(["predict", "--model", str(tiny_model_dir)], stdin="Profit rose .\n".encode("utf-16"))
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "Traceback" not in err  # (the lines before it are the model's loading messages)
    assert err.strip().splitlines()[-1].startswith("finsent predict: error: stdin:1: unreadable encoding")


def test_a_text_over_the_context_is_a_bad_row(tiny_model_dir, clf, tmp_path, capsys):
    context = clf.model.config.max_position_embeddings
    huge = ("Profit rose . " * context).strip()  # several tokens a repeat: far over the context
    n = len(clf.codec.prompt_ids(huge))
    src = tmp_path / "in.txt"
    src.write_text(f"Profit rose .\n{huge}\nSales fell .\n")
    out = tmp_path / "out.csv"
    base = ["predict", "--model", str(tiny_model_dir), "--dtype", "float32", "--input", str(src)]
    assert main(base + ["--out", str(out)]) == 0
    err = capsys.readouterr().err
    longest = max(len(ids) for ids in clf.codec.label_ids)
    assert (
        f"skipped {src}:2: its prompt is {n} tokens, over the model's context of {context} tokens less "
        f"the longest answer ({longest}): {context - longest}"
    ) in err
    assert "2 predicted, 1 bad rows skipped" in err
    assert [r["text"] for r in csv.DictReader(out.open())] == ["Profit rose .", "Sales fell ."]

    assert main(base + ["--out", str(out), "--strict"]) == 2
    assert f"{src}:2: its prompt is {n} tokens" in capsys.readouterr().err

    # --max-tokens below the context: every row is over it (exit 2: nothing predicted)
    assert main(base + ["--max-tokens", "3"]) == 2
    one = len(clf.codec.prompt_ids("Profit rose ."))
    assert (
        f"{src}:1: its prompt is {one} tokens, over the limit of 3 tokens per text" in capsys.readouterr().err
    )


def test_classifier_refuses_a_prompt_over_the_context(clf):
    """The Python API (and evaluate) meet the same limit in the scorer: one line, naming the text."""
    context = clf.model.config.max_position_embeddings
    with pytest.raises(
        FinsentError, match=rf"^text 1: its prompt is \d+ tokens, over the model's context of {context}"
    ):
        clf(["Profit rose .", "Profit rose . " * context])


def test_length_batches_cap_padded_tokens():
    lengths = [12] * 70 + [6000, 5000, 900, 9000, 20000]
    batches = length_batches(lengths, batch_size=32, max_tokens=16_384)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        padded = len(b) * max(lengths[i] for i in b)
        assert len(b) <= 32 and (len(b) == 1 or padded <= 16_384), (b, padded)
    # by hand: 20000 and 9000 alone (two rows would pass 16,384), 6000 + 5000, then 900 padding 17 short
    # rows (18 x 900 = 16,200), then the other 53 short rows in batches of 32
    assert [len(b) for b in batches] == [1, 1, 2, 18, 32, 21]


def test_a_closed_pipe_ends_quietly(tiny_model_dir, tmp_path):
    """`finsent predict ... | head -1`: exit 141 as a shell tool does, no BrokenPipeError traceback."""
    src = tmp_path / "in.txt"
    src.write_text(
        "".join(
            f"Operating profit rose to EUR {i} mn from EUR {i + 1} mn a year ago .\n" for i in range(1500)
        )
    )
    cmd = [sys.executable, "-m", "finsent", "predict", "--model", str(tiny_model_dir), "--input", str(src)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        assert p.stdout.readline().startswith(b"text,predicted")
        p.stdout.close()  # the reader goes away while ~150 kB of rows are still to come
        err = p.stderr.read().decode()
        assert p.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_predict_takes_the_servers_token_limit():
    from finsent.cli.predict import Args
    from finsent.serving.errors import MAX_TOKENS, Limits

    assert Args().max_tokens == Limits().max_tokens == MAX_TOKENS == 1024


@pytest.mark.slow
def test_long_rows_are_bad_rows_under_the_default_limit(tmp_path, capsys):
    """SmolLM2's context is 8,192 tokens: the server's 1,024-token limit, not the context, stops these rows."""
    rows = [
        "Profit rose .",
        ("Net sales fell by 5 % . " * 250).strip(),
        "Sales fell .",
        ("Costs rose . " * 400),
    ]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    assert main(["predict", "--input", str(src), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped {src}:2: its prompt is" in err and "over the limit of 1024 tokens per text" in err
    assert f"skipped {src}:4: its prompt is" in err and "2 predicted, 2 bad rows skipped" in err
    assert [r["text"] for r in csv.DictReader(out.open())] == ["Profit rose .", "Sales fell ."]


def _predict_jsonl(model, folder, lines: str) -> tuple[int, object, object]:
    """`finsent predict` of a JSONL file holding `lines` into out.csv: (exit status, input, output)."""
    src, out = folder / "in.jsonl", folder / "out.csv"
    src.write_text(lines)
    args = ["predict", "--model", str(model), "--dtype", "float32", "--input", str(src), "--out", str(out)]
    return main(args), src, out


def test_json_values_that_are_not_strings_are_bad_rows(tiny_model_dir, tmp_path, capsys):
    """A JSONL number, list or missing key is a bad row (the server refuses them too), never str(value)."""
    lines = '{"text": 5}\n{"text": ["a"]}\n{"other": "x"}\n{"text": "Profit rose ."}\n'
    code, src, out = _predict_jsonl(tiny_model_dir, tmp_path, lines)
    assert code == 0
    err = capsys.readouterr().err
    assert f"{src}:1: 'text' is not a string (int)" in err
    assert f"{src}:2: 'text' is not a string (list)" in err
    assert f"{src}:3: no 'text' field" in err
    assert [r["text"] for r in csv.DictReader(out.open())] == ["Profit rose ."]


def test_every_row_bad_is_exit_2_and_writes_no_file(tiny_model_dir, tmp_path, capsys):
    code, _, out = _predict_jsonl(tiny_model_dir, tmp_path, '{"text": 5}\n{"text": ""}\n')
    assert code == 2
    assert "every one of the 2 input rows was bad" in capsys.readouterr().err.splitlines()[-1]
    assert not out.exists()


def test_an_output_suffix_predict_cannot_write_is_refused_before_loading(tmp_path, capsys):
    """--out o.parquet used to get CSV text; the model path does not exist, so a refusal that waited for
    the model would name the model instead."""
    args = ["predict", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o.parquet"), "hi"]
    assert main(args) == 2
    assert (
        "--out " + str(tmp_path / "o.parquet") + ": write a .csv or a .jsonl file" in capsys.readouterr().err
    )
    # an input that is missing or of an unknown kind: also told before the model (which does not exist)
    assert (
        main(["predict", "--model", str(tmp_path / "no-model"), "--input", str(tmp_path / "gone.csv")]) == 2
    )
    assert f"{tmp_path / 'gone.csv'}: file not found" in capsys.readouterr().err
    (tmp_path / "in.xlsx").write_text("x")
    assert main(["predict", "--model", str(tmp_path / "no-model"), "--input", str(tmp_path / "in.xlsx")]) == 2
    assert "unsupported file type '.xlsx'" in capsys.readouterr().err
    header_only = tmp_path / "h.csv"
    header_only.write_text("text\n")
    assert main(["predict", "--model", str(tmp_path / "no-model"), "--input", str(header_only)]) == 2


def test_an_id_column_the_input_lacks_is_an_error(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,Profit rose .\n")
    args = ["predict", "--model", str(tiny_model_dir), "--dtype", "float32", "--input", str(src)]
    assert main([*args, "--id-column", "nope"]) == 2
    assert "--id-column nope: the input has no such column (id, text)" in capsys.readouterr().err


def test_strict_to_stdout_prints_nothing_before_its_error(tiny_model_dir, capsys):
    """The CSV header waits for the first row: a --strict run stopped by its first row leaves stdout empty."""
    args = ["predict", "--model", str(tiny_model_dir), "--dtype", "float32", "--strict"]
    assert main([*args, " "]) == 2
    assert capsys.readouterr().out == ""
    assert main([*args, "Profit rose ."]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "text,predicted,p_positive,p_neutral,p_negative"


def _args(model, src, out=None) -> list[str]:
    return ["predict", "--model", str(model), "--dtype", "float32", "--input", str(src)] + (
        ["--out", str(out)] if out else []
    )


def test_a_quote_never_closed_is_reported_even_when_the_field_count_looks_right(
    tiny_model_dir, tmp_path, capsys
):
    """With the text in the last column, the row that swallowed the rest of the file had the right
    number of fields: 5 rows gave 3 predictions and '0 bad rows skipped'."""
    src = tmp_path / "q.csv"
    src.write_text(
        'id,text\n1,Profit rose .\n2,Sales fell .\n3,"Buy rating on Nokia\n4,Sales fell .\n5,Loss .\n'
    )
    assert main(_args(tiny_model_dir, src, tmp_path / "o.csv")) == 0
    err = capsys.readouterr().err
    assert f"{src}:4: the row runs on to line 6, the file's end (a quote opened here never closed?)" in err
    assert "2 predicted, 1 bad rows skipped" in err
    # a quoted field that closes, even across lines at the file's end, is one good row
    src.write_text('id,text\n1,Profit rose .\n2,"Sales\nfell ."\n')
    assert main(_args(tiny_model_dir, src, tmp_path / "o.csv")) == 0
    assert "2 predicted, 0 bad rows skipped" in capsys.readouterr().err


def test_long_fields_and_unicode_line_separators_are_read(tiny_model_dir, tmp_path, capsys):
    """A 200,000-character CSV field was a csv traceback; a JSONL text holding U+2028 or U+0085 (raw, as
    json.dumps(ensure_ascii=False) writes them) was cut in two 'invalid JSON' lines."""
    from finsent.data.readers import iter_records

    src = tmp_path / "long.csv"
    src.write_text("id,text\n1," + "x" * 200_000 + "\n2,Profit rose .\n")
    rows = list(iter_records(src))
    assert [len(r["text"]) for _, r, _ in rows] == [200_000, 13] and not any(e for *_, e in rows)
    src = tmp_path / "sep.jsonl"
    src.write_text('{"id": 1, "text": "Profit\u2028rose ."}\n{"id": 2, "text": "Sales\x85fell ."}\n')
    rows = list(iter_records(src))
    assert [(w, r["id"]) for w, r, _ in rows] == [(f"{src}:1", 1), (f"{src}:2", 2)]
    src.write_bytes(
        b'{"id": 1, "text": "a"}\r{"id": 2, "text": "b"}\r\n{"id": 3, "text": "c"}\r'
    )  # lone CRs end lines
    assert [r["id"] for _, r, _ in iter_records(src)] == [1, 2, 3]


def test_the_output_options_predict_is_given(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """--out - is stdout (it wrote a file named '-'); a folder as --out is refused before the model
    loads; a killed predict's hidden partial file is removed by the next; the id column comes from the
    first good row (a broken first line took it from every row)."""
    monkeypatch.chdir(tmp_path)
    assert (
        main(["predict", "--model", str(tiny_model_dir), "--dtype", "float32", "--out", "-", "Profit rose ."])
        == 0
    )
    assert capsys.readouterr().out.startswith("text,predicted") and not (tmp_path / "-").exists()
    (tmp_path / "folder.csv").mkdir()
    assert main(["predict", "--model", str(tmp_path / "no-model"), "--out", "folder.csv", "hi"]) == 2
    assert "--out folder.csv: is a folder; name a .csv or .jsonl file" in capsys.readouterr().err
    (tmp_path / ".o.csv.abc123.tmp").write_text("1,cut off")  # what a SIGKILL left
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 7, "text": \n{"id": 8, "text": "Profit rose ."}\n')
    assert main(_args(tiny_model_dir, src, tmp_path / "o.csv")) == 0
    assert [r["id"] for r in csv.DictReader((tmp_path / "o.csv").open())] == ["8"]
    assert not (tmp_path / ".o.csv.abc123.tmp").exists()


def test_fewer_labels_with_priors_use_those_labels_training_shares(tiny_model_dir, tmp_path, capsys):
    """--labels positive,negative with --priors on a model whose calibration.json holds three training
    shares: a broadcasting traceback in predict, a 500 for every request in serve."""
    import shutil

    from finsent.modeling.calibration import Calibration

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    Calibration(1.5, [0.5, 0.3, 0.2], ["positive", "neutral", "negative"]).save(model)
    args = ["predict", "--model", str(model), "--dtype", "float32", "--labels", "positive,negative"]
    assert main([*args, "--priors", "0.5,0.5", "Profit rose ."]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "text,predicted,p_positive,p_negative"
    cal = Calibration.load(model).for_labels(["negative", "positive"])
    assert cal.train_priors == pytest.approx([0.2 / 0.7, 0.5 / 0.7]) and cal.temperature == 1.5
    assert Calibration.load(model).for_labels(["bullish", "bearish"]).train_priors == []  # uniform
    assert Calibration.load(model).for_labels(
        ["Positive", "Neutral", "Negative"]
    ).train_priors == pytest.approx([0.5, 0.3, 0.2])  # label names compare as everywhere else


def test_a_json_array_of_records_is_predicted_as_data_reads_it(tiny_model_dir, tmp_path, capsys):
    """`finsent data` read a .json array of records, `finsent predict` called it one bad row."""
    src = tmp_path / "in.json"
    src.write_text(
        '[{"id": 1, "text": "Profit rose ."},\n {"id": 2, "text": 5},\n {"id": 3, "text": "Sales fell ."}]'
    )
    assert main(_args(tiny_model_dir, src, tmp_path / "o.csv")) == 0
    assert [r["id"] for r in csv.DictReader((tmp_path / "o.csv").open())] == ["1", "3"]
    assert f"{src}:2: 'text' is not a string (int)" in capsys.readouterr().err
