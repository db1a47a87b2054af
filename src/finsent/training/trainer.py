"""finsent's SFTTrainer: the fast answer-only loss and an evaluation that classifies.

Imported lazily by train.py (it imports TRL at the top). With `train.fast` the loss comes from the
evaluator's own forward (scoring.answer_loss): the shared instruction prefix runs once per micro-batch and
logits are computed only where an answer token is predicted. Evaluation is the classifier's accuracy on the
eval split, not the token-level loss over full-vocabulary logits that the stock loop computes.
"""

from __future__ import annotations

import sys

from trl import SFTTrainer

from finsent.evaluation.metrics import classification_metrics
from finsent.modeling.scoring import answer_loss, classify, label_loss
from finsent.training.parallel import check_fast_loss, is_wrapped, through_wrapper, unwrap


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
        if is_wrapped(model) and not self._in_wrapper:  # DDP / FSDP / DeepSpeed: see parallel.py
            return self._wrapped_fast_loss(model, inputs, return_outputs, num_items_in_batch)
        # the fast loss calls the decoder, not model.forward, so the autocast that accelerate wraps around
        # model.forward for bf16 / fp16 mixed precision never ran: bf16 training on a CPU with bf16
        # matmuls ran every matmul in float32 (found with a dispatch-mode count; tests/test_mixed_precision.py)
        with self.accelerator.autocast():
            if self.loss == "label":
                # a mean over the accumulated step's rows, counted by get_batch_samples (a mean per
                # micro-batch would weigh 4 x 2 rows and 8 x 1 differently)
                rows = self._rows_in_batch if num_items_in_batch is not None else None
                loss = label_loss(model, self.codec, inputs, rows, self.class_weights, self.label_smoothing)
            else:
                loss = answer_loss(model, self.codec, inputs, num_items_in_batch, self.class_weights)
        return (loss, None) if return_outputs else loss

    _rows_in_batch = None  # rows in the current accumulated batch, every rank's (train.loss=label)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's micro-batches of one optimizer step and their answer-token count; also counts
        their rows, as it counts tokens (over every rank when it averages tokens across devices), so the
        label loss is a mean over the step's rows however they are split into micro-batches."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.loss == "label" and num_items is not None:
            import torch

            rows = torch.tensor(sum(len(b["input_ids"]) for b in batch_samples), device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                rows = self.accelerator.gather(rows).sum()
            self._rows_in_batch = rows
        return batch_samples, num_items

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Classification accuracy on the eval split with the fast evaluator (not generation, and
        not the token-level loss over full-vocabulary logits that the stock loop computes)."""
        exs = self.eval_examples
        preds, probs = self.classify([e.text for e in exs])
        self.last_eval = (self.state.global_step, probs)
        m = classification_metrics([e.label for e in exs], preds, self.codec.labels)
        metrics = {
            f"{metric_key_prefix}_accuracy": m["accuracy"],
            f"{metric_key_prefix}_macro_f1": m["macro_f1"],
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        print(f"\neval accuracy {m['accuracy']:.3f} at step {self.state.global_step}", file=sys.stderr)
        return metrics

    def classify(self, texts: list[str]) -> tuple[list[str], list[list[float]]]:
        """The model's labels and probabilities for `texts`; under FSDP every process must call it.
        Each distinct text is scored once: the notebook split's eval rows are drawn with replacement
        (all-data.csv's 150 are 101 distinct sentences), and the model is the same for all of them."""
        distinct = list(dict.fromkeys(texts))
        preds, probs = self._in_model(
            lambda m: classify(m, self.codec, distinct, self.args.per_device_eval_batch_size)
        )
        at = {t: i for i, t in enumerate(distinct)}
        return [preds[at[t]] for t in texts], [probs[at[t]] for t in texts]

    last_eval = None  # (optimizer step, eval-split probabilities) of the latest evaluate()

    def eval_probabilities(self) -> list[list[float]] | None:
        """The eval split's probabilities with the weights as they are now: the latest evaluation's when
        it ran at this optimizer step (the end of the last epoch, with evaluation_strategy epoch)."""
        if not self.eval_examples:
            return None
        if self.last_eval and self.last_eval[0] == self.state.global_step:
            return self.last_eval[1]
        return self.classify([e.text for e in self.eval_examples])[1]

    _in_wrapper = False

    def _wrapped_fast_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """The fast loss run as the distributed wrapper's forward, so DDP all-reduces its gradients and
        FSDP gathers the weights it uses (bypassed, each rank would train alone)."""
        check_fast_loss(model)
        inner = unwrap(model)
        self._in_wrapper = True
        try:
            loss = through_wrapper(model, lambda: self.compute_loss(inner, inputs, False, num_items_in_batch))
        finally:
            self._in_wrapper = False
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # as Trainer.compute_loss: num_items_in_batch counts every rank's answer tokens and the
            # wrapper averages gradients over ranks, so each rank's sum is scaled back up by the rank count
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, None) if return_outputs else loss

    def _in_model(self, fn):
        """fn(model) for an evaluation pass: directly, or inside an FSDP model's forward (which gathers
        its sharded weights). Under DDP self.model is the bare model and needs no wrapper."""
        import torch

        if not is_wrapped(self.model):
            return fn(self.model)
        inner = unwrap(self.model)
        with torch.no_grad():
            return through_wrapper(self.model, lambda: fn(inner))


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
