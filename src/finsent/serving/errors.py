"""The server's error bodies and limits."""

from dataclasses import dataclass

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
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_body: int = 1_000_000  # bytes per request body, counted as it streams in
    max_batch: int = 64  # texts per forward pass
    max_tokens: int = 1024  # prompt tokens per text (also capped by the model's context length)
    max_request_tokens: int = 16384  # prompt tokens per request, and per forward pass
    max_queue: int = 512  # texts waiting for a forward pass
    timeout: float = 30.0  # seconds a request may wait for its answer


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


def _retry(seconds: int) -> dict:
    return {"Retry-After": str(seconds)}
