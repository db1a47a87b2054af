"""An HTTP service for a tuned classifier, with a page to try it.

    finsent serve --model runs/demo/merged_model --port 8000
    curl -s localhost:8000/v1/classify -H 'content-type: application/json' -d '{"texts": ["Profit rose."]}'

Concurrent requests are micro-batched: a single worker takes the texts waiting in the queue (at most
--max-batch texts and --max-request-tokens prompt tokens), runs one forward pass, and answers each request
with its own slice; a larger request is split over several passes. OpenAPI docs at /docs.

Cost is bounded before the model runs: a request's body is counted while it streams in (chunked or not)
and refused past --max-body; every text is checked for valid Unicode, characters, prompt tokens (with the
model's tokenizer, against --max-tokens and the model's context length) and the request's tokens in all
against --max-request-tokens. The queue holds at most --max-queue texts (503 with Retry-After when full),
and a request waiting longer than --timeout seconds gets 504 and its texts leave the queue unscored. On
SIGTERM the waiting requests get 503 at once; the server exits after the forward pass in flight, if any.

Every error has one shape (ErrorResponse in /openapi.json):

    {"error": {"code": 413, "type": "too_large", "message": "...", "field": "texts.3"}}

`field` names the offending part of the request ("texts", "texts.3") or is null. `type` is one of
bad_request (400: malformed JSON), not_found (404), method_not_allowed (405), too_large (413: too many
texts, body or tokens per request), invalid (422: a text or the request's shape), internal (500: the model
failed on this request), unavailable (503: queue full or shutting down), timeout (504).
"""

import asyncio
import copy
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

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


def model_name(spec: str) -> str:
    """What the service shows as the model: a folder's last component, or a hub id / embedded name."""
    path = Path(str(spec)).expanduser()
    if path.is_absolute() or path.exists() or str(spec).startswith((".", "~")):
        return path.resolve().name or str(spec)
    return str(spec)


@dataclass(eq=False)
class _Job:
    texts: list[str]
    tokens: list[int]
    fut: asyncio.Future
    results: list = field(default_factory=list)
    sent: int = 0  # texts handed to a forward pass
    done: int = 0  # texts answered

    def __post_init__(self):
        self.results = [None] * len(self.texts)

    def fill(self, start: int, results: list) -> None:
        self.results[start : start + len(results)] = results
        self.done += len(results)
        if self.done == len(self.texts) and not self.fut.done():
            self.fut.set_result(self.results)


class MicroBatcher:
    """Collects texts from concurrent requests into shared forward passes, one at a time.

    A forward pass holds at most `max_batch` texts and `max_batch_tokens` prompt tokens (at least one
    text); a request larger than that is split over passes. At most `max_queue` texts wait. A pass that
    raises is retried request by request, so only the request that makes the model fail gets the error.
    """

    def __init__(self, predict, max_batch: int, max_batch_tokens: int = 1 << 62, max_queue: int = 1 << 62):
        self.predict = predict
        self.max_batch, self.max_batch_tokens, self.max_queue = max_batch, max_batch_tokens, max_queue
        self.jobs: deque[_Job] = deque()
        self.queued = 0  # texts waiting, not yet in a forward pass
        self.batches = 0
        self.batch_seconds = 0.0  # running mean of one forward pass, for Retry-After
        self.closed = False
        self._task = None
        self._loop = None
        self._wake: asyncio.Event | None = None
        self._executor = None

    def start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="finsent-model")
        self._task = self._loop.create_task(self._run())

    def begin_shutdown(self) -> None:
        """Refuse new requests and answer every waiting one with 503; the pass in flight finishes.
        Safe to call from a signal handler or another thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close)

    def _close(self) -> None:
        self.closed = True
        while self.jobs:
            job = self.jobs.popleft()
            if not job.fut.done():
                job.fut.set_exception(ServeError(503, "the server is shutting down", headers=_retry(1)))
        self.queued = 0

    async def stop(self) -> None:
        self._close()
        if self._task:
            self._task.cancel()
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def retry_after(self) -> int:
        passes = math.ceil(self.queued / self.max_batch) + 1
        return max(1, math.ceil(passes * self.batch_seconds))

    async def classify(self, texts: list[str], tokens: list[int] | None = None, timeout: float | None = None):
        """Results for `texts` (prompt token counts `tokens`), or ServeError 503/504/500."""
        if self.closed:
            raise ServeError(503, "the server is shutting down", headers=_retry(1))
        if self.queued and self.queued + len(texts) > self.max_queue:
            raise ServeError(
                503,
                f"the queue is full ({self.queued} texts waiting, at most {self.max_queue}): retry later",
                headers=_retry(self.retry_after()),
            )
        job = _Job(
            list(texts), list(tokens) if tokens is not None else [0] * len(texts), self._loop.create_future()
        )
        self.jobs.append(job)
        self.queued += len(texts)
        self._wake.set()
        try:
            return await asyncio.wait_for(job.fut, timeout)
        except asyncio.TimeoutError:
            raise ServeError(
                504, f"no answer within {timeout:g} s: the server is busy, retry later"
            ) from None
        finally:
            self._drop(job)

    def _drop(self, job: _Job) -> None:
        """Take a finished, failed, timed-out or cancelled request's unsent texts out of the queue."""
        if not job.fut.done():
            job.fut.cancel()
        try:
            self.jobs.remove(job)
        except ValueError:
            return
        self.queued -= len(job.texts) - job.sent

    def _take(self) -> list[tuple[_Job, int, int]]:
        """The next forward pass: (job, start, end) slices of the waiting requests, in arrival order."""
        batch, n, tokens = [], 0, 0
        for job in list(self.jobs):
            if job.fut.done():  # timed out or cancelled, its finally has not run yet
                self._drop(job)
                continue
            start = job.sent
            while job.sent < len(job.texts) and n < self.max_batch:
                t = job.tokens[job.sent]
                if n and tokens + t > self.max_batch_tokens:
                    break
                job.sent += 1
                n += 1
                tokens += t
            if job.sent > start:
                batch.append((job, start, job.sent))
                self.queued -= job.sent - start
            if job.sent == len(job.texts):
                self.jobs.remove(job)
            if n >= self.max_batch or job.sent < len(job.texts):
                break
        return batch

    async def _run(self) -> None:
        while True:
            while not self.jobs:
                self._wake.clear()
                await self._wake.wait()
            batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            texts = [t for job, a, b in batch for t in job.texts[a:b]]
            try:
                results = await self._predict(texts)
            except Exception as e:
                if len(batch) == 1:
                    self._fail(batch[0][0], e)
                else:  # one request at a time, so that only the one that fails gets the error
                    for job, a, b in batch:
                        if job.fut.done():
                            continue
                        try:
                            job.fill(a, await self._predict(job.texts[a:b]))
                        except Exception as e1:
                            self._fail(job, e1)
            else:
                i = 0
                for job, a, b in batch:
                    if not job.fut.done():
                        job.fill(a, results[i : i + b - a])
                    i += b - a
            self.batches += 1
            seconds = time.perf_counter() - started
            self.batch_seconds = seconds if self.batches == 1 else 0.8 * self.batch_seconds + 0.2 * seconds

    async def _predict(self, texts: list[str]) -> list[dict]:
        return await self._loop.run_in_executor(self._executor, self.predict, texts)

    def _fail(self, job: _Job, exc: Exception) -> None:
        if not job.fut.done():
            job.fut.set_exception(ServeError(500, f"the model failed on this request ({type(exc).__name__})"))
        self._drop(job)


def _retry(seconds: int) -> dict:
    return {"Retry-After": str(seconds)}


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

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException

    from finsent.scoring import model_context

    limits = limits or Limits()
    # the model pass batches texts across requests; prior correction ('auto': EM) runs per request
    batcher = MicroBatcher(clf.probabilities, limits.max_batch, limits.max_request_tokens, limits.max_queue)
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

    def error(status: int, message: str, field: str | None = None, headers: dict | None = None):
        return JSONResponse(status_code=status, content=error_body(status, message, field), headers=headers)

    app.add_middleware(BodyLimit, max_body=limits.max_body)

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError):
        return error(exc.status, exc.message, exc.field, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
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

    def check(texts: list[str]) -> list[int]:
        """Each text's prompt tokens; ServeError (413/422) for the first text or total over a limit."""
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
            n = len(codec.prompt_ids(t))
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

    @app.get("/health")
    async def health():
        return {"status": "ok", "batches": batcher.batches, "queued": batcher.queued}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files("finsent").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


def _version() -> str:
    from finsent import __version__

    return __version__


def serve(clf, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None) -> None:
    import uvicorn

    app = create_app(clf, limits)
    batcher = app.state.batcher

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            batcher.begin_shutdown()  # waiting requests get 503 now, not after the queue drains

    # the backstop: requests still open this long after SIGTERM are cancelled
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    Server(config).run()
