"""bf16 scoring with a float32 recheck of near-ties (model.guard): the twin holds the same weights, the
fast copy keeps a float32 head, exactly the texts whose bf16 gap is under the guard are rescored, and a
rescored text carries the float32 model's label and probabilities. bf16 is asked for by name, so these
run on every CPU (a tiny model is quick in bf16 even without bf16 matmul units)."""

import math

import pytest
import torch

from finsent.core.options import Config

TEXTS = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .",
    "The company reported a net loss for the quarter .",
    "Shares were unchanged at the close .",
    "Sales fell 5 % in the third quarter , the firm said .",
    "The board proposes a dividend of EUR 0.50 a share .",
    "Orders grew sharply , beating analysts ' forecasts .",
    "The plant will be closed and 120 jobs cut .",
    "The annual general meeting is held on 5 March .",
] * 3


def _cfg(model_dir, guard: float) -> Config:
    cfg = Config()
    cfg.model.model, cfg.model.dtype, cfg.model.guard = str(model_dir), "bfloat16", guard
    return cfg


def _gaps(probs) -> list[float]:
    out = []
    for row in probs:
        top = sorted((math.log(p) for p in row), reverse=True)
        out.append(top[0] - top[1])
    return out


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    from finsent.core.prompts import PromptCodec
    from finsent.modeling.load import load_scorer

    cfg = _cfg(tiny_model_dir, 0.5)
    fast, tok, _, recheck = load_scorer(cfg.model)
    return fast, recheck, PromptCodec.from_config(cfg, tok)


def test_the_twin_is_float32_and_the_fast_copy_bf16_with_its_head(scorer):
    fast, recheck, _ = scorer
    exact = recheck.model
    assert recheck.margin == 0.5
    assert {p.dtype for p in exact.parameters()} == {torch.float32}
    head = fast.get_output_embeddings()
    assert head is exact.get_output_embeddings() and head.weight.dtype == torch.float32
    body = [p for n, p in fast.named_parameters() if "lm_head" not in n]
    assert body and {p.dtype for p in body} == {torch.bfloat16}
    # the same weights, rounded: the copy was made from the twin
    w32 = exact.get_input_embeddings().weight
    assert torch.equal(fast.get_input_embeddings().weight, w32.to(torch.bfloat16))


def test_exactly_the_near_ties_are_rescored_and_take_float32s_scores(scorer):
    from finsent.modeling.scoring import Recheck, classify

    fast, recheck, codec = scorer
    labels16, probs16 = classify(fast, codec, TEXTS)
    labels32, probs32 = classify(recheck.model, codec, TEXTS)
    gaps = _gaps(probs16)
    margin = sorted(gaps)[len(gaps) // 2]  # half the texts under it, whatever the random weights give
    check = Recheck(recheck.model, margin)
    labels, probs = classify(fast, codec, TEXTS, recheck=check)
    near = [g < margin for g in gaps]
    assert 0 < sum(near) < len(TEXTS) and check.rescored == sum(near)
    for i, is_near in enumerate(near):
        if is_near:  # float32's scores (batched with other texts: equal to rounding)
            assert labels[i] == labels32[i] and probs[i] == pytest.approx(probs32[i], abs=1e-5)
        else:  # untouched: the bf16 pass's own scores
            assert labels[i] == labels16[i] and probs[i] == probs16[i]
    assert probs16 != probs32  # bf16 and float32 really differ here, so the checks above mean something


def test_a_guard_over_every_gap_gives_float32s_labels_and_0_loads_no_twin(tiny_model_dir, scorer):
    from finsent.modeling.load import load_scorer
    from finsent.modeling.scoring import Recheck, classify

    fast, recheck, codec = scorer
    check = Recheck(recheck.model, 1e9)
    assert classify(fast, codec, TEXTS, recheck=check)[0] == classify(recheck.model, codec, TEXTS)[0]
    assert check.rescored == len(TEXTS)
    model, _, _, none = load_scorer(_cfg(tiny_model_dir, 0.0).model)
    assert none is None and model.dtype == torch.bfloat16


def test_the_api_and_evaluate_report_the_guard(tiny_model_dir, tmp_path, all_data):
    from finsent.data.dataset import Example
    from finsent.evaluation.evaluate import evaluate
    from finsent.serving.api import Classifier

    clf = Classifier.load(str(tiny_model_dir), dtype="bfloat16", model__guard=0.25)
    assert clf.recheck is not None and clf.recheck.margin == 0.25
    assert clf.describe()["dtype"] == "bfloat16 (near-ties within 0.25 nats in float32)"
    clf(TEXTS[:4])
    cfg = _cfg(tiny_model_dir, 0.25)
    exs = [
        Example(i, t, lab)
        for i, (t, lab) in enumerate(zip(TEXTS[:6], ["positive", "negative", "neutral"] * 2))
    ]
    ev = evaluate(cfg, exs, tmp_path / "ev")
    assert ev.metrics["dtype"] == "bfloat16 (near-ties within 0.25 nats in float32)"
    assert 0 <= ev.metrics["rescored_in_float32"] <= 6
