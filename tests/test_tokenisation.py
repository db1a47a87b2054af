"""One tokenisation: finsent trains and scores the tokens of the whole prompt string, as a user, the
notebooks' pipeline, llama.cpp and Ollama send them, even where the sentence's first characters merge
with the instruction's last ones; the shared-prefix scorer agrees with plain forward passes there."""

import pytest
import torch

from finsent.core.prompts import PromptCodec, Template, build_template
from finsent.modeling.scoring import classify, score_plain, score_prompts


def test_every_phrasebank_prompt_is_tokenised_as_one_string(all_data, fpb_dir):
    """All sentences of all-data.csv and of the four PhraseBank files, with SmolLM2's real tokenizer:
    finsent's ids are `tokenizer(prompt)`'s, and the shared prefix + body split rebuilds them."""
    from transformers import AutoTokenizer

    from finsent.core.registry import DEFAULT_MODEL
    from finsent.data.readers import read_file
    from finsent.modeling.load import resolve_model

    labels = ["positive", "neutral", "negative"]
    texts = {e.text for e in read_file(all_data, labels).examples}
    for path in sorted(fpb_dir.glob("Sentences_*.txt")):
        texts |= {e.text for e in read_file(path, labels).examples}
    assert len(texts) > 4000
    tok = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    codec = PromptCodec(tok, build_template("notebook", labels), labels, labels)
    diverging = 0
    for text in sorted(texts):
        expected = tok(codec.template.render(text))["input_ids"]  # a user's call, special tokens and all
        assert codec.prompt_ids(text) == expected, text
        n, body = codec.split(text)
        assert codec.prefix_ids[:n] + body == expected, text
        ids, n_prompt = codec.train_ids(text, "neutral")
        assert ids[:n_prompt] == expected, text
        diverging += n < len(codec.prefix_ids)
    # 58 distinct sentences open with characters that merge with the prompt's '[' ('["', '[(', ...):
    # encoded apart, as before, they were trained and scored on tokens no deployment sends
    assert diverging > 40, diverging


def single_token_words(tok, n=3):
    words = [w for w in ("the", "to", "in", "profit", "company", "said", "EUR", "mn", "sales", "jobs")]
    single = [w for w in words if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(single) >= n, single
    return single[:n]


TEXTS = [
    "(Operating profit rose to EUR 13.1 mn .",
    '"The company said it would cut 120 jobs .',
    "$11 million contract value .",
    "Net sales fell .",
]


def test_single_token_answers_match_the_plain_forward(tiny):
    """The normal case with real tokenizers: every label is one token (no branches at all)."""
    model, tok = tiny
    words = single_token_words(tok)
    codec = PromptCodec(tok, build_template("notebook", words), ["a", "b", "c"], words)
    assert all(len(ids) == 1 for ids in codec.label_ids)
    prompts = [codec.split(t) for t in TEXTS]
    torch.testing.assert_close(
        score_prompts(model, codec, prompts), score_plain(model, codec, TEXTS), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("single", [True, False])
def test_prompts_that_part_from_the_prefix_early_score_like_the_plain_forward(tiny, single):
    """A template cut in the middle of a word ('Op' + 'erating'): the whole string's encoding parts from
    the prefix's own before the prefix ends; those rows see only the shared part of the prefix."""
    model, tok = tiny
    words = single_token_words(tok) if single else ["positive", "neutral", "negative"]
    codec = PromptCodec(tok, Template("Headline: Op", " ="), ["a", "b", "c"], words)
    texts = ["erating profit rose to EUR 13.1 mn .", "erating profit fell .", " net sales fell sharply ."]
    splits = [codec.split(t) for t in texts]
    assert any(n < len(codec.prefix_ids) for n, _ in splits), splits
    assert any(n == len(codec.prefix_ids) for n, _ in splits), splits
    plain = score_plain(model, codec, texts)
    torch.testing.assert_close(score_prompts(model, codec, splits), plain, atol=1e-4, rtol=1e-4)
    _, probs = classify(model, codec, texts, batch_size=2)
    torch.testing.assert_close(torch.tensor(probs), torch.softmax(plain, -1), atol=1e-4, rtol=1e-4)


def test_training_loss_uses_the_whole_string_tokens(tiny):
    """The fast answer loss equals the plain forward's loss on the whole-string training ids."""
    from finsent.modeling.scoring import answer_loss

    model, tok = tiny
    codec = PromptCodec(
        tok, Template("Headline: Op", " ="), ["a", "b", "c"], ["positive", "neutral", "negative"]
    )
    texts = ["erating profit rose .", " net sales fell sharply ."]
    seqs = [codec.train_ids(t, "b") for t in texts]
    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), tok.pad_token_id)
    attention = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    plain = []
    for i, (ids, n_prompt) in enumerate(seqs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        plain += [logp[p - 1, ids[p]] for p in range(n_prompt, len(ids))]
    with torch.no_grad():
        fast = answer_loss(
            model, codec, {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        )
    torch.testing.assert_close(fast, -torch.stack(plain).mean(), atol=1e-5, rtol=1e-5)


def _batch(tok, seqs):
    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), tok.pad_token_id)
    attention = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for i, (ids, n_prompt) in enumerate(seqs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


@pytest.mark.parametrize("smoothing,weights", [(0.0, None), (0.2, [1.0, 3.0, 0.5])])
def test_label_loss_matches_the_plain_forward(tiny, smoothing, weights):
    """train.loss=label against scores from one ordinary forward per (sentence, label): cross-entropy
    over the labels (smoothed, weighted) minus log sum_j p(label j); unsmoothed and unweighted that is
    the gold label's own NLL."""
    import torch.nn.functional as F

    from finsent.modeling.scoring import label_loss

    model, tok = tiny
    codec = PromptCodec(
        tok, Template("Headline: Op", " ="), ["a", "b", "c"], ["positive", "neutral", "negative"]
    )
    texts = ["erating profit rose .", " net sales fell sharply .", "erating loss widened ."]
    gold = [1, 0, 2]
    batch = _batch(tok, [codec.train_ids(t, codec.labels[g]) for t, g in zip(texts, gold)])
    with torch.no_grad():
        fast = label_loss(model, codec, batch, weights=weights, smoothing=smoothing)
        plain = score_plain(model, codec, texts)
    g = torch.tensor(gold)
    ref = F.cross_entropy(plain, g, label_smoothing=smoothing, reduction="none") - plain.logsumexp(1)
    if weights:
        ref = ref * torch.tensor(weights)[g]
    else:
        torch.testing.assert_close(ref, -plain[torch.arange(3), g])
    torch.testing.assert_close(fast, ref.mean(), atol=1e-5, rtol=1e-5)


def test_class_weights_weigh_each_rows_answer_tokens(tiny):
    from finsent.modeling.scoring import answer_loss

    model, tok = tiny
    codec = PromptCodec(
        tok, Template("Headline: ", " ="), ["a", "b", "c"], ["positive", "neutral", "negative"]
    )
    texts = ["profit rose .", "net sales fell sharply ."]
    batch = _batch(tok, [codec.train_ids(texts[0], "a"), codec.train_ids(texts[1], "c")])
    one = [_batch(tok, [codec.train_ids(texts[0], "a")]), _batch(tok, [codec.train_ids(texts[1], "c")])]
    with torch.no_grad():
        sums = [answer_loss(model, codec, b) * b["labels"].ne(-100).sum() for b in one]
        weighted = answer_loss(model, codec, batch, weights=[2.0, 1.0, 0.5])
    n = batch["labels"].ne(-100).sum()
    torch.testing.assert_close(weighted, (2.0 * sums[0] + 0.5 * sums[1]) / n)


def test_class_weights_option():
    from finsent.core.errors import FinsentError
    from finsent.core.options import class_weight_list

    labels = ["positive", "neutral", "negative"]
    assert class_weight_list("none", labels, {}) is None
    auto = class_weight_list("auto", labels, {"positive": 100, "neutral": 600, "negative": 50})
    assert auto == pytest.approx([750 / 300, 750 / 1800, 750 / 150])
    assert sum(w * c for w, c in zip(auto, (100, 600, 50))) == pytest.approx(750)  # mean row weight 1
    assert class_weight_list("1, 0.5,2", labels, {}) == [1.0, 0.5, 2.0]
    for bad in ("1,2", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(FinsentError, match="train.class_weights"):
            class_weight_list(bad, labels, {})
