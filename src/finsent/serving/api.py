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

from finsent.core.artefacts import METRICS_FILE

if TYPE_CHECKING:  # torch and transformers stay out of `import finsent`
    from transformers import PreTrainedModel

    from finsent.core.options import Config
    from finsent.core.prompts import PromptCodec
    from finsent.modeling.calibration import Calibration
    from finsent.modeling.scoring import Recheck


@dataclass
class Classifier:
    model: PreTrainedModel
    codec: PromptCodec
    config: Config
    device: str
    batch_size: int = 32
    # calibration.json of the adapter or merged model (temperature, training label shares), if it has one
    calibration: Calibration | None = None
    # label shares of the data to classify: None, a list in label order, or "auto" (EM on each call's texts)
    priors: list[float] | str | None = None
    # a bf16 model's float32 twin (modeling.load.load_scorer): near-ties are rescored by it
    recheck: Recheck | None = None

    @classmethod
    def load(
        cls,
        model: str | None = None,
        adapter: str | None = None,
        batch_size: int = 32,
        config: str | None = None,
        priors: str | None = None,
        **options,
    ) -> Classifier:
        """A base model, a merged model folder, or a base + adapter, named as on the command line:
        labels, template and base model come from the config saved beside the adapter or model,
        `config` (a YAML file) and `options` override them (`dtype="float32"`, `labels=[...]`,
        `template="chat"`: any option name, or `section.name`). `priors`: the label shares of the texts
        to classify ('0.15,0.7,0.15', 'neutral=0.7,...') or 'auto' (estimated on each call's texts)."""
        from finsent.core.config import resolve

        overrides = {k.replace("__", "."): v for k, v in options.items()}
        if model is not None:
            overrides["model.model"] = model
        return cls.from_config(resolve(config, overrides, adapter), adapter, batch_size, priors)

    @classmethod
    def from_config(
        cls, cfg: Config, adapter: str | None = None, batch_size: int = 32, priors: str | None = None
    ) -> Classifier:
        """The classifier a resolved Config names (finsent.config.resolve)."""
        from finsent.core.prompts import PromptCodec
        from finsent.modeling.calibration import Calibration, parse_priors, prior_offsets
        from finsent.modeling.load import load_scorer, warn_if_untuned

        shares = parse_priors(priors, cfg.data.labels)  # a bad --priors fails before the model loads
        calibration = Calibration.load(adapter or cfg.model.model, cfg.data.labels)
        offsets = prior_offsets(cfg.data.labels, calibration, shares)
        m, tokenizer, device, recheck = load_scorer(cfg.model, adapter, offsets)
        if not adapter:  # once it has loaded: a model that does not load gets its error alone
            warn_if_untuned(cfg.model.model)
        codec = PromptCodec.from_config(cfg, tokenizer)
        return cls(m, codec, cfg, device, batch_size, calibration, shares, recheck)

    @property
    def labels(self) -> list[str]:
        return self.codec.labels

    def predict(self, texts: list[str] | str) -> list[dict]:
        """One {label, probabilities} per text; a single string is one text, not its characters.
        Probabilities are calibrated (the model's temperature) and, with `priors`, re-weighted for the
        texts' label shares ('auto': estimated on these texts together)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, t in enumerate(texts):  # as the server (422) and `finsent predict` (a bad row) refuse them
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}]: not a string ({type(t).__name__})")
            if not t.strip():
                raise ValueError(f"texts[{i}]: empty text")
        return self.finish(self.probabilities(texts))

    __call__ = predict

    def probabilities(self, texts: list[str]) -> list[list[float]]:
        """Calibrated label probabilities, before any prior correction (what the server batches)."""
        from finsent.modeling.calibration import adjust
        from finsent.modeling.scoring import classify

        # the text as every other path scores it: the readers behind train, evaluate and predict strip
        # each text, and 'Sales fell .  ' could otherwise get another label here and from the server
        texts = [t.strip() for t in texts]
        _, probs = classify(
            self.model, self.codec, texts, self.batch_size, prefix_kv=self._prefix(), recheck=self.recheck
        )
        # the temperature here, the priors in finish(): the server batches across requests in between,
        # and 'auto' priors are estimated per request; both steps are calibration.adjust, as in evaluate
        return adjust(probs, self.labels, self.calibration)[0] if probs else probs

    def finish(self, probs: list[list[float]]) -> list[dict]:
        """{label, probabilities} per row of `probabilities()`, prior-corrected over these rows together."""
        from finsent.modeling.calibration import adjust

        if self.priors is not None and probs:
            train = self.calibration.train_priors if self.calibration else []
            probs, _, _ = adjust(probs, self.labels, None, self.priors, train)
        return [
            {
                "label": self.labels[max(range(len(pr)), key=pr.__getitem__)],
                "probabilities": dict(zip(self.labels, pr)),
            }
            for pr in probs
        ]

    def _prefix(self):
        """The instruction prefix's key/value states, computed once per loaded model: the weights never
        change here, so every call (every micro-batch of the server) reuses them."""
        if self.codec.prefix_ids and getattr(self, "prefix_kv", None) is None:
            import torch

            from finsent.modeling.scoring import prefix_states

            with torch.inference_mode():
                self.prefix_kv = prefix_states(self.model, self.codec.prefix_ids)
        return getattr(self, "prefix_kv", None)

    def describe(self) -> dict:
        """Model, labels, template and, when the model's folder has them, its test metrics."""
        from finsent.modeling.scoring import dtype_note

        info = {
            "model": self.config.model.model,
            "labels": self.labels,
            "template": self.codec.template.render("{text}") + self.codec.template.answer_sep + "{label}",
            "device": self.device,
            "dtype": dtype_note(self.model, self.recheck),
        }
        saved = Path(self.config.model.model) / METRICS_FILE
        if saved.is_file():
            m = json.loads(saved.read_text())
            info["metrics"] = {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n") if k in m}
        if self.calibration:
            info["temperature"] = self.calibration.temperature
        if self.priors is not None:
            info["priors"] = self.priors if self.priors == "auto" else dict(zip(self.labels, self.priors))
        return info
