"""The server's checks of a request, before any model work: counts, characters, Unicode and tokens."""

from dataclasses import dataclass

from finsent.serving.errors import Limits, ServeError


@dataclass
class RequestCheck:
    """Checks one request's texts against the limits with `codec` (a copy of the model's tokenizer)."""

    codec: object
    limits: Limits
    max_tokens: int
    why_max: str

    def __call__(self, texts: list[str]) -> list[int]:
        """Each text's prompt tokens; ServeError (413/422) for the first text or total over a limit."""
        limits, codec, max_tokens, why_max = self.limits, self.codec, self.max_tokens, self.why_max
        if not texts:
            raise ServeError(422, "texts: give at least one text", "texts")
        if len(texts) > limits.max_texts:
            raise ServeError(
                413, f"texts: {len(texts)} texts exceed the limit of {limits.max_texts} per request", "texts"
            )
        for i, t in enumerate(texts):
            if len(t) > limits.max_chars:
                raise ServeError(
                    422,
                    f"texts.{i}: {len(t)} characters exceed the limit of {limits.max_chars}",
                    f"texts.{i}",
                )
            if not t.strip():
                raise ServeError(422, f"texts.{i}: empty text", f"texts.{i}")
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise ServeError(
                    422, f"texts.{i}: not valid Unicode (a lone surrogate such as \\ud800)", f"texts.{i}"
                ) from None
        counts, total = [], 0
        for i, t in enumerate(texts):
            n = len(codec.prompt_ids(t.strip()))  # the text the Classifier scores (it strips)
            if n > max_tokens:
                raise ServeError(422, f"texts.{i}: its prompt is {n} tokens, over {why_max}", f"texts.{i}")
            total += n
            if total > limits.max_request_tokens:
                raise ServeError(
                    413,
                    f"texts: the prompts come to more than {limits.max_request_tokens} tokens, "
                    f"the limit per request (texts.0 to texts.{i}: {total})",
                    "texts",
                )
            counts.append(n)
        return counts
