"""The evaluator on a tiny random Llama: multi-token answers, batch-size and padding invariance."""

import torch

from finsent.core.prompts import PromptCodec, build_template
from finsent.modeling.scoring import classify, score_plain, score_prompts

TEXTS = [
    "Operating profit rose to EUR 13.1 mn .",
    "The company said it would cut 120 jobs after net sales fell sharply in the third quarter of the year .",
    "Contract value EUR 11 million .",
    "Net sales fell .",
    "The company said the contract value amounts to about EUR 11 million , operating profit rose .",
] * 4


def codec_for(tokenizer, labels=("positive", "neutral", "negative"), words=None):
    words = list(words or labels)
    return PromptCodec(tokenizer, build_template("notebook", words), list(labels), words)


def test_labels_are_multi_token_here(tiny):
    _, tok = tiny
    codec = codec_for(tok)
    assert all(len(ids) > 1 for ids in codec.label_ids), codec.label_ids


def test_full_answer_likelihood_matches_plain_forward(tiny):
    model, tok = tiny
    codec = codec_for(tok)
    texts = TEXTS[:5]
    fast = score_prompts(model, codec, [codec.split(t) for t in texts])
    no_prefix = score_prompts(model, codec, [codec.split(t) for t in texts], share_prefix=False)
    plain = score_plain(model, codec, texts)
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(no_prefix, plain, atol=1e-4, rtol=1e-4)


def test_mixed_single_and_multi_token_answers(tiny):
    model, tok = tiny
    # answers of different token counts in one label set
    codec = codec_for(tok, ("up", "down", "flat"), ("profit", "the company said", "x"))
    assert sorted(len(ids) for ids in codec.label_ids) != [len(codec.label_ids[0])] * 3
    prompts = [codec.split(t) for t in TEXTS[:3]]
    torch.testing.assert_close(
        score_prompts(model, codec, prompts), score_plain(model, codec, TEXTS[:3]), atol=1e-4, rtol=1e-4
    )


def test_batch_size_and_padding_do_not_change_results(tiny):
    """Alone (no padding) or in batches with longer neighbours (right padding up to theirs): the same.
    The scorer lays out and pads its rows itself; the tokenizer's padding side is never used."""
    model, tok = tiny
    codec = codec_for(tok)
    p1, pr1 = classify(model, codec, TEXTS, batch_size=1)
    p16, pr16 = classify(model, codec, TEXTS, batch_size=16)
    assert p1 == p16
    torch.testing.assert_close(torch.tensor(pr1), torch.tensor(pr16), atol=1e-5, rtol=1e-5)


def test_probabilities_are_the_plain_answer_likelihoods_normalised(tiny):
    model, tok = tiny
    codec = codec_for(tok)
    preds, probs = classify(model, codec, TEXTS[:5], batch_size=7)
    expected = torch.softmax(score_plain(model, codec, TEXTS[:5]), dim=-1)
    torch.testing.assert_close(torch.tensor(probs), expected, atol=1e-5, rtol=1e-5)
    assert preds == [codec.labels[i] for i in expected.argmax(-1).tolist()]


def test_generate_method_counts_unparsed(tiny):
    model, tok = tiny
    preds, probs = classify(model, codec_for(tok), TEXTS[:5], method="generate")
    # a random model's next token is no label word: every answer is unparsed, never folded into a class
    assert preds == ["unparsed"] * 5
    assert all(sum(r) == 0 for r in probs)


def test_classifier_computes_the_prefix_once_per_loaded_model(clf, monkeypatch):
    """The server's micro-batches reuse one prefix computation; results are those of a fresh one."""
    import finsent.modeling.scoring as scoring

    fresh = scoring.classify(clf.model, clf.codec, TEXTS[:4])
    clf.prefix_kv = None
    calls = []
    original = scoring.prefix_states
    monkeypatch.setattr(scoring, "prefix_states", lambda *a: calls.append(1) or original(*a))
    first = clf.predict(TEXTS[:4])
    second = clf.predict(TEXTS[:4])
    assert len(calls) == 1
    assert [r["label"] for r in first] == [r["label"] for r in second] == fresh[0]
    torch.testing.assert_close(
        torch.tensor([list(r["probabilities"].values()) for r in second]), torch.tensor(fresh[1])
    )
