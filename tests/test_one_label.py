"""One label per sentence on every path: `evaluate` (as `finsent run` scores), `finsent predict`, the
HTTP server, the Python API and an independent reference (one plain float32 forward pass per sentence
and label, the whole prompt: no shared prefix, no batching) agree on every sentence, with the dtype
`auto` picks on this CPU and with bf16 asked for by name (scored in bf16, its near-ties rescored by a
float32 twin: model.guard); and a tie goes to the label listed first on every path."""

import csv

import httpx
import pytest
import torch
from conftest import serving

from finsent.core.labels import best_label

N = 48  # the notebooks' test sentences scored on every path


@pytest.fixture(scope="module")
def sentences(all_data):
    from finsent.core.config import build_config
    from finsent.data.splits import make_splits

    cfg = build_config(overrides={"data.data": str(all_data), "data.split": "notebook"})
    test = make_splits(cfg.data)[1]["test"]
    return test[:: len(test) // N][:N]


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_every_path_gives_the_same_label(tiny_model_dir, sentences, tmp_path, dtype):
    from finsent.cli import main
    from finsent.core.options import Config
    from finsent.core.prompts import PromptCodec
    from finsent.evaluation.evaluate import evaluate
    from finsent.modeling.device import cpu_has_bf16
    from finsent.modeling.load import load_model
    from finsent.modeling.scoring import score_plain
    from finsent.serving.api import Classifier

    texts = [e.text for e in sentences]
    cfg = Config()
    cfg.model.model, cfg.model.dtype = str(tiny_model_dir), dtype  # auto: as every command runs by default
    ev = evaluate(cfg, sentences, tmp_path / "evaluate")
    paths = {"evaluate": ev.predictions}

    (tmp_path / "in.csv").write_text(
        "text\n" + "".join('"' + t.replace('"', '""') + '"\n' for t in texts), encoding="utf-8"
    )
    assert main(["predict", "--model", str(tiny_model_dir), "--input", str(tmp_path / "in.csv"),
                 "--out", str(tmp_path / "p.csv"), "--dtype", dtype]) == 0  # fmt: skip
    with open(tmp_path / "p.csv", encoding="utf-8") as fh:
        paths["predict"] = [row["predicted"] for row in csv.DictReader(fh)]

    clf = Classifier.load(str(tiny_model_dir), dtype=dtype)
    paths["api"] = [r["label"] for r in clf(texts)]
    with serving(clf) as url:
        served = []
        for i in range(0, len(texts), 8):
            r = httpx.post(f"{url}/v1/classify", json={"texts": texts[i : i + 8]}, timeout=60)
            served += [x["label"] for x in r.json()["predictions"]]
        paths["serve"] = served

    model, tok, _ = load_model(cfg.model, dtype=torch.float32)
    codec = PromptCodec.from_config(cfg, tok)
    reference = score_plain(model, codec, texts)  # float32, whole prompt + answer, one at a time
    paths["plain float32"] = [best_label(row.tolist(), codec.labels) for row in reference]

    bf16 = dtype == "bfloat16" or cpu_has_bf16()
    assert ev.metrics["dtype"] == ("bfloat16 (near-ties within 0.5 nats in float32)" if bf16 else "float32")
    assert clf.describe()["dtype"] == ev.metrics["dtype"]
    if bf16:  # most labels here come from the bf16 pass itself, a few (the near-ties) from float32
        assert 0 < ev.metrics["rescored_in_float32"] < N / 2
    first = paths["plain float32"]
    diverging = {name: sum(a != b for a, b in zip(labels, first)) for name, labels in paths.items()}
    assert all(len(labels) == N for labels in paths.values())
    assert diverging == dict.fromkeys(paths, 0), diverging


def test_ties_go_to_the_first_label_on_every_path():
    from finsent.modeling.calibration import Calibration, adjust

    labels = ["positive", "neutral", "negative"]
    assert best_label([0.25, 0.375, 0.375], labels) == "neutral"
    probs, preds, _ = adjust([[0.4, 0.4, 0.2]], labels, Calibration(temperature=2.0), None)
    assert preds == ["positive"] and probs[0][0] == probs[0][1]


def test_whitespace_around_a_text_is_scored_as_every_reader_scores_it(clf):
    """train, evaluate and predict read each text stripped; the API and the server scored 'text  ' with
    its spaces (7 of the demo's 48 nearest-tie test sentences changed label with two trailing spaces)."""
    texts = ["Operating profit rose to EUR 13.1 mn .", "Net sales fell sharply ."]
    padded = [f"  {texts[0]}  ", f"\t{texts[1]} \n"]
    assert clf(padded) == clf(texts)
    with serving(clf) as url:
        got = httpx.post(f"{url}/v1/classify", json={"texts": padded}, timeout=60).json()["predictions"]
    assert got == clf(texts)
    # the server's token limits count the text it scores: trailing spaces are no tokens
    with serving(clf) as url:
        r = httpx.post(f"{url}/v1/classify", json={"texts": [texts[1] + " " * 1500]}, timeout=60)
    assert r.status_code == 200 and r.json()["predictions"] == clf([texts[1]])
