"""finsent's SFTTrainer: the fast answer-only loss and an evaluation that classifies.

Imported lazily by train.py (it imports TRL at the top). With `train.fast` the loss comes from the
evaluator's own forward (scoring.answer_loss): the shared instruction prefix runs once per micro-batch and
logits are computed only where an answer token is predicted. Evaluation is the classifier's accuracy on the
eval split, not the token-level loss over full-vocabulary logits that the stock loop computes.
"""

from __future__ import annotations

import sys

from trl import SFTTrainer

from finsent.metrics import classification_metrics
from finsent.scoring import answer_loss, classify, label_loss


class FinsentTrainer(SFTTrainer):
    """SFTTrainer with finsent's fast loss (train.fast) and a classification-accuracy evaluation."""

    def __init__(
        self,
        *args,
        codec=None,
        fast=False,
        eval_examples=None,
        loss="answer",
        class_weights=None,
        label_smoothing=0.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.codec, self.fast, self.eval_examples = codec, fast, eval_examples or []
        self.loss, self.class_weights, self.label_smoothing = loss, class_weights, label_smoothing

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (self.fast and model.training):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.loss == "label":
            loss = label_loss(
                model, self.codec, inputs, num_items_in_batch, self.class_weights, self.label_smoothing
            )
        else:
            loss = answer_loss(model, self.codec, inputs, num_items_in_batch, self.class_weights)
        return (loss, None) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Classification accuracy on the eval split with the fast evaluator (not generation, and
        not the token-level loss over full-vocabulary logits that the stock loop computes)."""
        exs = self.eval_examples
        preds, _ = classify(
            self.model, self.codec, [e.text for e in exs], self.args.per_device_eval_batch_size
        )
        m = classification_metrics([e.label for e in exs], preds, self.codec.labels)
        metrics = {
            f"{metric_key_prefix}_accuracy": m["accuracy"],
            f"{metric_key_prefix}_macro_f1": m["macro_f1"],
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        print(f"\neval accuracy {m['accuracy']:.3f} at step {self.state.global_step}", file=sys.stderr)
        return metrics


def upcast_trainable(model) -> int:
    """Trainable bf16 weights to float32; returns how many. TRL 1.x stores a 4-bit model's LoRA weights
    in bf16, and fp16 mixed precision's gradient scaler cannot unscale bf16 gradients (found on an H100
    with the notebooks' QLoRA + fp16 recipe), so that recipe keeps its LoRA weights in float32."""
    import torch

    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.float()
            n += 1
    return n
