"""The Python API: load a classifier once, call it on a list of strings.

from finsent import Classifier
clf = Classifier.load("runs/demo/merged_model")          # or a base model + adapter=...
clf(["Operating profit rose to EUR 13.1 mn ."])
# [{'label': 'positive', 'probabilities': {'positive': 0.97, 'neutral': 0.02, 'negative': 0.01}}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finsent.models import DEFAULT_MODEL

if TYPE_CHECKING:  # torch and transformers stay out of `import finsent`
    from transformers import PreTrainedModel

    from finsent.config import Config
    from finsent.prompts import PromptCodec


@dataclass
class Classifier:
    model: PreTrainedModel
    codec: PromptCodec
    config: Config
    device: str
    batch_size: int = 32

    @classmethod
    def load(
        cls, model: str = DEFAULT_MODEL, adapter: str | None = None, batch_size: int = 32, **model_options
    ) -> Classifier:
        """A base model, a merged model folder or a base + adapter; labels and template come from the
        config saved beside the adapter or model when there is one."""
        from finsent.config import Config, load_saved_config
        from finsent.models import load_model
        from finsent.prompts import PromptCodec

        cfg = (
            (adapter and load_saved_config(adapter))
            or (Path(model).is_dir() and load_saved_config(model))
            or Config()
        )
        if not adapter:
            cfg.model.model = model
        for k, v in model_options.items():
            cfg.set(f"model.{k}", v)
        m, tokenizer, device = load_model(cfg.model, adapter)
        return cls(m, PromptCodec.from_config(cfg, tokenizer), cfg, device, batch_size)

    @property
    def labels(self) -> list[str]:
        return self.codec.labels

    def predict(self, texts: list[str]) -> list[dict]:
        from finsent.scoring import classify

        preds, probs = classify(self.model, self.codec, list(texts), self.batch_size)
        return [{"label": p, "probabilities": dict(zip(self.labels, pr))} for p, pr in zip(preds, probs)]

    __call__ = predict

    def describe(self) -> dict:
        """Model, labels, template and, when the model's folder has them, its test metrics."""
        info = {
            "model": self.config.model.model,
            "labels": self.labels,
            "template": self.codec.template.render("{text}") + self.codec.template.answer_sep + "{label}",
            "device": self.device,
            "dtype": str(self.model.dtype).replace("torch.", ""),
        }
        saved = Path(self.config.model.model) / "metrics.json"
        if saved.is_file():
            m = json.loads(saved.read_text())
            info["metrics"] = {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n") if k in m}
        return info
