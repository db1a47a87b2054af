"""The server's limits and its one error shape.

`Limits` is also where `finsent serve` gets its flags (finsent.cli builds them from these fields), and
`finsent predict` takes its per-text token limit from `MAX_TOKENS`, so a text the server refuses is a
bad row for predict too.
"""

from dataclasses import dataclass

from finsent.core.fields import opt

# prompt tokens per text, for the server and for predict (also capped by the model's context length):
# attention grows with the square of the length, so a file of very long rows would hold up every other
# row (docs/results.md, "Figures the code's comments cite")
MAX_TOKENS = 1024

ERROR_TYPES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}


@dataclass
class Limits:
    """What one client may ask of the server, so that it cannot starve the others."""

    max_texts: int = opt(64, "texts per request", at_least=1)
    max_chars: int = opt(2000, "characters per text", at_least=1)
    max_body: int = opt(1_000_000, "bytes per request body, counted as it streams in", at_least=1)
    max_batch: int = opt(
        64, "texts per micro-batch across requests (scored in passes of --batch-size texts)", at_least=1
    )
    max_tokens: int = opt(
        MAX_TOKENS, "prompt tokens per text (also capped by the model's context length)", at_least=1
    )
    max_request_tokens: int = opt(16384, "prompt tokens per request", at_least=1)
    max_batch_tokens: int = opt(
        4096,
        "prompt tokens per micro-batch: a larger request is scored over several, taking turns with the "
        "requests behind it (one micro-batch of 16,384 tokens took 53 s on 2 cores, past --timeout)",
        at_least=1,
    )
    max_queue: int = opt(512, "texts waiting for the model", at_least=1)
    timeout: float = opt(30.0, "seconds a request may wait for its answer (then 504)", at_least=0.001)
    header_timeout: float = opt(
        10.0, "seconds a connection may take to send a request's headers (then it is closed)", at_least=0.001
    )
    max_connections: int = opt(1000, "open connections, beyond which new requests get 503", at_least=1)


class ServeError(Exception):
    """An answer in the one error shape."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers


def error_body(status: int, message: str, field: str | None = None) -> dict:
    return {
        "error": {
            "code": status,
            "type": ERROR_TYPES.get(status, "bad_request" if status < 500 else "internal"),
            "message": message,
            "field": field,
        }
    }


def retry_after(seconds: int) -> dict:
    return {"Retry-After": str(seconds)}
