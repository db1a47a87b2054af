"""Load test of `finsent serve`: 1,000 requests from 16 concurrent clients on loopback, beside a baseline.

    .venv/bin/python -m bench.load --model runs/demo/merged_model
    .venv/bin/python -m bench.load --quick          # 200 requests, embedded base model

Starts the real server in a subprocess on a free loopback port, waits for /health, then sends the same
requests (one PhraseBank sentence each) twice: one at a time (the plain baseline: no micro-batching
possible), then from --concurrency clients at once. For each it prints throughput, p50/p99 latency, the
number of forward passes the micro-batcher used, and errors (which must be zero). Bounded: each run stops
after its requests or 10 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time

from bench.common import DATA
from finsent.core.registry import DEFAULT_MODEL


async def client(url: str, texts: list[str], queue: asyncio.Queue, latencies: list[float], errors: list[str]):
    import httpx

    async with httpx.AsyncClient(timeout=120) as http:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            start = time.perf_counter()
            try:
                r = await http.post(f"{url}/v1/classify", json={"texts": [texts[i % len(texts)]]})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:80]}")
            except Exception as e:  # counted, never hidden
                errors.append(type(e).__name__)
            latencies.append(time.perf_counter() - start)


async def load(url: str, texts: list[str], n: int, concurrency: int):
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(client(url, texts, queue, latencies, errors) for _ in range(concurrency))),
        timeout=600,
    )
    return time.perf_counter() - start, latencies, errors


def _start(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "finsent.cli", "serve", "--model", args.model, "--port", str(port)]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _row(name: str, n: int, seconds: float, lat: list[float], errors: list[str], batches: int) -> str:
    lat = sorted(lat)
    return (
        f"{name:<22} {n / seconds:>10.1f} {statistics.median(lat) * 1000:>8.0f} "
        f"{lat[int(0.99 * (len(lat) - 1))] * 1000:>8.0f} {len(errors):>7} {batches:>8} {n / max(batches, 1):>10.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtype", help="passed to finsent serve (default: its own)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the one-request-at-a-time run")
    args = ap.parse_args()
    n = 200 if args.quick else args.requests

    import httpx

    from finsent.data.readers import read_file

    texts = [e.text for e in read_file(DATA, ["positive", "neutral", "negative"]).examples[:n]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = _start(args, port)
    rows, all_errors = [], []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with status {server.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit("server did not start")
        httpx.post(f"{url}/v1/classify", json={"texts": [texts[0]]}, timeout=120)  # warm-up, not counted
        runs = [("concurrent", args.concurrency)]
        if not args.no_baseline:
            runs.insert(0, ("one at a time", 1))
        for name, concurrency in runs:
            before = httpx.get(f"{url}/health").json()["batches"]
            seconds, lat, errors = asyncio.run(load(url, texts, n, concurrency))
            batches = httpx.get(f"{url}/health").json()["batches"] - before
            label = name if concurrency == 1 else f"{concurrency} concurrent clients"
            rows.append(_row(label, n, seconds, lat, errors, batches))
            all_errors += errors
    finally:
        server.terminate()
        server.wait(30)
    print(f"{n} requests of one sentence each, model {args.model}")
    print(
        f"{'':<22} {'requests/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'passes':>8} {'mean batch':>10}"
    )
    for row in rows:
        print(row)
    if all_errors:
        print("errors:", all_errors[:5])
        sys.exit(1)


if __name__ == "__main__":
    main()
