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
    gaps = sorted(set(_gaps(probs16)))
    # midway between two neighbouring gaps near the median: no text sits on the margin itself
    margin = (gaps[len(gaps) // 2 - 1] + gaps[len(gaps) // 2]) / 2
    gaps = _gaps(probs16)
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
    every = Classifier.load(str(tiny_model_dir), dtype="bfloat16", model__guard=1e9)
    exact = Classifier.load(str(tiny_model_dir), dtype="float32")
    assert exact.recheck is None
    assert [r["label"] for r in every(TEXTS)] == [r["label"] for r in exact(TEXTS)]
    assert every.recheck.rescored == len(TEXTS)
    cfg = _cfg(tiny_model_dir, 0.25)
    exs = [
        Example(i, t, lab)
        for i, (t, lab) in enumerate(zip(TEXTS[:6], ["positive", "negative", "neutral"] * 2))
    ]
    ev = evaluate(cfg, exs, tmp_path / "ev")
    assert ev.metrics["dtype"] == "bfloat16 (near-ties within 0.25 nats in float32)"
    assert 0 <= ev.metrics["rescored_in_float32"] <= 6


def test_the_guard_measures_the_gap_after_fixed_priors_and_rescores_nan():
    import math

    from finsent.modeling.calibration import Calibration, prior_offsets
    from finsent.modeling.scoring import Recheck, _near_ties

    scores = torch.tensor([[0.0, -0.3, -5.0], [0.0, -2.0, -5.0], [float("nan"), 0.0, 0.0]])
    assert _near_ties(scores, Recheck(None, 0.5)) == [0, 2]
    # priors that favour the second label by 1.9 nats: row 1 becomes the near-tie, row 0 no longer one
    assert _near_ties(scores, Recheck(None, 0.5, offsets=[0.0, 1.9, 0.0])) == [1, 2]
    labels = ["positive", "neutral", "negative"]
    cal = Calibration(temperature=2.0, train_priors=[0.25, 0.5, 0.25])
    got = prior_offsets(labels, cal, [0.5, 0.25, 0.25])
    assert got == pytest.approx([2 * math.log(2), 2 * math.log(0.5), 0.0])
    assert prior_offsets(labels, cal, "auto") is None and prior_offsets(labels, None, None) is None


def _labels(model, codec, guard=None):
    from finsent.modeling.scoring import Recheck, classify

    return classify(model, codec, TEXTS, recheck=guard and Recheck(guard[0], guard[1]))[0]


def test_tied_embeddings_and_a_lora_adapter(tmp_path, tiny_model_dir):
    """The default model (SmolLM2) ties its head to the embeddings, and a run's adapter is PEFT: the fast
    copy gets the twin's float32 head without untying the twin, and both carry the adapter."""
    from conftest import _build_tokenizer, build_tiny_llama
    from peft import LoraConfig, get_peft_model

    from finsent.core.prompts import PromptCodec
    from finsent.modeling.load import load_scorer
    from finsent.modeling.scoring import classify

    tok = _build_tokenizer()
    tied = build_tiny_llama(tok, seed=3)
    tied.config.tie_word_embeddings = True
    tied.lm_head.weight = tied.model.embed_tokens.weight
    tied.save_pretrained(tmp_path / "tied")
    tok.save_pretrained(tmp_path / "tied")
    fast, tok2, _, recheck = load_scorer(_cfg(tmp_path / "tied", 0.5).model)
    exact = recheck.model
    assert exact.get_output_embeddings().weight is exact.get_input_embeddings().weight  # still tied
    assert fast.get_output_embeddings() is exact.get_output_embeddings()
    assert fast.get_input_embeddings().weight.dtype == torch.bfloat16
    codec = PromptCodec.from_config(_cfg(tmp_path / "tied", 0.5), tok2)
    assert _labels(fast, codec, (exact, 1e9)) == _labels(exact, codec)

    base = build_tiny_llama(tok)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a trained adapter: B is no longer zero
    peft.save_pretrained(tmp_path / "adapter")
    cfg = _cfg(tiny_model_dir, 0.5)
    fast, tok3, _, recheck = load_scorer(cfg.model, str(tmp_path / "adapter"))
    codec = PromptCodec.from_config(cfg, tok3)
    assert fast.get_output_embeddings() is recheck.model.get_output_embeddings()
    assert recheck.model.get_output_embeddings().weight.dtype == torch.float32
    with_adapter = _labels(recheck.model, codec)
    assert _labels(fast, codec, (recheck.model, 1e9)) == with_adapter
    # the adapter is really in the twin: the base alone scores otherwise
    cfg.model.dtype = "float32"
    base32, _, _, none = load_scorer(cfg.model)
    assert none is None
    assert classify(base32, codec, TEXTS)[1] != classify(recheck.model, codec, TEXTS)[1]


def test_a_runs_evaluations_keep_float32s_labels_at_the_least_cost(monkeypatch):
    """finsent run and bench evaluate with float32_labels: on a CPU with the guard on the dtype stays
    (auto, or bf16 by name: both rechecked); the guard off or a GPU give float32; 4-bit stays 4-bit."""
    from finsent.modeling import load

    mc = Config().model
    assert mc.dtype == "auto" and mc.guard > 0
    assert load.float32_labels(mc).dtype == "auto"
    assert mc.dtype == "auto"  # a copy: the run's own options are untouched
    by_name = Config().model
    by_name.dtype = "bfloat16"  # rechecked on a CPU as auto's bf16 is (load_scorer)
    assert load.float32_labels(by_name).dtype == "bfloat16"
    by_name.guard = 0.0  # plain bf16 would not keep float32's labels
    assert load.float32_labels(by_name).dtype == "float32"
    four_bit = Config().model
    four_bit.load_in_4bit = True
    assert load.float32_labels(four_bit).dtype == "auto"
    monkeypatch.setattr(load, "pick_device", lambda device: "cuda")  # auto on a GPU is bf16, unguarded
    assert load.float32_labels(Config().model).dtype == "float32"
