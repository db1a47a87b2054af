"""train.fast under gradient accumulation, as every GPU config ships it (micro-batch 1 x 8, 4 x 2): one
optimizer step over the same 8 rows must move the weights the same way whatever the micro-batch split,
and the same way as the notebook's loss (train.fast=false, the model's own cross-entropy).

Through the real Trainer (build_trainer + trainer.train()), plain SGD with no clipping, warm-up, decay or
momentum, so the update is the learning rate times the gradient: AdamW's first step divides the gradient
by its own magnitude and would hide a loss scaled by the wrong count."""

import pytest
import torch
from test_train import tiny_config

from finsent.data.dataset import Example

# the tiny tokenizer splits the label words into different numbers of tokens: micro-batches made of one
# label each carry different answer-token counts, which is what a per-micro-batch mean would get wrong
ROWS = [
    ("Operating profit rose to EUR 13.1 mn .", "positive"),
    ("Net sales rose sharply in 2007 .", "positive"),
    ("The company value rose .", "positive"),
    ("Profit rose to EUR 8.7 mn .", "positive"),
    ("The company said it would cut 120 jobs .", "negative"),
    ("Net sales fell sharply .", "negative"),
    ("Operating loss widened to EUR 13.1 mn .", "negative"),
    ("Jobs fell .", "negative"),
]


def one_step(model_dir, out, micro: int, accumulation: int, fast: bool = True, loss: str = "answer"):
    """The weight change of one optimizer step over ROWS, in file order, and the answer-token count of
    each micro-batch."""
    from finsent.training.train import build_trainer

    cfg = tiny_config(
        model_dir,
        out,
        method="full",
        fast=fast,
        loss=loss,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        weight_decay=0.0,
        max_grad_norm=0.0,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        group_by_length=False,
        shuffle=False,
        evaluation_strategy="no",
        bf16=False,
    )
    cfg = cfg.validate()
    splits = {"train": [Example(i, t, lab) for i, (t, lab) in enumerate(ROWS)], "eval": [], "test": []}
    trainer, codec, _ = build_trainer(cfg, splits)
    before = {k: p.detach().clone() for k, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 1
    delta = {k: p.detach() - before[k] for k, p in trainer.model.named_parameters()}
    per_row = [len(ids) - n_prompt for ids, n_prompt in (codec.train_ids(t, lab) for t, lab in ROWS)]
    return delta, [sum(per_row[i : i + micro]) for i in range(0, len(ROWS), micro)]


def assert_same_update(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """The fast answer loss on all 8 rows in one micro-batch: the update every split must reproduce."""
    delta, _ = one_step(tiny_model_dir, tmp_path_factory.mktemp("8x1"), 8, 1)
    moved = max(float(d.abs().max()) for d in delta.values())
    assert moved > 1e-3, "the step moved nothing: the comparisons would prove nothing"
    return delta


def test_fast_loss_4x2_makes_the_8x1_step(tiny_model_dir, tmp_path, reference):
    delta, tokens = one_step(tiny_model_dir, tmp_path, 4, 2)
    # the precondition that makes this a test of the normalisation: unequal micro-batches
    assert tokens[0] != tokens[1], tokens
    assert_same_update(delta, reference)


def test_fast_loss_1x8_makes_the_8x1_step(tiny_model_dir, tmp_path, reference):
    """The notebooks' GPU shape (micro-batch 1 x 8), which the Llama configs ship with train.fast."""
    delta, tokens = one_step(tiny_model_dir, tmp_path, 1, 8)
    assert len(set(tokens)) > 1, tokens
    assert_same_update(delta, reference)


@pytest.mark.parametrize("micro, accumulation", [(8, 1), (4, 2)])
def test_notebook_loss_makes_the_fast_step(tiny_model_dir, tmp_path, reference, micro, accumulation):
    """train.fast=false (SFTTrainer's completion-only cross-entropy over the same answer tokens, label +
    EOS, divided by the Trainer's count of them): the same step as the fast loss."""
    delta, _ = one_step(tiny_model_dir, tmp_path, micro, accumulation, fast=False)
    assert_same_update(delta, reference)


def test_label_loss_4x2_makes_the_8x1_step(tiny_model_dir, tmp_path):
    """train.loss=label: a mean over rows, so the split into micro-batches must not weight them."""
    whole, _ = one_step(tiny_model_dir, tmp_path / "8x1", 8, 1, loss="label")
    split, tokens = one_step(tiny_model_dir, tmp_path / "4x2", 4, 2, loss="label")
    assert tokens[0] != tokens[1], tokens
    assert_same_update(split, whole)
