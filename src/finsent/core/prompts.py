"""Prompt templates and their tokenisation, shared by training, evaluation and serving.

A prompt is the string `prefix + text + suffix`, and it is tokenised as one string, as a user, the
notebooks' pipeline, llama.cpp and Ollama do: a byte-level BPE merges characters across the cut between
the instruction and the sentence (`[` + `(`, `[` + `"`), so encoding the pieces apart would train and
score tokens that no deployment ever sends. The answer (a label word) follows the prompt.

For speed the instruction's tokens are shared: `split(text)` says how many leading tokens of the
whole-string encoding equal the prefix's own encoding (all of them, unless the sentence's first
characters merged with the prefix's last ones) and returns the rest as the sentence's `body`. The scorer
runs the prefix once and lets each row see only its shared part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.labels import label_words_for, normalise_label

# The notebooks' prompt, character for character: an indented f-string, then .strip().
_NOTEBOOK = (
    "Analyze the sentiment of the news headline enclosed in square brackets, \n"
    "            determine if it is {choices}, and return the answer as \n"
    "            the corresponding sentiment label {quoted}.\n"
    "\n"
    "            [{text}] = {label}"
)


def _choices(words: list[str]) -> tuple[str, str]:
    """'positive, neutral, or negative' and '"positive" or "neutral" or "negative"' as in the notebooks."""
    listed = ", ".join(words[:-1]) + f", or {words[-1]}" if len(words) > 2 else " or ".join(words)
    quoted = " or ".join(f'"{w}"' for w in words)
    return listed, quoted


@dataclass(frozen=True)
class Template:
    """`prefix + text + suffix` is the prompt; `answer_sep + word` is the answer."""

    prefix: str
    suffix: str
    answer_sep: str = " "

    def render(self, text: str) -> str:
        return self.prefix + text + self.suffix


def split_template(raw: str, where: str) -> Template:
    """Cut a '...{text}...{label}' string into prefix / suffix / answer separator."""
    if raw.count("{text}") != 1:
        raise FinsentError(f"{where}: the template must contain {{text}} exactly once")
    prefix, rest = raw.split("{text}")
    suffix = rest.split("{label}")[0] if "{label}" in rest else rest
    # whitespace before the answer belongs to the answer, as when the notebooks .strip() the test prompt
    stripped = suffix.rstrip()
    return Template(prefix, stripped, suffix[len(stripped) :] or " ")


def build_template(spec: str, label_words: list[str], tokenizer=None) -> Template:
    """`notebook`, `chat` (the tokenizer's chat template), a file containing {text} (and optionally
    {label}), or such a text itself."""
    from finsent.core.fields import EARLIER_NAMES

    listed, quoted = _choices(label_words)
    spec = EARLIER_NAMES.get(spec, spec)  # a template named by an older saved config
    if spec == "notebook":
        return split_template(
            _NOTEBOOK.replace("{choices}", listed).replace("{quoted}", quoted), "notebook template"
        )
    if spec == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise FinsentError("--template chat: this tokenizer has no chat template")
        marker = "\x00TEXT\x00"
        instruction = (
            f"Classify the sentiment of this financial news sentence as {listed}. "
            f"Answer with one word.\n\n{marker}"
        )
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
        prefix, suffix = rendered.split(marker)
        return Template(prefix, suffix, "")
    if "{text}" in spec:  # the template itself: how a saved config carries a template file's text
        return split_template(spec, "prompt.template")
    path = Path(spec)
    if not path.is_file():
        raise FinsentError(
            f"--template {spec}: not 'notebook', 'chat', an existing file or a text with {{text}}"
        )
    return split_template(path.read_text(encoding="utf-8"), str(path))


class PromptCodec:
    """Token ids of the prompt segments and of each label's answer, for one tokenizer and template."""

    def __init__(self, tokenizer, template: Template, labels: list[str], label_words: list[str]):
        self.tokenizer = tokenizer
        self.template = template
        self.labels = labels
        self.label_words = label_words
        self.bos: list[int] = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
        self.prefix_ids: list[int] = self.bos + self._encode(template.prefix)
        self.label_ids: list[list[int]] = [self._answer_ids(w) for w in label_words]
        for lab, ids in zip(labels, self.label_ids):
            if not ids:
                raise FinsentError(f"label '{lab}': its answer word encodes to no tokens")
        if len({tuple(x) for x in self.label_ids}) != len(self.label_ids):
            raise FinsentError(f"labels {labels}: two answers encode to the same tokens")
        self.eos_id = tokenizer.eos_token_id

    @classmethod
    def from_config(cls, cfg, tokenizer) -> PromptCodec:
        """The codec a Config asks for: its labels, answer words (prompt.label_words) and template."""
        labels = [normalise_label(x) for x in cfg.data.labels]
        words = label_words_for(labels, cfg.prompt.label_words)
        return cls(tokenizer, build_template(cfg.prompt.template, words, tokenizer), labels, words)

    def _encode(self, s: str) -> list[int]:
        return self.tokenizer(s, add_special_tokens=False)["input_ids"] if s else []

    def _answer_ids(self, word: str) -> list[int]:
        # Encode the answer in context (after a typical suffix) so a sentencepiece tokenizer does not add
        # its word-start marker twice; what is left after the suffix's tokens is the answer.
        ctx = self._encode(self.template.suffix)
        full = self._encode(self.template.suffix + self.template.answer_sep + word)
        if full[: len(ctx)] == ctx:
            return full[len(ctx) :]
        return self._encode(self.template.answer_sep + word)

    def prompt_ids(self, text: str) -> list[int]:
        """The whole prompt string's token ids (with BOS when the tokenizer adds one)."""
        return self.bos + self._encode(self.template.render(text))

    def split(self, text: str) -> tuple[int, list[int]]:
        """(n, body): the prompt's ids are prefix_ids[:n] + body. n is the longest run of leading ids the
        prompt shares with prefix_ids, and body keeps at least the last prompt token (it predicts the
        answer)."""
        ids = self.prompt_ids(text)
        return shared_split(self.prefix_ids, ids)

    def prompt_limit(self, context: int | None, cap: int | None = None) -> tuple[int | None, str]:
        """(most prompt tokens a text may take, what sets that) for a model with `context` positions: its
        context less the longest answer (scored after the prompt), or `cap` when lower; (None, "") with
        neither. One rule for the scorer, `predict` and the server."""
        longest = max((len(ids) for ids in self.label_ids), default=0)
        fit = context - longest if context else None
        if cap is not None and (fit is None or cap <= fit):
            return cap, f"the limit of {cap} tokens per text"
        if fit is None:
            return None, ""
        return fit, f"the model's context of {context} tokens less the longest answer ({longest}): {fit}"

    def too_long(self, text: str, limit: int | None, why: str) -> str | None:
        """Why `text`'s prompt cannot be scored under prompt_limit()'s (limit, why), or None if it fits."""
        if limit is None:
            return None
        n = len(self.prompt_ids(text))
        return f"its prompt is {n} tokens, over {why}" if n > limit else None

    def train_ids(self, text: str, label: str) -> tuple[list[int], int]:
        """Prompt + answer + EOS, and how many leading tokens are prompt (no loss on them)."""
        prompt = self.prompt_ids(text)
        answer = self.label_ids[self.labels.index(label)] + ([self.eos_id] if self.eos_id is not None else [])
        return prompt + answer, len(prompt)


def shared_split(prefix_ids: list[int], ids: list[int]) -> tuple[int, list[int]]:
    """How many leading `ids` equal `prefix_ids` (at most len(ids) - 1), and the ids after them."""
    n = 0
    limit = min(len(prefix_ids), len(ids) - 1)
    while n < limit and ids[n] == prefix_ids[n]:
        n += 1
    return n, ids[n:]


def _adds_bos(tokenizer) -> bool:
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id
