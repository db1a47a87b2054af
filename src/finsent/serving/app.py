"""An HTTP service for a tuned classifier, with a page to try it.

    finsent serve --model runs/demo/merged_model --port 8000
    curl -s localhost:8000/v1/classify -H 'content-type: application/json' -d '{"texts": ["Profit rose."]}'

Concurrent requests are micro-batched: a single worker takes the texts waiting in the queue (at most
--max-batch texts and --max-batch-tokens prompt tokens), scores them together in length-sorted forward
passes of at most --batch-size texts (batcher.py says exactly how), and answers each request with its own
slice; a larger request is split over several micro-batches. OpenAPI docs at /docs.

Cost is bounded before the model runs: a request's body is counted while it streams in (chunked or not)
and refused past --max-body; every text is checked for valid Unicode, characters, prompt tokens (with the
model's tokenizer, against --max-tokens and the model's context length) and the request's tokens in all
against --max-request-tokens. The queue holds at most --max-queue texts (503 with Retry-After when full),
and a request waiting longer than --timeout seconds gets 504 and its texts leave the queue unscored. On
SIGTERM the waiting requests get 503 at once; the server exits after the micro-batch in flight, if any.

Every error has one shape (ErrorResponse in /openapi.json):

    {"error": {"code": 413, "type": "too_large", "message": "...", "field": "texts.3"}}

`field` names the offending part of the request ("texts", "texts.3") or is null. `type` is one of
bad_request (400: malformed JSON), not_found (404), method_not_allowed (405), too_large (413: too many
texts, body or tokens per request), invalid (422: a text or the request's shape), internal (500: the model
failed on this request), unavailable (503: queue full or shutting down), timeout (504).
"""

import copy
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from finsent.serving.batcher import MicroBatcher
from finsent.serving.checks import RequestCheck
from finsent.serving.errors import ERROR_TYPES, Limits, ServeError, error_body


def model_name(spec: str) -> str:
    """What the service shows as the model: a folder's last component, or a hub id / embedded name."""
    path = Path(str(spec)).expanduser()
    if path.is_absolute() or path.exists() or str(spec).startswith((".", "~")):
        return path.resolve().name or str(spec)
    return str(spec)


class BodyLimit:
    """Pure ASGI middleware: refuse a request body over `max_body` bytes with 413, by its Content-Length
    before reading anything, or (chunked, or lying) by counting the bytes as they stream in; what was read
    is never more than max_body plus one chunk."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def _refuse(self, scope, receive, send, size: str) -> None:
        from fastapi.responses import JSONResponse

        message = f"request body of {size} bytes exceeds the limit of {self.max_body}"
        await JSONResponse(error_body(413, message, "body"), status_code=413)(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return await self._refuse(scope, receive, send, value.decode())
        received, over, started = 0, False, False

        async def counted_receive():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    raise self._TooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if over:  # the app's answer to a body cut short is replaced by the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(scope, receive, send, f"more than {self.max_body}")


def create_app(clf, limits: Limits | None = None):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field

    from finsent.modeling.scoring import model_context

    limits = limits or Limits()
    # the model pass batches texts across requests; prior correction ('auto': EM) runs per request.
    # The heap is trimmed after passes (at most once a second): without it glibc's arenas keep the freed
    # activations of every shape and RSS creeps (batcher.release_memory); FINSENT_MALLOC_TRIM_EVERY=0 is off.
    trim = _trim_every()
    batcher = MicroBatcher(
        clf.probabilities, limits.max_batch, limits.max_batch_tokens, limits.max_queue, trim_every=trim
    )
    # A copy of the tokenizer for the checks, so they never share the Rust tokenizer with the model thread.
    codec = copy.copy(clf.codec)
    codec.tokenizer = copy.deepcopy(clf.codec.tokenizer)
    context = model_context(clf.model)
    max_tokens, why_max = codec.prompt_limit(context, limits.max_tokens)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    class ErrorDetail(BaseModel):
        code: int = Field(..., description="the HTTP status", examples=[413])
        type: str = Field(..., description=" | ".join(ERROR_TYPES.values()), examples=["too_large"])
        message: str = Field(..., examples=["texts.3: 812 tokens exceed the limit of 512 per text"])
        field: str | None = Field(None, description="the part of the request at fault", examples=["texts.3"])

    class ErrorResponse(BaseModel):
        """Every error the service answers, whatever its status."""

        error: ErrorDetail

    def responses(*codes: int) -> dict:
        return {c: {"model": ErrorResponse, "description": ERROR_TYPES[c]} for c in codes}

    app = FastAPI(
        title="finsent",
        version=_version(),
        lifespan=lifespan,
        description="Financial sentiment classification with a fine-tuned Llama-family model. "
        'Every error answers {"error": {"code", "type", "message", "field"}} (ErrorResponse).',
        responses=responses(404, 405, 500),
    )
    app.state.batcher = batcher

    class ClassifyRequest(BaseModel):
        texts: list[str] = Field(
            ...,
            description=f"1 to {limits.max_texts} texts of at most {limits.max_chars} characters and "
            f"{max_tokens} prompt tokens each, {limits.max_request_tokens} prompt tokens in all",
        )

    class Prediction(BaseModel):
        label: str
        probabilities: dict[str, float]

    class ClassifyResponse(BaseModel):
        predictions: list[Prediction]

    app.add_middleware(BodyLimit, max_body=limits.max_body)
    _error_handlers(app)

    check = RequestCheck(codec, limits, max_tokens, why_max)

    @app.post(
        "/v1/classify", response_model=ClassifyResponse, responses=responses(400, 413, 422, 500, 503, 504)
    )
    async def classify(req: ClassifyRequest):
        tokens = check(req.texts)
        return {"predictions": clf.finish(await batcher.classify(req.texts, tokens, limits.timeout))}

    @app.get("/v1/model")
    async def model_info():
        info = clf.describe()
        info["model"] = model_name(info.get("model", ""))
        return info | {"limits": asdict(limits) | {"max_tokens": max_tokens}, "context": context}

    @app.get("/health")  # and HEAD (curl -I, balancers); 503 after SIGTERM
    async def health():
        body = {"status": "shutting down" if batcher.closed else "ok", "batches": batcher.batches}
        return JSONResponse(body | {"queued": batcher.queued}, status_code=503 if batcher.closed else 200)

    # HEAD kept out of the OpenAPI schema: GET and HEAD of one function gave two operations of one id
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files("finsent.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


def _error_handlers(app) -> None:
    """Every error, whatever raised it, answers in the one shape (error_body)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def error(status: int, message: str, field: str | None = None, headers: dict | None = None):
        return JSONResponse(status_code=status, content=error_body(status, message, field), headers=headers)

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError):
        return error(exc.status, exc.message, exc.field, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 400:  # Starlette's "error parsing the body": not UTF-8, nested too deep
            return error(400, "malformed JSON body (not UTF-8 JSON that parses)", "body")
        return error(exc.status_code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return error(400, "malformed JSON body", "body")
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return error(422, f"{where}: {first.get('msg', 'invalid request')}", where)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__})")


def _trim_every() -> float:
    """Seconds between heap trims after model passes: FINSENT_MALLOC_TRIM_EVERY, 1 by default, 0 never."""
    import os

    from finsent.core.errors import FinsentError

    value = os.environ.get("FINSENT_MALLOC_TRIM_EVERY", "1")
    try:
        return max(0.0, float(value))
    except ValueError:
        raise FinsentError(f"FINSENT_MALLOC_TRIM_EVERY: {value!r} is not a number of seconds") from None


def _version() -> str:
    from finsent.core.version import __version__

    return __version__


def serve(clf, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None) -> None:
    import uvicorn

    from finsent.serving.connections import uvicorn_config

    limits = limits or Limits()
    app = create_app(clf, limits)
    batcher = app.state.batcher

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            batcher.begin_shutdown()  # waiting requests get 503 now, not after the queue drains

    # the backstop: requests still open this long after SIGTERM are cancelled. A request in the pass in
    # flight is answered within its own --timeout (else 504), so the backstop waits that long and more:
    # a 5 s backstop cut off a 40-text request mid-pass with no answer at all
    grace = limits.timeout + 5
    Server(uvicorn_config(app, host, port, limits, log_level="info", timeout_graceful_shutdown=grace)).run()
