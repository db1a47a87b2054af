"""`finsent serve` under hostile or heavy traffic: token limits before the model runs, a chunked body
refused while it streams in, bad texts failing only their own request, a bounded queue, timeouts, prompt
exit on SIGTERM, no server paths shown, one error shape. All traffic on 127.0.0.1, every loop bounded."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.client import HTTPResponse

import httpx

from finsent.serving.app import create_app
from finsent.serving.errors import Limits

ROCKETS = "\U0001f4c8"  # 📈: one character, four UTF-8 bytes, several tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(clf, limits: Limits):
    """A real uvicorn server for create_app(clf, limits) on a free loopback port, in a thread."""
    import uvicorn

    from finsent.serving.connections import uvicorn_config

    srv = uvicorn.Server(
        uvicorn_config(create_app(clf, limits), "127.0.0.1", free_port(), limits, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{srv.config.port}"
    finally:
        srv.should_exit = True
        thread.join(15)


class Gated:
    """The tiny classifier, recording every forward pass; the first pass waits for `release()` (so that
    later requests queue up behind it), and a pass containing 'BOOM' raises."""

    def __init__(self, clf, gate: bool = True):
        self.clf, self.model, self.codec = clf, clf.model, clf.codec
        self.calls: list[list[str]] = []
        self._gate = threading.Event()
        if not gate:
            self._gate.set()

    def release(self) -> None:
        self._gate.set()

    def probabilities(self, texts):
        self.calls.append(list(texts))
        self._gate.wait(20)
        if any("BOOM" in t for t in texts):
            raise RuntimeError("the model failed")
        return self.clf.probabilities(texts)

    def finish(self, probs):
        return self.clf.finish(probs)

    def describe(self):
        return self.clf.describe()


def assert_error(r: httpx.Response, status: int, kind: str, field: str | None = None) -> str:
    """The one error shape; returns its message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "type", "message", "field"}, body
    assert body["error"]["code"] == status and body["error"]["type"] == kind, body
    assert body["error"]["field"] == field, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


def wait_until(condition, seconds: float = 20) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def post(url: str, texts, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/v1/classify", json={"texts": texts}, timeout=timeout)


# ---- limits that count tokens, before the model runs ----


def test_default_limits_refuse_a_text_of_emoji_tokens(clf):
    """2,000 '📈' pass the default 2,000-character limit but are thousands of tokens."""
    model = Gated(clf, gate=False)
    with running(model, Limits()) as url:
        r = post(url, [ROCKETS * 2000], timeout=10)
        message = assert_error(r, 422, "invalid", "texts.0")
        assert "tokens" in message
        r = post(url, ["Profit rose .", "x" * 10 + ROCKETS * 1500], timeout=10)
        assert_error(r, 422, "invalid", "texts.1")
        assert model.calls == []  # refused before the model ran
        assert post(url, ["Profit rose ."]).status_code == 200


def test_per_text_and_per_request_token_limits(clf):
    short = ["Profit rose .", "Sales fell ."]
    one = len(clf.codec.prompt_ids(short[0]))
    model = Gated(clf, gate=False)
    limits = Limits(max_chars=5000, max_tokens=one + 10, max_request_tokens=3 * one + 5)
    with running(model, limits) as url:
        text = "Profit rose " + ROCKETS * 10
        assert len(clf.codec.prompt_ids(text)) > one + 10
        message = assert_error(post(url, ["Profit rose .", text]), 422, "invalid", "texts.1")
        assert f"the limit of {one + 10} tokens per text" in message
        message = assert_error(post(url, ["Profit rose ."] * 4), 413, "too_large", "texts")
        assert f"{3 * one + 5} tokens" in message
        assert model.calls == []
        r = post(url, ["Profit rose ."] * 3)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3


def test_texts_must_fit_the_models_context(clf):
    context = clf.model.config.max_position_embeddings
    longest = max(len(ids) for ids in clf.codec.label_ids)
    limits = Limits(max_chars=100_000, max_tokens=100_000, max_request_tokens=10**6)
    model = Gated(clf, gate=False)
    with running(model, limits) as url:
        info = httpx.get(f"{url}/v1/model").json()
        assert info["limits"]["max_tokens"] == context - longest and info["context"] == context
        fits = "Profit rose . " * 200
        while len(clf.codec.prompt_ids(fits)) > context - longest:
            fits = fits[:-14]
        assert post(url, [fits]).status_code == 200
        message = assert_error(post(url, [fits + "Profit rose . " * 4]), 422, "invalid", "texts.0")
        assert f"context of {context} tokens" in message
        assert len(model.calls) == 1


def test_chunked_body_is_refused_while_it_streams_in(server):
    """No Content-Length: the 413 comes once max_body (4,000) bytes are in, before the body ends."""
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b'{"texts": ["' + b"y" * 988
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        for _ in range(4):  # 5,000 bytes in all; the body never ends (no 0-length chunk)
            sock.sendall(b"%x\r\n%s\r\n" % (1000, b"y" * 1000))
        response = HTTPResponse(sock)
        response.begin()  # raises socket.timeout if the server waits for the rest of the body
        assert response.status == 413
        body = json.loads(response.read())
    assert body["error"]["type"] == "too_large" and body["error"]["field"] == "body"
    assert "limit of 4000" in body["error"]["message"]

    # a chunked body under the limit is served as before
    def chunks():
        yield b'{"texts": '
        yield b'["Profit rose ."]}'

    r = httpx.post(
        f"{server}/v1/classify", content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


# ---- one bad text fails only its own request ----


def test_lone_surrogate_fails_only_its_request(clf):
    model = Gated(clf)
    with running(model, Limits()) as url:

        async def go():
            async with httpx.AsyncClient(timeout=30) as http:
                first = asyncio.ensure_future(
                    http.post(f"{url}/v1/classify", json={"texts": ["Profit rose ."]})
                )
                await asyncio.to_thread(wait_until, lambda: len(model.calls) == 1)
                bad = '{"texts": ["Sales fell .", "\\ud800"]}'  # valid JSON, not encodable text
                rs = [
                    http.post(f"{url}/v1/classify", json={"texts": ["Sales fell ."]}),
                    http.post(
                        f"{url}/v1/classify", content=bad, headers={"content-type": "application/json"}
                    ),
                    http.post(f"{url}/v1/classify", json={"texts": ["Profit rose 2 ."]}),
                ]
                tasks = [asyncio.ensure_future(r) for r in rs]
                await asyncio.sleep(0.3)
                model.release()
                return [await first] + [await t for t in tasks]

        first, good1, bad, good2 = asyncio.run(go())
    assert first.status_code == good1.status_code == good2.status_code == 200
    assert "surrogate" in assert_error(bad, 422, "invalid", "texts.1")
    assert all("\ud800" not in t for call in model.calls for t in call)


def test_a_failing_batch_is_retried_request_by_request(clf):
    model = Gated(clf)
    with running(model, Limits()) as url:

        async def go():
            async with httpx.AsyncClient(timeout=30) as http:
                first = asyncio.ensure_future(
                    http.post(f"{url}/v1/classify", json={"texts": ["Profit rose ."]})
                )
                await asyncio.to_thread(wait_until, lambda: len(model.calls) == 1)
                texts = [["Sales fell ."], ["BOOM goes the model", "Sales rose ."], ["Profit fell ."]]
                tasks = [
                    asyncio.ensure_future(http.post(f"{url}/v1/classify", json={"texts": ts})) for ts in texts
                ]
                await asyncio.to_thread(wait_until, lambda: httpx.get(f"{url}/health").json()["queued"] == 4)
                model.release()
                return [await first] + [await t for t in tasks]

        first, good1, bad, good2 = asyncio.run(go())
    assert first.status_code == good1.status_code == good2.status_code == 200
    assert [p["label"] for p in good2.json()["predictions"]] == [p["label"] for p in clf(["Profit fell ."])]
    assert "failed" in assert_error(bad, 500, "internal")
    assert len(model.calls[1]) == 4  # one shared pass, then one per request
    assert sorted(map(tuple, model.calls[2:])) == sorted(
        [("Sales fell .",), ("BOOM goes the model", "Sales rose ."), ("Profit fell .",)]
    )


# ---- a bounded queue, timeouts, bounded forward passes ----


def test_full_queue_answers_503_with_retry_after(clf):
    model = Gated(clf)
    with running(model, Limits(max_queue=4)) as url:

        async def go():
            async with httpx.AsyncClient(timeout=30) as http:
                first = asyncio.ensure_future(
                    http.post(f"{url}/v1/classify", json={"texts": ["Profit rose ."]})
                )
                await asyncio.to_thread(wait_until, lambda: len(model.calls) == 1)
                waiting = asyncio.ensure_future(
                    http.post(f"{url}/v1/classify", json={"texts": ["Sales fell ."] * 4})
                )
                await asyncio.to_thread(wait_until, lambda: httpx.get(f"{url}/health").json()["queued"] == 4)
                refused = await http.post(f"{url}/v1/classify", json={"texts": ["Profit fell ."]})
                model.release()
                return await first, await waiting, refused

        first, waiting, refused = asyncio.run(go())
    assert first.status_code == waiting.status_code == 200
    assert "queue is full" in assert_error(refused, 503, "unavailable")
    assert int(refused.headers["retry-after"]) >= 1
    assert all("Profit fell ." not in call for call in model.calls)


def test_a_request_that_waits_too_long_gets_504_and_is_never_computed(clf):
    model = Gated(clf)
    with running(model, Limits(timeout=1.0)) as url:

        async def go():
            async with httpx.AsyncClient(timeout=30) as http:
                first = asyncio.ensure_future(
                    http.post(f"{url}/v1/classify", json={"texts": ["Profit rose ."]})
                )
                await asyncio.to_thread(wait_until, lambda: len(model.calls) == 1)
                start = time.perf_counter()
                late = await http.post(f"{url}/v1/classify", json={"texts": ["never computed"] * 3})
                took = time.perf_counter() - start
                health = (await http.get(f"{url}/health")).json()
                model.release()
                await first
                await asyncio.sleep(0.3)
                return late, took, health

        late, took, health = asyncio.run(go())
    assert "1 s" in assert_error(late, 504, "timeout")
    assert took < 5
    assert health["queued"] == 0  # its texts left the queue
    assert all("never computed" not in call for call in model.calls)


def test_forward_passes_hold_at_most_max_batch_texts(clf):
    model = Gated(clf, gate=False)
    texts = [f"Profit rose {i} ." for i in range(5)]
    with running(model, Limits(max_batch=2)) as url:
        r = post(url, texts)
        assert r.status_code == 200
        assert [p["label"] for p in r.json()["predictions"]] == [p["label"] for p in clf(texts)]

        async def burst():
            async with httpx.AsyncClient(timeout=30) as http:
                return await asyncio.gather(
                    *(http.post(f"{url}/v1/classify", json={"texts": texts[:3]}) for _ in range(3))
                )

        assert all(r.status_code == 200 for r in asyncio.run(burst()))
    assert max(len(c) for c in model.calls) <= 2
    assert sum(len(c) for c in model.calls) == 5 + 9


# ---- shutdown ----


def test_sigterm_stops_a_busy_server_promptly(tiny_model_dir, clf, tmp_path):
    """24 clients queue some 800 long texts (many seconds of forward passes); on SIGTERM the waiting
    requests get 503 and the server exits after the pass in flight, not after the queue drains."""
    text = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 . " * 3
    per_request = min(48, 16000 // len(clf.codec.prompt_ids(text)))  # under the default token limits
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "finsent", "serve", "--model", str(tiny_model_dir), "--dtype", "float32"]
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            cmd + ["--port", str(port), "--max-batch", "16", "--max-queue", "2000"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    statuses: list = []
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.time() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)

        def client():
            try:
                statuses.append(post(url, [text] * per_request, timeout=60).status_code)
            except httpx.HTTPError as e:  # a connection closed on shutdown is an answer too
                statuses.append(type(e).__name__)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(24)]
        for t in threads:
            t.start()
        wait_until(lambda: httpx.get(f"{url}/health", timeout=5).json()["batches"] >= 1, 60)
        assert httpx.get(f"{url}/health", timeout=5).json()["queued"] > 10 * per_request
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.perf_counter() - start
        for t in threads:
            t.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert took < 5, f"the server took {took:.1f} s to stop"
    assert len(statuses) == 24 and statuses.count(503) >= 10, statuses


def served_config(clf, monkeypatch, limits: Limits) -> dict:
    """The keyword arguments `finsent serve` gives uvicorn.Config (the server itself is not started)."""
    import uvicorn

    from finsent.serving.app import serve

    seen = {}
    real = uvicorn.Config.__init__

    def config(self, app, **kw):
        seen.update(kw)
        real(self, app, **kw)

    monkeypatch.setattr(uvicorn.Config, "__init__", config)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: None)
    serve(clf, limits=limits)
    return seen


def test_the_shutdown_backstop_outlasts_a_requests_own_timeout(clf, monkeypatch):
    """SIGTERM answers the pass in flight: uvicorn's backstop must not cancel it before the request's own
    --timeout would have answered 504 (a 5 s backstop left a slow pass's client with no answer)."""
    assert served_config(clf, monkeypatch, Limits(timeout=42.0))["timeout_graceful_shutdown"] > 42.0


# ---- what the service shows ----


def test_model_is_named_without_the_servers_paths(server, tiny_model_dir):
    info = httpx.get(f"{server}/v1/model").json()
    assert info["model"] == tiny_model_dir.name
    parent = str(tiny_model_dir.parent)
    for path in ("/v1/model", "/", "/openapi.json", "/health"):
        assert parent not in httpx.get(f"{server}{path}").text, path


def test_every_error_has_the_one_shape(server):
    assert_error(httpx.get(f"{server}/nope"), 404, "not_found")
    r = httpx.get(f"{server}/v1/classify")
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]
    bad = httpx.post(f"{server}/v1/classify", content="{", headers={"content-type": "application/json"})
    assert_error(bad, 400, "bad_request", "body")
    assert_error(post(server, ["x"] * 9), 413, "too_large", "texts")
    assert_error(post(server, [""]), 422, "invalid", "texts.0")
    assert_error(httpx.post(f"{server}/v1/classify", json={"texts": [1]}), 422, "invalid", "texts.0")


def test_openapi_declares_the_error_model(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    schema = spec["components"]["schemas"]["ErrorResponse"]
    assert schema["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert set(detail["properties"]) == {"code", "type", "message", "field"}
    responses = spec["paths"]["/v1/classify"]["post"]["responses"]
    for code in ("400", "404", "405", "413", "422", "500", "503", "504"):
        ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorResponse", code
    assert "HTTPValidationError" not in json.dumps(spec)


def test_health_answers_head_and_says_when_the_server_is_shutting_down(clf):
    from fastapi.testclient import TestClient

    from finsent.serving.app import create_app

    app = create_app(clf)
    with TestClient(app) as client:
        assert client.head("/health").status_code == 200  # curl -I, load balancers
        assert client.get("/health").json()["status"] == "ok"
        app.state.batcher.begin_shutdown()
        for _ in range(50):  # begin_shutdown hands the close to the server's loop
            if app.state.batcher.closed:
                break
            time.sleep(0.01)
        answer = client.get("/health")
        assert answer.status_code == 503 and answer.json()["status"] == "shutting down"


def test_a_large_request_takes_turns_with_the_requests_behind_it():
    """One request within every limit (16 texts of about 1,000 tokens) was one micro-batch that held the
    model for 53 s on 2 cores: a short request behind it got 504 after 30 s. Micro-batches now hold at
    most --max-batch-tokens, and a request that does not fit goes on behind the others; a request that
    timed out is not scored further."""
    import pytest

    from finsent.serving.batcher import MicroBatcher
    from finsent.serving.errors import ServeError

    calls: list[list[str]] = []

    def model(texts):
        calls.append(list(texts))
        time.sleep(0.05 * len(texts))
        return [t.upper() for t in texts]

    async def go():
        b = MicroBatcher(model, max_batch=64, max_batch_tokens=2000)
        b.start()
        big = asyncio.ensure_future(b.classify([f"big{i}" for i in range(8)], [1000] * 8, timeout=30))
        await asyncio.sleep(0.01)
        small = await b.classify(["small"], [20], timeout=30)
        assert not big.done()  # answered while the large request still had texts to go
        assert await big == [f"BIG{i}" for i in range(8)]
        # a large request that times out stops using the model after its micro-batch in flight
        calls.clear()
        with pytest.raises(ServeError, match="no answer within"):
            await b.classify([f"late{i}" for i in range(8)], [1000] * 8, timeout=0.15)
        await asyncio.sleep(0.5)
        await b.stop()
        return small

    assert asyncio.run(go()) == ["SMALL"]
    assert sum(len(c) for c in calls) <= 4  # at most two micro-batches of two, not all 8 texts


def test_connections_that_never_finish_their_headers_are_closed(clf):
    """Slowloris: connections that send part of a header, or trickle it, were held forever (400 of them
    starved a good client). After --header-timeout they are closed; a good client is answered meanwhile,
    and a request whose headers arrived is not cut off by the deadline."""
    limits = Limits(header_timeout=1.0)
    with running(clf, limits) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for s in idle:
            s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
        trickle = socket.create_connection(("127.0.0.1", port))
        good = httpx.post(f"{url}/v1/classify", json={"texts": ["Profit rose ."]}, timeout=10)
        assert good.status_code == 200
        start, cut = time.time(), None
        while cut is None and time.time() - start < 5:  # a byte every 0.2 s does not move the deadline
            try:
                trickle.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                cut = time.time() - start
            time.sleep(0.2)
        assert cut is not None and 0.8 < cut < 2.5, cut
        for s in [*idle, trickle]:
            s.settimeout(2)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""  # closed by the server
            s.close()
        # the deadline counts from a connection's opening or its last answer, never a request in flight
        with httpx.Client(timeout=10) as client:
            for _ in range(2):
                assert client.post(f"{url}/v1/classify", json={"texts": ["Sales fell ."]}).status_code == 200
                time.sleep(0.6)


def test_serve_runs_uvicorn_with_the_deadline_and_a_connection_limit(clf, monkeypatch):
    seen = served_config(clf, monkeypatch, Limits(max_connections=77))
    assert seen["limit_concurrency"] == 77 and seen["http"].__name__ == "HeaderDeadline"
