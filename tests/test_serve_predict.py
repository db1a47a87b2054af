"""The Python API, `finsent predict` and a real HTTP server on a free loopback port (tiny model)."""

import asyncio
import json

import httpx
import pytest

from finsent.cli import main


def test_api_returns_labels_and_probabilities(clf):
    out = clf(["Operating profit rose .", "Net sales fell ."])
    assert len(out) == 2
    for r in out:
        assert r["label"] in clf.labels
        assert set(r["probabilities"]) == set(clf.labels)
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_file_keeps_ids_and_reports_bad_rows(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"a{i}", "sentence": f"Profit rose {i} %"}) for i in range(300)]
    lines.insert(5, "{broken")
    lines.insert(9, json.dumps({"id": "empty", "sentence": "  "}))
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    code = main(
        [
            "predict",
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "float32",
            "--input",
            str(src),
            "--text-column",
            "sentence",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "in.jsonl:6: invalid JSON" in err and "in.jsonl:10: empty text" in err
    assert "300 predicted, 2 bad rows skipped" in err
    import csv

    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 300 and rows[0]["id"] == "a0" and rows[-1]["id"] == "a299"
    assert {"text", "predicted", "p_positive", "p_neutral", "p_negative"} <= set(rows[0])


def test_predict_strict_stops_and_leaves_no_partial_output(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("Profit rose\n\nSales fell\n")
    out = tmp_path / "out.jsonl"
    code = main(
        ["predict", "--model", str(tiny_model_dir), "--input", str(src), "--out", str(out), "--strict"]
    )
    assert code == 2 and not out.exists()
    assert "in.txt:2: empty text (--strict)" in capsys.readouterr().err


def test_predict_texts_to_jsonl(tiny_model_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    assert (
        main(["predict", "--model", str(tiny_model_dir), "Profit rose", "Sales fell", "--out", str(out)]) == 0
    )
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in recs] == ["Profit rose", "Sales fell"]
    assert set(recs[0]["probabilities"]) == {"positive", "neutral", "negative"}


def test_classify_model_health(server, clf):
    r = httpx.post(f"{server}/v1/classify", json={"texts": ["Profit rose .", "Sales fell ."]})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == [p["label"] for p in clf(["Profit rose .", "Sales fell ."])]
    m = httpx.get(f"{server}/v1/model").json()
    assert m["labels"] == ["positive", "neutral", "negative"] and "{text}" in m["template"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert "openapi" in httpx.get(f"{server}/openapi.json").json()
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "/v1/classify" in page.text


@pytest.mark.parametrize(
    ("body", "status", "kind", "field", "message"),
    [
        ('{"texts": ["a"', 400, "bad_request", "body", "malformed JSON"),
        (b'{"texts": ["\xff"]}', 400, "bad_request", "body", "malformed JSON"),  # not UTF-8
        ('{"texts": "not a list"}', 422, "invalid", "texts", "texts"),
        ('{"nope": []}', 422, "invalid", "texts", "texts"),
        ('{"texts": []}', 422, "invalid", "texts", "at least one"),
        (json.dumps({"texts": ["x"] * 9}), 413, "too_large", "texts", "limit of 8"),
        (json.dumps({"texts": ["ok", "x" * 201]}), 422, "invalid", "texts.1", "limit of 200"),
        (json.dumps({"texts": ["ok", "  "]}), 422, "invalid", "texts.1", "empty text"),
        (json.dumps({"texts": ["y" * 150] * 30}), 413, "too_large", "body", "exceeds the limit of 4000"),
    ],
)
def test_limits_and_bad_requests(server, body, status, kind, field, message):
    r = httpx.post(f"{server}/v1/classify", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json() == {
        "error": {"code": status, "type": kind, "message": r.json()["error"]["message"], "field": field}
    }
    assert message in r.json()["error"]["message"]


def test_concurrent_requests_are_micro_batched(server):
    before = httpx.get(f"{server}/health").json()["batches"]

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            rs = await asyncio.gather(
                *(
                    client.post(f"{server}/v1/classify", json={"texts": [f"Profit rose {i} ."]})
                    for i in range(32)
                )
            )
        return rs

    rs = asyncio.run(burst())
    assert all(r.status_code == 200 for r in rs)
    assert all(len(r.json()["predictions"]) == 1 for r in rs)
    batches = httpx.get(f"{server}/health").json()["batches"] - before
    assert batches < 32, f"{batches} forward passes for 32 concurrent requests"


def test_predict_reads_files_like_the_data_layer(tiny_model_dir, tmp_path, capsys):
    """Latin-1 keeps its accents, Parquet is a table (a null text is a bad row), and an unknown suffix
    is an error, not plain text."""
    import pandas as pd

    latin = tmp_path / "news.csv"
    latin.write_bytes("id,text\n7,Café chain's profit rose .\n".encode("latin-1"))
    out = tmp_path / "out.jsonl"
    base = ["predict", "--model", str(tiny_model_dir), "--dtype", "float32"]
    assert main(base + ["--input", str(latin), "--out", str(out)]) == 0
    row = json.loads(out.read_text(encoding="utf-8"))
    assert row["text"] == "Café chain's profit rose ." and row["id"] == "7"

    table = tmp_path / "news.parquet"
    pd.DataFrame({"id": [1, 2, 3], "text": ["Profit rose .", None, "Sales fell ."]}).to_parquet(table)
    assert main(base + ["--input", str(table), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 3]
    assert "news.parquet: row 1: empty text" in capsys.readouterr().err

    odd = tmp_path / "news.xlsx"
    odd.write_bytes(b"PK\x03\x04 not text")
    assert main(base + ["--input", str(odd)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("news.xlsx: unsupported file type '.xlsx' (use .txt, .csv, .tsv, .jsonl or .parquet)")
