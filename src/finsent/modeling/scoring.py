"""A sentiment classifier from a causal LM: score every label's answer tokens in one batched pass.

    python -c "from finsent import Classifier; print(Classifier.load('smollm2-135m').predict(['Profit rose.']))"

Why it is fast (see bench/predict.py):
- the instruction prefix, the same ~50 tokens in every prompt, is run once (once per batch in
  training, where the weights change) and its key/value states shared by every row;
- every label is scored in full in the same pass: a row holds the sentence, then one branch per label
  with that label's answer tokens (all but the last), and a 4-D attention mask lets each branch see the
  sentence and itself only. Single-token labels (the common case) need no branch at all;
- logits are computed only where an answer token is predicted, not over the whole sequence;
- batches are built from sentences of similar length, and rows are right-padded so padding never
  changes a result (padding is never attended).
The same function, with gradients, gives the training loss (training/trainer.py), so a model is trained and
scored on identical tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from finsent.core.labels import UNPARSED, best_label


@dataclass
class Row:
    """One sequence after the shared prefix: a body, then branches that each see the body and themselves.
    `start`: how many of the shared prefix's tokens the row sees (its prompt's encoding may part from the
    prefix's own encoding before the prefix ends); its body's positions start there."""

    body: list[int]
    branches: list[list[int]]
    start: int = 0


# (n, body) from PromptCodec.split: the prompt is prefix_ids[:n] + body
Prompt = tuple[int, list[int]]


def layout(rows: Sequence[Row], prefix_len: int, pad_id: int, device):
    """input_ids, position_ids and the boolean (B, 1, R, prefix+R) attention mask for `rows`."""
    import torch

    width = max(len(r.body) + sum(len(b) for b in r.branches) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)  # 0 body, j+1 branch j, -1 padding
    sees_prefix = torch.zeros((len(rows), prefix_len), dtype=torch.bool)
    for i, r in enumerate(rows):
        n, p0 = len(r.body), r.start
        ids[i, :n] = torch.tensor(r.body)
        pos[i, :n] = torch.arange(p0, p0 + n)
        seg[i, :n] = 0
        sees_prefix[i, :p0] = True
        start = n
        for j, br in enumerate(r.branches):
            k = len(br)
            ids[i, start : start + k] = torch.tensor(br)
            pos[i, start : start + k] = torch.arange(p0 + n, p0 + n + k)
            seg[i, start : start + k] = j + 1
            start += k
    q = seg[:, :, None]
    k = seg[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (((k == 0) & (q >= 0)) | ((k == q) & (k > 0)))
    allowed |= torch.eye(width, dtype=torch.bool)  # a padding query sees itself, so softmax stays finite
    mask = torch.cat([sees_prefix[:, None, :].expand(-1, width, -1), allowed], dim=2)
    return ids.to(device), pos.to(device), mask[:, None].to(device)


def prefix_states(model, prefix_ids: list[int]) -> list[tuple]:
    """The prefix's key/value states, one (keys, values) pair per layer, batch 1."""
    import torch
    from transformers import DynamicCache

    decoder = model.get_decoder()
    cache = DynamicCache(config=model.config)
    ids = torch.tensor([prefix_ids], device=model.get_input_embeddings().weight.device)
    with attention_kernels(ids.device):
        decoder(input_ids=ids, use_cache=True, **{cache_argument(decoder): cache})
    if not cache.layers or cache.layers[0].keys is None:
        # transformers drops the cache when gradient checkpointing is on in training mode
        raise RuntimeError(
            "the decoder kept no key/value cache for the prefix: turn gradient checkpointing off"
        )
    return [(layer.keys, layer.values) for layer in cache.layers]


def token_logprobs(
    model,
    prefix_ids: list[int],
    rows: Sequence[Row],
    targets: Sequence[Sequence[tuple[int, int]]],
    pad_id: int,
    prefix_kv: list[tuple] | None = None,
):
    """Log-probabilities of target tokens: targets[i] lists (position in row i, token id) pairs.

    Position p means "the token predicted after position p of the row". Returns a flat float32 tensor
    in the order of the targets, differentiable when grad is enabled. The prefix is run once (batch 1)
    and its key/value states shared by the batch, so gradients still flow through it; `prefix_kv`
    (from prefix_states) skips even that, for inference over many batches with the same weights.
    """
    import torch
    from transformers import DynamicCache

    device = model.get_input_embeddings().weight.device
    decoder = model.get_decoder()
    cache = None
    if prefix_ids:
        kv = prefix_kv if prefix_kv is not None else prefix_states(model, prefix_ids)
        n = len(rows)
        cache = DynamicCache(
            [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv], model.config
        )
    ids, pos, mask = layout(rows, len(prefix_ids), pad_id, device)
    with attention_kernels(device):
        hidden = decoder(
            input_ids=ids,
            position_ids=pos,
            attention_mask=mask,
            use_cache=cache is not None,
            **{cache_argument(decoder): cache},
        ).last_hidden_state
    row_idx = torch.tensor([i for i, t in enumerate(targets) for _ in t], device=device)
    col_idx = torch.tensor([p for t in targets for p, _ in t], device=device)
    tok_idx = torch.tensor([tok for t in targets for _, tok in t], device=device)
    head = model.get_output_embeddings()
    # a head kept in float32 under a bf16 body (guarded scoring) takes the hidden states in float32
    logits = head(hidden[row_idx, col_idx].to(head.weight.dtype)).float()
    return torch.log_softmax(logits, dim=-1).gather(1, tok_idx[:, None])[:, 0]


def attention_kernels(device):
    """On CUDA, attention without cuDNN: cuDNN builds an execution plan for every new (batch, length)
    shape, and length-bucketed batches are all different shapes: a first pass over new shapes was an order
    of magnitude slower than a second one over the same shapes on an H100 (docs/results.md, "Figures the code's comments cite")."""
    import contextlib

    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def cache_argument(decoder) -> str:
    """transformers 5.24 renamed the decoder's `past_key_values` argument to `cache`."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def label_rows(codec, prompts: Sequence[Prompt]) -> tuple[list[Row], list[list[tuple[int, int]]]]:
    """Rows that score every label of `codec` after each prompt, and their targets: for each row, every
    label's answer tokens in label order (so label j owns len(codec.label_ids[j]) consecutive targets)."""
    rows, targets = [], []
    for n_shared, body in prompts:
        branches = [ids[:-1] for ids in codec.label_ids if len(ids) > 1]
        rows.append(Row(body, branches, n_shared))
        t, start, last = [], len(body), len(body) - 1
        for ids in codec.label_ids:
            t.append((last, ids[0]))
            if len(ids) > 1:
                t.extend((start + m, tok) for m, tok in enumerate(ids[1:]))
                start += len(ids) - 1
        targets.append(t)
    return rows, targets


def _answers(codec, inputs):
    """(k, sequence, first answer position, gold label index) per training row, and the micro-batch's
    answer-token count. Each input is prompt + answer + EOS, the prompt tokenised whole
    (PromptCodec.train_ids); k = how many leading tokens it shares with the instruction prefix."""
    from finsent.core.prompts import shared_split

    out, n_items = [], 0
    for ids, mask, labels in zip(
        inputs["input_ids"].tolist(), inputs["attention_mask"].tolist(), inputs["labels"].tolist()
    ):
        n = sum(mask)
        seq, lab = ids[:n], labels[:n]
        first = next(p for p in range(n) if lab[p] != -100)  # the first answer token
        k, _ = shared_split(codec.prefix_ids, seq[:first])
        gold = next(j for j, a in enumerate(codec.label_ids) if seq[first : first + len(a)] == a)
        out.append((k, seq, first, gold))
        n_items += sum(1 for t in lab if t != -100)
    return out, n_items


def answer_loss(model, codec, inputs, num_items_in_batch=None, weights=None):
    """Mean NLL of the answer tokens (label + EOS), through the shared-prefix forward (the scorer's
    tokens). `weights`: one per label (train.class_weights), applied to each row's tokens."""
    import torch

    rows, targets, row_weight = [], [], []
    answers, _ = _answers(codec, inputs)
    for k, seq, first, gold in answers:
        n = len(seq)
        rows.append(Row(seq[k : n - 1], [], k))  # the last token (EOS) predicts nothing we train on
        targets.append([(p - k - 1, seq[p]) for p in range(first, n)])
        row_weight += [weights[gold] if weights else 1.0] * (n - first)
    logp = token_logprobs(model, codec.prefix_ids, rows, targets, codec.tokenizer.pad_token_id)
    if weights:
        logp = logp * torch.tensor(row_weight, device=logp.device)
    denom = num_items_in_batch if num_items_in_batch is not None else logp.numel()
    return -logp.sum() / denom


def label_loss(model, codec, inputs, rows_in_step=None, weights=None, smoothing: float = 0.0):
    """train.loss=label: cross-entropy over the labels' scores (the comparison the classifier makes),
    with label smoothing and class weights, plus -log sum_j p(label j), which keeps the labels the model's
    likeliest replies so greedy generation (llama.cpp, Ollama) still answers with one. Without smoothing
    or weights the two terms add up to the gold label's NLL: the answer loss without its EOS token."""
    import torch
    import torch.nn.functional as F

    answers, _ = _answers(codec, inputs)
    scores = score_prompts(model, codec, [(k, seq[k:first]) for k, seq, first, _ in answers])
    gold = torch.tensor([g for *_, g in answers], device=scores.device)
    per_row = F.cross_entropy(scores, gold, label_smoothing=smoothing, reduction="none")
    per_row = per_row - torch.logsumexp(scores, dim=1)
    if weights:
        per_row = per_row * torch.tensor(weights, device=scores.device)[gold]
    # a mean over the optimizer step's rows (every micro-batch's, every rank's: `rows_in_step`), so 4 x 2
    # rows step as 8 x 1 do; without it, over this batch's rows
    return per_row.mean() if rows_in_step is None else per_row.sum() / rows_in_step


def score_prompts(model, codec, prompts: Sequence[Prompt], share_prefix: bool = True, prefix_kv=None):
    """(B, L) float32 tensor: log p(label answer | prompt), summed over each answer's tokens."""
    import torch

    if share_prefix:
        prefix = codec.prefix_ids
    else:
        prefix, prompts = [], [(0, codec.prefix_ids[:n] + b) for n, b in prompts]
    rows, targets = label_rows(codec, prompts)
    flat = token_logprobs(model, prefix, rows, targets, codec.tokenizer.pad_token_id, prefix_kv)
    sizes = torch.tensor([len(ids) for ids in codec.label_ids], device=flat.device)
    label_of = torch.repeat_interleave(torch.arange(len(sizes), device=flat.device), sizes).repeat(len(rows))
    row_of = torch.arange(len(rows), device=flat.device).repeat_interleave(int(sizes.sum()))
    out = torch.zeros(len(rows), len(sizes), device=flat.device, dtype=flat.dtype)
    return out.index_put((row_of, label_of), flat, accumulate=True)


def score_plain(model, codec, texts: Sequence[str]):
    """The reference: one ordinary forward per (sentence, label) with the whole prompt + answer, no
    shared prefix, no branches, no custom mask. Used by tests and benchmarks to check `score_prompts`."""
    import torch

    out = torch.zeros(len(texts), len(codec.label_ids))
    with torch.no_grad():
        for i, text in enumerate(texts):
            prompt = codec.prompt_ids(text)
            for j, ans in enumerate(codec.label_ids):
                ids = torch.tensor([prompt + ans], device=model.device)
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
                out[i, j] = sum(logp[len(prompt) - 1 + m, tok] for m, tok in enumerate(ans))
    return out


# Tokens per scoring batch (rows x longest row). The 4-D attention mask grows with rows x length^2, so
# a batch of 32 texts of 8,000 tokens would ask for tens of GB; short sentences (the usual case: 32 rows
# of under 500 tokens) never reach it, so their batches are exactly `batch_size` rows.
BATCH_TOKENS = 16_384


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int = BATCH_TOKENS
) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early), of at most
    `batch_size` rows and, beyond one row, of at most `max_tokens` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        b = batches[-1] if batches else None
        # rows come longest first, so a batch's first row sets its padded length
        if b and len(b) < batch_size and (len(b) + 1) * lengths[b[0]] <= max_tokens:
            b.append(i)
        else:
            batches.append([i])
    return batches


def model_context(model) -> int | None:
    """How many positions the model can attend over (its config's max_position_embeddings), if it says."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def check_lengths(codec, prompts: Sequence[Prompt], context: int | None) -> None:
    """A one-line error for the first prompt too long for the model: without it a huge text reaches the
    scorer as an attention mask of tens of GB and fails as an allocator traceback."""
    limit, why = codec.prompt_limit(context)
    for i, (n, body) in enumerate(prompts):
        if limit is not None and n + len(body) > limit:
            from finsent.core.errors import FinsentError

            raise FinsentError(f"text {i}: its prompt is {n + len(body)} tokens, over {why}")


@dataclass
class Recheck:
    """The float32 twin of a bf16 scorer (modeling.load.load_scorer) and the guard: after the bf16 pass,
    every text whose top two label scores lie within `margin` nats is scored again by `model`, and its
    label and probabilities are float32's. bf16 moves a label only where the two are nearly tied: on 2,937
    PhraseBank sentences in no split of the demo model every bf16 flip had a gap under 0.11 nats, so the
    default 0.5 rescores some 5% of texts (bench/guard.py, docs/reliability.md). A heuristic: a bf16
    error beyond the margin would still move a label (none was seen, on those or the 900 test sentences).
    Only method="score" is rechecked (generation has no gap to measure)."""

    model: object
    margin: float
    # per-label log-offsets a fixed --priors adds after scoring (calibration.prior_offsets), else None
    offsets: list[float] | None = None
    prefix_kv: list[tuple] | None = None
    rescored: int = 0  # texts rescored so far, for reports

    def states(self, codec):
        if self.prefix_kv is None and codec.prefix_ids:
            self.prefix_kv = prefix_states(self.model, codec.prefix_ids)
        return self.prefix_kv


def dtype_note(model, recheck: Recheck | None) -> str:
    """The scoring dtype as reports print it: 'float32', or 'bfloat16 (near-ties within 0.5 nats in
    float32)'."""
    name = str(model.dtype).replace("torch.", "")
    return f"{name} (near-ties within {recheck.margin:g} nats in float32)" if recheck else name


def _near_ties(scores, recheck: Recheck) -> list[int]:
    """Row positions whose best two label scores (after the priors' offsets) are within the margin; a
    row with a NaN or infinite score (fp16 overflow) counts as one."""
    import torch

    if scores.shape[1] < 2:
        return []
    s = scores.float()
    if recheck.offsets is not None:
        s = s + torch.tensor(recheck.offsets, dtype=s.dtype, device=s.device)
    top = s.topk(2, dim=1).values
    return (~((top[:, 0] - top[:, 1]) >= recheck.margin)).nonzero().flatten().tolist()


def classify(
    model,
    codec,
    texts: Sequence[str],
    batch_size: int = 32,
    method: str = "score",
    progress: Callable[[int], None] | None = None,
    prefix_kv: list[tuple] | None = None,
    recheck: Recheck | None = None,
) -> tuple[list[str], list[list[float]]]:
    """Predicted label and per-label probabilities for each text.

    method="score": probabilities over the label set from the full answer likelihoods.
    method="generate": the notebooks' method, the single most likely next token, parsed for a label
    word; an answer naming no label is UNPARSED, and its probabilities are all zero.
    `prefix_kv`: the prefix's key/value states (prefix_states) when the caller keeps them for a model whose
    weights do not change (Classifier, the server), so that even one call computes no prefix.
    `recheck`: a bf16 `model`'s float32 twin; the near-ties it names are scored again by it.
    """
    import torch

    prompts = [codec.split(t) for t in texts]
    check_lengths(codec, prompts, model_context(model))
    preds: list[str] = [""] * len(texts)
    probs: list[list[float]] = [[]] * len(texts)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        # the weights are fixed here, so the prefix is run once for all batches, not once per batch
        kv = prefix_kv
        if kv is None and method == "score" and codec.prefix_ids:
            kv = prefix_states(model, codec.prefix_ids)
        near: list[int] = []
        for batch in length_batches([len(b) for _, b in prompts], batch_size):
            if method == "score":
                scores = score_prompts(model, codec, [prompts[i] for i in batch], prefix_kv=kv)
                _keep(preds, probs, batch, scores, codec.labels)
                if recheck is not None:
                    near += [batch[j] for j in _near_ties(scores, recheck)]
            else:
                for i, word in zip(batch, _next_words(model, codec, [prompts[i] for i in batch])):
                    preds[i] = parse_answer(word, codec)
                    probs[i] = [float(preds[i] == lab) for lab in codec.labels]
            if progress:
                progress(len(batch))
        if near:
            states = recheck.states(codec)
            for batch in length_batches([len(prompts[i][1]) for i in near], batch_size):
                idx = [near[j] for j in batch]
                scores = score_prompts(recheck.model, codec, [prompts[i] for i in idx], prefix_kv=states)
                _keep(preds, probs, idx, scores, codec.labels)
            recheck.rescored += len(near)
    model.train(was_training)
    return preds, probs


def _keep(preds: list[str], probs: list[list[float]], idx: list[int], scores, labels: list[str]) -> None:
    """Probabilities over the labels and the label of each scored row, at the texts' positions `idx`."""
    import torch

    p = torch.softmax(scores.float(), dim=-1).cpu()
    for i, row in zip(idx, p.tolist()):
        probs[i] = row
        preds[i] = best_label(row, labels)


def _next_words(model, codec, prompts: Sequence[Prompt]) -> list[str]:
    """Greedy one-token generation (what the notebooks' pipeline(max_new_tokens=1) does), batched."""
    import torch

    device = model.get_input_embeddings().weight.device
    decoder = model.get_decoder()
    rows = [Row(codec.prefix_ids[:n] + b, []) for n, b in prompts]
    ids, pos, mask = layout(rows, 0, codec.tokenizer.pad_token_id, device)
    with attention_kernels(device):
        hidden = decoder(input_ids=ids, position_ids=pos, attention_mask=mask).last_hidden_state
    last = torch.tensor([len(r.body) - 1 for r in rows], device=device)
    head = model.get_output_embeddings()
    last_states = hidden[torch.arange(len(rows), device=device), last]
    tokens = head(last_states.to(head.weight.dtype)).argmax(-1)
    return [codec.tokenizer.decode([t]) for t in tokens.tolist()]


def parse_answer(answer: str, codec) -> str:
    """The notebooks' parsing: the first label word contained in the answer, else UNPARSED."""
    for lab, word in zip(codec.labels, codec.label_words):
        if word in answer:
            return lab
    return UNPARSED
