import json

import pandas as pd
import pytest

from finsent.data import LabelMapper, make_splits, read_file, resolve_data, split_notebook
from finsent.errors import FinsentError

LABELS = ["positive", "neutral", "negative"]


def test_seed_split_selects_the_notebooks_rows(all_data):
    """The notebooks' own code, run on the same file, picks exactly the same rows."""
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(all_data, names=["sentiment", "text"], encoding="utf-8", encoding_errors="replace")
    x_train, x_test = [], []
    for sentiment in ["positive", "neutral", "negative"]:
        train, test = train_test_split(
            df[df.sentiment == sentiment], train_size=300, test_size=300, random_state=42
        )
        x_train.append(train)
        x_test.append(test)
    x_train = pd.concat(x_train).sample(frac=1, random_state=10)
    x_test = pd.concat(x_test)
    eval_idx = [i for i in df.index if i not in list(x_train.index) + list(x_test.index)]
    x_eval = df[df.index.isin(eval_idx)]
    x_eval = pd.concat(
        [
            x_eval[x_eval.sentiment == s].sample(n=50, random_state=10, replace=True)
            for s in sorted(set(x_eval.sentiment))
        ]
    )

    ds = read_file(all_data, LABELS)
    ours = split_notebook(ds.examples, LABELS)
    assert [e.source_row for e in ours["train"]] == list(x_train.index)
    assert [e.source_row for e in ours["test"]] == list(x_test.index)
    assert [e.source_row for e in ours["eval"]] == list(x_eval.index)
    assert [e.label for e in ours["test"]] == list(x_test.sentiment)
    assert len(ours["train"]) == len(ours["test"]) == 900 and len(ours["eval"]) == 150
    assert not {e.source_row for e in ours["train"]} & {e.source_row for e in ours["test"]}


def test_phrasebank_flaws_are_reported(fpb_dir):
    ds = read_file(fpb_dir / "Sentences_AllAgree.txt", LABELS)
    assert len(ds.examples) == 2263
    assert ds.malformed == [f"{fpb_dir / 'Sentences_AllAgree.txt'}:38: no '@label' in '1'"]
    full = read_file(fpb_dir / "Sentences_50Agree.txt", LABELS)
    assert len(full.examples) == 4846
    assert full.conflicts == 2 and full.duplicates == 6
    deduped = read_file(fpb_dir / "Sentences_50Agree.txt", LABELS, dedupe=True)
    assert len(deduped.examples) == 4846 - 6 - 4  # extra copies, and both rows of each conflict
    assert len({e.text for e in deduped.examples}) == len(deduped.examples)


def test_source_row_points_into_the_file(fpb_dir):
    path = fpb_dir / "Sentences_AllAgree.txt"
    lines = path.read_bytes().decode("latin-1").splitlines()
    ds = read_file(path, LABELS)
    for ex in ds.examples[35:40]:
        assert lines[ex.source_row].startswith(ex.text)


def test_fpb_spec_uses_data_dir(monkeypatch, fpb_dir):
    monkeypatch.setenv("FINSENT_DATA_DIR", str(fpb_dir.parent))
    assert resolve_data("fpb:allagree") == fpb_dir / "Sentences_AllAgree.txt"
    assert resolve_data("fpb").name == "Sentences_50Agree.txt"
    with pytest.raises(FinsentError, match="unknown subset"):
        resolve_data("fpb:90agree")


def test_fpb_spec_offline_error_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("FINSENT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FinsentError, match="set FINSENT_DATA_DIR"):
        resolve_data("fpb:66agree")


def test_user_formats_and_label_map(tmp_path):
    rows = [("Profit up", "1"), ("Loss widened", "0"), ("Meeting held", "2")]
    csv_path = tmp_path / "d.csv"
    pd.DataFrame({"id": [7, 8, 9], "sentence": [r[0] for r in rows], "y": [r[1] for r in rows]}).to_csv(
        csv_path, index=False
    )
    tsv_path = tmp_path / "d.tsv"
    tsv_path.write_text("sentence\ty\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    jsonl_path = tmp_path / "d.jsonl"
    jsonl_path.write_text("".join(json.dumps({"sentence": t, "y": y}) + "\n" for t, y in rows))
    pq_path = tmp_path / "d.parquet"
    pd.DataFrame({"sentence": [r[0] for r in rows], "y": [r[1] for r in rows]}).to_parquet(pq_path)
    for path in (csv_path, tsv_path, jsonl_path, pq_path):
        ds = read_file(path, LABELS, "0=negative,1=positive,2=neutral", "sentence", "y")
        assert [(e.text, e.label) for e in ds.examples] == [
            ("Profit up", "positive"),
            ("Loss widened", "negative"),
            ("Meeting held", "neutral"),
        ], path
        assert [e.source_row for e in ds.examples] == [0, 1, 2]


def test_labels_are_normalised_and_renamed():
    m = LabelMapper(LABELS, "Bullish=positive, bearish = negative")
    assert m("  POSITIVE ") == "positive"
    assert m("bullish") == "positive"
    assert m("BEARISH") == "negative"
    assert m("mixed") is None


def test_stratified_split_keeps_proportions(all_data):
    from finsent.config import DataConfig

    dc = DataConfig(data=str(all_data), split="stratified", test_size=0.2, eval_size=0.1)
    _, splits = make_splits(dc)
    assert abs(len(splits["test"]) - 0.2 * 4846) <= 2
    share = sum(e.label == "neutral" for e in splits["test"]) / len(splits["test"])
    assert abs(share - 2879 / 4846) < 0.01


def test_explicit_test_file(all_data, fpb_dir):
    from finsent.config import DataConfig

    dc = DataConfig(data=str(all_data), split="file", test_data=str(fpb_dir / "Sentences_AllAgree.txt"))
    _, splits = make_splits(dc)
    assert len(splits["test"]) == 2263
    assert len(splits["train"]) + len(splits["eval"]) == 4846
