"""An HTTP service for a tuned classifier, with a page to try it.

    finsent serve --model runs/demo/merged_model --port 8000
    curl -s localhost:8000/v1/classify -H 'content-type: application/json' -d '{"texts": ["Profit rose."]}'

Concurrent requests are micro-batched: a single worker takes every text waiting in the queue (up to
--max-batch), runs one forward pass, and answers each request with its own slice. OpenAPI docs at /docs.
"""

import asyncio
from dataclasses import dataclass
from importlib import resources


@dataclass
class Limits:
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_body: int = 1_000_000  # bytes per request body
    max_batch: int = 64  # texts per forward pass


class MicroBatcher:
    """Collects texts from concurrent requests into shared forward passes, one at a time."""

    def __init__(self, clf, max_batch: int):
        self.clf, self.max_batch = clf, max_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches = 0
        self._task = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def classify(self, texts: list[str]) -> list[dict]:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            n = len(items[0][0])
            while n < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
                n += len(items[-1][0])
            texts = [t for ts, _ in items for t in ts]
            try:
                results = await loop.run_in_executor(None, self.clf.predict, texts)
            except Exception as e:  # answer every waiting request, keep serving
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            start = 0
            for ts, fut in items:
                if not fut.done():
                    fut.set_result(results[start : start + len(ts)])
                start += len(ts)


def create_app(clf, limits: Limits | None = None):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field

    limits = limits or Limits()
    batcher = MicroBatcher(clf, limits.max_batch)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="finsent",
        version=_version(),
        lifespan=lifespan,
        description="Financial sentiment classification with a fine-tuned Llama-family model.",
    )

    class ClassifyRequest(BaseModel):
        texts: list[str] = Field(
            ..., description=f"1 to {limits.max_texts} texts of at most {limits.max_chars} characters"
        )

    class Prediction(BaseModel):
        label: str
        probabilities: dict[str, float]

    class ClassifyResponse(BaseModel):
        predictions: list[Prediction]

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message})

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > limits.max_body:
            return error(413, f"request body of {size} bytes exceeds the limit of {limits.max_body}")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return error(400, "malformed JSON body")
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.post("/v1/classify", response_model=ClassifyResponse)
    async def classify(req: ClassifyRequest):
        if not req.texts:
            return error(422, "texts: give at least one text")
        if len(req.texts) > limits.max_texts:
            return error(
                413, f"texts: {len(req.texts)} texts exceed the limit of {limits.max_texts} per request"
            )
        for i, t in enumerate(req.texts):
            if len(t) > limits.max_chars:
                return error(422, f"texts.{i}: {len(t)} characters exceed the limit of {limits.max_chars}")
            if not t.strip():
                return error(422, f"texts.{i}: empty text")
        return {"predictions": await batcher.classify(req.texts)}

    @app.get("/v1/model")
    async def model_info():
        return clf.describe() | {"limits": limits.__dict__}

    @app.get("/health")
    async def health():
        return {"status": "ok", "batches": batcher.batches}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files("finsent").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


def _version() -> str:
    from finsent import __version__

    return __version__


def serve(clf, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(clf, limits), host=host, port=port, log_level="info")
