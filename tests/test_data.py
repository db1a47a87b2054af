import json

import pandas as pd
import pytest

from finsent.core.errors import FinsentError
from finsent.core.labels import LabelMapper
from finsent.data.phrasebank import resolve_data
from finsent.data.readers import read_file
from finsent.data.splits import make_splits, split_notebook

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
    monkeypatch.setenv("FINSENT_CACHE", str(tmp_path / "cache"))  # offline, an earlier download is used
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
    from finsent.core.options import DataConfig

    dc = DataConfig(data=str(all_data), split="stratified", test_size=0.2, eval_size=0.1)
    _, splits = make_splits(dc)
    assert abs(len(splits["test"]) - 0.2 * 4846) <= 2
    share = sum(e.label == "neutral" for e in splits["test"]) / len(splits["test"])
    assert abs(share - 2879 / 4846) < 0.01


def test_explicit_test_file(all_data, fpb_dir):
    from finsent.core.options import DataConfig

    dc = DataConfig(data=str(all_data), split="file", test_data=str(fpb_dir / "Sentences_AllAgree.txt"))
    _, splits = make_splits(dc)
    assert len(splits["test"]) == 2263
    assert len(splits["train"]) + len(splits["eval"]) == 4846


def test_fpb_from_a_local_mirror_of_the_hub_layout(fpb_dir, tmp_path, monkeypatch):
    """The online path (the hub's parquet conversion, <config>/<split>/*.parquet) run offline against a
    local folder of the same layout, built here from the authors' own file: same sentences, same labels,
    same rows."""
    import pandas as pd

    from finsent.data.phrasebank import HUB_LABELS

    original = read_file(fpb_dir / "Sentences_AllAgree.txt", LABELS)
    folder = tmp_path / "mirror" / "sentences_allagree" / "train"
    folder.mkdir(parents=True)
    rows = [(e.text, HUB_LABELS.index(e.label)) for e in original.examples]
    half = len(rows) // 2  # two shards, as the hub splits large configurations
    for i, part in enumerate((rows[:half], rows[half:])):
        pd.DataFrame(part, columns=["sentence", "label"]).to_parquet(folder / f"{i:04d}.parquet")
    monkeypatch.delenv("FINSENT_DATA_DIR", raising=False)
    monkeypatch.setenv("FINSENT_FPB_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("FINSENT_CACHE", str(tmp_path / "cache"))
    path = resolve_data("fpb:allagree")
    assert path.parent == tmp_path / "cache" / "data"
    fetched = read_file(path, LABELS)
    assert [(e.text, e.label) for e in fetched.examples] == [(e.text, e.label) for e in original.examples]
    assert json.loads(path.with_suffix(".source.json").read_text())["rows"] == len(rows)


def test_fpb_offline_without_data_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("FINSENT_DATA_DIR", raising=False)
    monkeypatch.delenv("FINSENT_FPB_MIRROR", raising=False)
    monkeypatch.delenv("FINSENT_HUB_MIRROR", raising=False)
    monkeypatch.setenv("FINSENT_CACHE", str(tmp_path / "cache"))  # offline, an earlier download is used
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FinsentError) as e:
        resolve_data("fpb")
    msg = str(e.value)
    assert "FINSENT_DATA_DIR" in msg and "offline mode" in msg and "--data PATH" in msg


def test_missing_texts_in_parquet_are_missing_not_nan(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame(
        {"text": ["Profit rose .", None, "Sales fell ."], "label": ["positive", "neutral", "negative"]}
    ).to_parquet(path)
    with pytest.raises(FinsentError, match=r"d.parquet: row 1: empty text"):
        read_file(path, LABELS)
    ds = read_file(path, LABELS, skip_invalid=True)
    assert [e.text for e in ds.examples] == ["Profit rose .", "Sales fell ."] and len(ds.invalid) == 1


def test_utf8_phrasebank_style_file_is_read_as_utf8(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Café chain's profit rose 5 % .@positive\nNo change .@neutral\n", encoding="utf-8")
    assert read_file(path, LABELS).examples[0].text == "Café chain's profit rose 5 % ."


def test_split_file_reports_and_dedupe_removes_test_sentences_in_train(tmp_path):
    from finsent.core.options import DataConfig

    rows = [(f"Sentence {i} rose .", "positive") for i in range(20)] + [
        (f"Sentence {i} fell .", "negative") for i in range(20)
    ]
    train_file, test_file = tmp_path / "train.csv", tmp_path / "test.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(train_file, index=False)
    pd.DataFrame(rows[:3] + rows[-2:], columns=["text", "label"]).to_csv(test_file, index=False)
    dc = DataConfig(
        data=str(train_file), split="file", test_data=str(test_file), labels=["positive", "negative"]
    )
    ds, splits = make_splits(dc)
    assert (
        "leak: 5 sentences of the test file are also in the training data (--dedupe removes them)"
        in ds.flaws()
    )
    dc.dedupe = True
    ds, splits = make_splits(dc)
    test_texts = {e.text for e in splits["test"]}
    assert not test_texts & {e.text for e in splits["train"] + splits["eval"]}
    assert len(splits["train"]) + len(splits["eval"]) == 35


def test_random_split_is_datasets_train_test_split_row_for_row(fpb_dir):
    """The public FPB benchmark (Sentences_50Agree, Dataset.train_test_split(test_size=0.25, seed=42)):
    the same 1,212 test rows as `datasets` itself gives, in the same order."""
    import datasets

    from finsent.core.options import DataConfig

    path = fpb_dir / "Sentences_50Agree.txt"
    ds = read_file(path, LABELS)
    reference = datasets.Dataset.from_dict(
        {"source_row": [e.source_row for e in ds.examples], "text": [e.text for e in ds.examples]}
    ).train_test_split(test_size=0.25, seed=42)
    dc = DataConfig(data=str(path), split="random", test_size=0.25, eval_size=0.0, seed=42)
    _, splits = make_splits(dc, ds)
    assert len(splits["test"]) == 1212
    assert [e.source_row for e in splits["test"]] == reference["test"]["source_row"]
    assert [e.source_row for e in splits["train"]] == reference["train"]["source_row"]
    dc.eval_size = 0.05  # the eval share comes out of the benchmark's train part; test stays the same
    _, with_eval = make_splits(dc, ds)
    assert [e.source_row for e in with_eval["test"]] == reference["test"]["source_row"]
    assert [e.source_row for e in with_eval["train"] + with_eval["eval"]] == reference["train"]["source_row"]


def test_notebook_split_with_nothing_left_for_eval():
    """Every row in train or test (as experiments/ablate.py's folds of the training split): no eval split,
    not a pandas error; train and test still partition the rows."""
    from finsent.data.dataset import Example

    exs = [Example(i, f"sentence {i}", lab) for i, lab in enumerate(["positive", "neutral", "negative"] * 6)]
    s = split_notebook(exs, ["positive", "neutral", "negative"], train_per_label=4, test_per_label=2)
    assert s["eval"] == []
    rows = [e.source_row for e in s["train"] + s["test"]]
    assert sorted(rows) == list(range(18)) and len(s["test"]) == 6


def test_a_thin_notebook_eval_split_is_reported(all_data):
    """all-data.csv has 604 negatives and the notebook split puts 600 in train and test, so its 50 eval
    negatives can only be the 4 left, drawn with replacement; the flaw report says so, naming the label.
    The counts are taken here from the file itself, not from the split code."""
    from finsent.core.config import resolve

    df = pd.read_csv(all_data, names=["sentiment", "text"], encoding="utf-8", encoding_errors="replace")
    spare_negatives = int((df.sentiment == "negative").sum()) - 600
    assert spare_negatives == 4
    dc = resolve(None, {"data.data": str(all_data)}, None).data
    ds, splits = make_splits(dc)
    thin = [f for f in ds.flaws() if f.startswith("eval split:")]
    assert len(thin) == 1, thin
    assert f"50 'negative' rows hold only {spare_negatives} distinct sentence(s)" in thin[0]
    assert len({e.text for e in splits["eval"] if e.label == "negative"}) == spare_negatives
    dc.split = "stratified"  # the same LabelledData split again: no stale line
    assert not [f for f in make_splits(dc, ds)[0].flaws() if f.startswith("eval split:")]


@pytest.mark.parametrize(
    "spare, eval_per_label, thin",
    [(1, 1, False), (1, 2, False), (1, 3, True), (40, 6, False), (5, 0, False), (0, 6, False)],
)
def test_thin_eval_threshold(spare, eval_per_label, thin):
    """Flagged when a label's eval rows hold fewer than half as many distinct sentences. One spare
    sentence drawn 2 times is exactly half (not flagged), 3 times is; 6 draws from 40 are mostly
    distinct; eval_per_label 0 or nothing left makes no eval rows. Only 'negative' is short."""
    from finsent.core.config import resolve
    from finsent.data.dataset import Example, LabelledData

    counts = {"positive": 4 + 40, "neutral": 4 + 40, "negative": 4 + spare}
    exs = [Example(i, f"{lab} sentence {i}", lab) for lab, n in counts.items() for i in range(n)]
    overrides = {"data.split": "notebook", "data.train_per_label": "2", "data.test_per_label": "2"}
    dc = resolve(None, overrides | {"data.eval_per_label": str(eval_per_label)}, None).data
    ds = make_splits(dc, LabelledData("toy.csv", exs))[0]
    assert list(ds.thin_eval) == (["negative"] if thin else [])


def test_auto_split_is_the_notebooks_only_where_their_data_fills_it():
    """PhraseBank data gets the notebooks' split when every label has train + test rows for it; a
    smaller subset (Sentences_AllAgree.txt has 570 positives for 600) and any other file: stratified."""
    from finsent.core.options import DataConfig
    from finsent.data.dataset import Example, LabelledData

    def split_of(name: str, per_label: int) -> str:
        exs = [
            Example(i, f"{lab} {i}", lab)
            for lab in ("positive", "neutral", "negative")
            for i in range(per_label)
        ]
        dc = DataConfig(
            data=name, train_per_label=4, test_per_label=4, eval_per_label=1, test_size=0.2, eval_size=0.2
        )
        return make_splits(dc, LabelledData(name, exs))[0].split

    assert split_of("Sentences_AllAgree.txt", 10) == "notebook"
    assert split_of("Sentences_AllAgree.txt", 7) == "stratified"  # 7 < 4 + 4
    assert split_of("all-data.csv", 10) == "notebook"
    assert split_of("tweets.csv", 40) == "stratified"
