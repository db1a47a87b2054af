"""The server's micro-batcher: texts from concurrent requests wait briefly and are scored together.

How the model's passes are formed, exactly: the batcher hands the model one micro-batch at a time, at
most --max-batch texts and --max-batch-tokens prompt tokens taken from the waiting requests in arrival
order (a request that does not fit takes turns with those behind it). The classifier then scores that micro-batch as the scorer scores any list (scoring.classify):
sorted by length and cut into forward passes of at most --batch-size texts, with the instruction
prefix's key/value states computed once per model and shared by every pass. With the defaults (64 and
32) a full micro-batch is two forward passes; --batch-size equal to --max-batch makes it one.
"""

import asyncio
import ctypes
import ctypes.util
import math
import time
from collections import deque
from dataclasses import dataclass, field

from finsent.serving.errors import ServeError, retry_after


def release_memory():
    """glibc's malloc_trim(0), or None where there is no glibc. Why: each forward pass allocates
    activations of a new shape (batch x length varies with every micro-batch), and glibc keeps the freed
    blocks in per-thread arenas, fragmented, instead of returning them: an early soak saw a SmolLM2-135M
    server's RSS creep from 777 MB to 2.2 GB in 7 minutes, and finsent keeps no per-request cache. Trimming
    after a pass hands the free pages back (docs/serving.md, Soak). With tcmalloc or jemalloc preloaded
    glibc's heap is unused and the call costs next to nothing."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl, macOS, Windows: no malloc_trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


@dataclass(eq=False)
class _Job:
    texts: list[str]
    tokens: list[int]
    fut: asyncio.Future
    results: list = field(default_factory=list)
    sent: int = 0  # texts handed to the model
    done: int = 0  # texts answered

    def __post_init__(self):
        self.results = [None] * len(self.texts)

    def fill(self, start: int, results: list) -> None:
        self.results[start : start + len(results)] = results
        self.done += len(results)
        if self.done == len(self.texts) and not self.fut.done():
            self.fut.set_result(self.results)


class MicroBatcher:
    """Collects texts from concurrent requests into shared micro-batches, one at a time.

    A micro-batch holds at most `max_batch` texts and `max_batch_tokens` prompt tokens (at least one
    text); a request larger than that is split over micro-batches. At most `max_queue` texts wait. A
    micro-batch that raises is retried request by request, so only the request that makes the model fail
    gets the error. `predict` scores one micro-batch (in passes of its own batch size: module docstring).
    `trim_every`: after a pass, hand freed heap pages back to the system (release_memory) if that many
    seconds have passed since the last time; 0 never does.
    """

    def __init__(
        self,
        predict,
        max_batch: int,
        max_batch_tokens: int = 1 << 62,
        max_queue: int = 1 << 62,
        trim_every: float = 0.0,
    ):
        self.predict = predict
        self._trim = release_memory() if trim_every > 0 else None
        self.trim_every, self._trimmed = trim_every, 0.0
        self.max_batch, self.max_batch_tokens, self.max_queue = max_batch, max_batch_tokens, max_queue
        self.jobs: deque[_Job] = deque()
        self.queued = 0  # texts waiting, not yet in a micro-batch
        self.batches = 0
        self.batch_seconds = 0.0  # running mean of one micro-batch, for Retry-After
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
                job.fut.set_exception(ServeError(503, "the server is shutting down", headers=retry_after(1)))
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
            raise ServeError(503, "the server is shutting down", headers=retry_after(1))
        if self.queued and self.queued + len(texts) > self.max_queue:
            raise ServeError(
                503,
                f"the queue is full ({self.queued} texts waiting, at most {self.max_queue}): retry later",
                headers=retry_after(self.retry_after()),
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
        """The next micro-batch: (job, start, end) slices of the waiting requests, in arrival order; a
        request that does not fit goes on in a later micro-batch, behind the requests that wait (turns:
        one client's large request may not hold the others past their timeout)."""
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
            elif job.sent > start:  # part of it went: the rest waits its next turn, behind the others
                self.jobs.remove(job)
                self.jobs.append(job)
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
        return await self._loop.run_in_executor(self._executor, self._predict_and_trim, texts)

    def _predict_and_trim(self, texts: list[str]) -> list[dict]:
        """In the model's thread: the pass, then (at most every trim_every s) the heap trimmed, so that the
        trim (tens of ms with a GB heap) never runs beside a pass nor on the event loop."""
        try:
            return self.predict(texts)
        finally:
            now = time.monotonic()
            if self._trim is not None and now - self._trimmed >= self.trim_every:
                self._trim()
                self._trimmed = time.monotonic()

    def _fail(self, job: _Job, exc: Exception) -> None:
        if not job.fut.done():
            job.fut.set_exception(ServeError(500, f"the model failed on this request ({type(exc).__name__})"))
        self._drop(job)
