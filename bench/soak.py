"""Soak test of `finsent serve` on the loopback: steady good clients beside hostile ones, RSS sampled.

    .venv/bin/python -m bench.soak --minutes 30 --model smollm2-135m --out bench/results/soak

Starts the real server (`python -m finsent.cli serve`) on a free 127.0.0.1 port and waits for /health.
Good clients (--clients) each send 1-8 of the notebooks' test sentences (all-data.csv from
$FINSENT_DATA_DIR, read by finsent's data layer) every --interval seconds; without --interval the rate is
chosen by measuring first: the clients send back to back for --calibrate seconds, and the interval is
set so that they ask for --load (0.55) of the sentences a second the server managed. Hostile clients,
one of each kind every --hostile-every seconds, never more than one of a kind at a time, each bounded in
time: a Content-Length over --max-body, a chunked body streaming past it, malformed JSON, a wrong shape,
headers trickled a line a second (slowloris) then abandoned, a valid body trickled (must still get 200),
a body cut off mid-request, and a valid request whose answer is never read (the last two are
scored: the rate of good clients leaves room for them). Only 127.0.0.1 is contacted.

The server's RSS (VmRSS of /proc/PID/status) is sampled every --rss-every seconds. Each minute prints
a progress line; at the end the server must still answer /health, then gets SIGTERM (SIGKILL after 15 s).
Written to --out: soak.json (per-minute latency summaries, errors, hostile outcomes, the RSS series),
soak.md and rss.png. Extra environment for the server: --env NAME=VALUE (e.g. MALLOC_ARENA_MAX=2,
LD_PRELOAD=..., FINSENT_MALLOC_TRIM_EVERY=0 to measure without the server's heap trimming).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

from bench.common import DATA, RESULTS
from bench.soak_clients import EXPECTED, HOST, hostile


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def summary(lat: list[float]) -> dict:
    ms = lambda x: None if x is None else round(x * 1000, 1)  # noqa: E731
    return {"n": len(lat), "p50_ms": ms(percentile(lat, 0.5)), "p99_ms": ms(percentile(lat, 0.99))}


def sentences(model: str, data: str, n: int = 400) -> list[str]:
    """The notebooks' test sentences, through finsent's data layer (bench.common.demo_test_split)."""
    from bench.common import demo_test_split

    _, test = demo_test_split(model, data)
    return [e.text for e in test][:n]


# ---------------------------------------------------------------- the soak


class Soak:
    def __init__(self, args, port: int, pid: int, texts: list[str], limits: dict):
        self.args, self.port, self.pid, self.texts, self.limits = args, port, pid, texts, limits
        self.url = f"http://{HOST}:{port}"
        self.t0 = time.monotonic()
        self.good: list[dict] = []  # {t, s, n, status}
        self.hostile: list[dict] = []  # {t, kind, outcome}
        self.rss: list[dict] = []  # {t, rss_mb, load1}
        self.phase = "calibrate"
        self.soak_start = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def good_client(self, i: int, interval: float, until: float) -> None:
        import httpx

        rng = random.Random(self.args.seed * 1000 + i)
        async with httpx.AsyncClient(timeout=120) as http:
            # staggered over the interval, so the clients make a steady stream rather than bursts in step
            next_at = self.now() + interval * i / self.args.clients
            await asyncio.sleep(max(0.0, next_at - self.now()))
            while self.now() < until:
                texts = rng.sample(self.texts, rng.randint(1, 8))
                start = self.now()
                try:
                    r = await http.post(f"{self.url}/v1/classify", json={"texts": texts})
                    ok = r.status_code == 200 and len(r.json()["predictions"]) == len(texts)
                    status = str(r.status_code) if ok or r.status_code != 200 else "bad_answer"
                except Exception as e:  # counted, never hidden
                    status = type(e).__name__
                took, n, phase = self.now() - start, len(texts), self.phase
                self.good.append({"t": start, "s": took, "n": n, "status": status, "phase": phase})
                next_at = max(next_at + interval, self.now()) if interval else self.now()
                await asyncio.sleep(max(0.0, next_at - self.now()))

    async def hostile_loop(self, kind: str, until: float) -> None:
        rng = random.Random(zlib.crc32(kind.encode()) + self.args.seed)  # str hash() changes per process
        await asyncio.sleep(rng.uniform(0, self.args.hostile_every))  # the kinds do not arrive in step
        while self.now() < until:
            start = self.now()
            slow, text = self.args.slow_seconds, rng.choice(self.texts)
            try:
                client = hostile(kind, self.port, self.limits["max_body"], text, slow)
                out = await asyncio.wait_for(client, slow + 150)
            except Exception as e:
                out = type(e).__name__
            self.hostile.append({"t": start, "kind": kind, "outcome": out, "ok": out in EXPECTED[kind]})
            await asyncio.sleep(max(0.0, start + self.args.hostile_every - self.now()))

    async def sampler(self, until: float) -> None:
        while self.now() < until:
            self.rss.append(
                {"t": round(self.now(), 1), "rss_mb": rss_mb(self.pid), "load1": os.getloadavg()[0]}
            )
            await asyncio.sleep(self.args.rss_every)

    async def progress(self, until: float) -> None:
        minute = 0
        while self.now() < until - 1:
            await asyncio.sleep(min(60.0, max(0.0, until - self.now())))
            minute += 1
            m = self.minute_stats(self.now() - 60, self.now())
            print(
                f"[soak] minute {minute}: good {m['n']} requests, p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms, "
                f"errors {m['errors']}; hostile {m['hostile']} ({m['hostile_unexpected']} unexpected); "
                f"RSS {m['rss_mb']} MB; load {m['load1']:.1f}",
                flush=True,
            )

    def minute_stats(self, a: float, b: float) -> dict:
        good = [g for g in self.good if a <= g["t"] < b and g["phase"] == "soak"]
        hos = [h for h in self.hostile if a <= h["t"] < b]
        rss = [r for r in self.rss if a <= r["t"] < b and r["rss_mb"]]
        return summary([g["s"] for g in good if g["status"] == "200"]) | {
            "start_s": round(a - self.soak_start, 1),
            "errors": sum(g["status"] != "200" for g in good),
            "sentences": sum(g["n"] for g in good),
            "hostile": len(hos),
            "hostile_unexpected": sum(not h["ok"] for h in hos),
            "rss_mb": round(rss[-1]["rss_mb"], 1) if rss else None,
            # RSS moves with the pass in flight (activations); the minute's median is the steadier level
            "rss_median_mb": round(percentile([r["rss_mb"] for r in rss], 0.5), 1) if rss else None,
            "load1": percentile([r["load1"] for r in rss], 0.5) or os.getloadavg()[0],
        }

    async def run(self) -> dict:
        import httpx

        args = self.args
        interval = args.interval
        if interval is None:  # measure first: back to back for --calibrate seconds
            until = self.now() + args.calibrate
            await asyncio.gather(
                self.sampler(until), *(self.good_client(i, 0, until) for i in range(args.clients))
            )
            done = [g for g in self.good if g["status"] == "200"]
            capacity = sum(g["n"] for g in done) / max(1e-9, self.now())
            # the hostile clients' valid requests (no_read: 2 texts, slow_body: 1) come out of the budget
            hostile = 3 / args.hostile_every if args.hostile_every > 0 else 0.0
            interval = args.clients * 4.5 / max(0.05 * capacity, args.load * capacity - hostile)
            print(
                f"[soak] capacity {capacity:.2f} sentences/s: interval {interval:.1f} s a client", flush=True
            )
            self.capacity = capacity
        self.interval, self.phase, self.soak_start = interval, "soak", self.now()
        until = self.soak_start + args.minutes * 60
        tasks = [self.sampler(until), self.progress(until)]
        tasks += [self.good_client(i, interval, until) for i in range(args.clients)]
        tasks += [self.hostile_loop(k, until) for k in EXPECTED if args.hostile_every > 0]
        await asyncio.gather(*tasks)
        async with httpx.AsyncClient(timeout=60) as http:
            health = (await http.get(f"{self.url}/health")).status_code
        return self.report(health)

    def report(self, health: int) -> dict:
        args, start = self.args, self.soak_start
        good = [g for g in self.good if g["phase"] == "soak"]
        minutes = [
            self.minute_stats(start + 60 * m, start + 60 * (m + 1)) for m in range(int(args.minutes + 0.999))
        ]
        after = [r for r in self.rss if r["t"] >= start + args.warmup and r["rss_mb"]]
        rss = {}
        if after:
            first, values = after[0]["rss_mb"], [r["rss_mb"] for r in after]
            rss = {
                "start_mb": round(first, 1),
                "end_mb": round(values[-1], 1),
                "max_mb": round(max(values), 1),
                "growth_end_pct": round(100 * (values[-1] / first - 1), 1),
                "growth_max_pct": round(100 * (max(values) / first - 1), 1),
            }
            medians = [
                m["rss_median_mb"] for m in minutes if m["start_s"] >= args.warmup and m["rss_median_mb"]
            ]
            if len(medians) >= 2:  # the level of the last minute against the first whole minute after warm-up
                rss["median_first_mb"], rss["median_last_mb"] = medians[0], medians[-1]
                rss["growth_median_pct"] = round(100 * (medians[-1] / medians[0] - 1), 1)
        errors: dict[str, int] = {}
        for g in good:
            if g["status"] != "200":
                errors[g["status"]] = errors.get(g["status"], 0) + 1
        hostile: dict[str, dict[str, int]] = {}
        for h in self.hostile:
            hostile.setdefault(h["kind"], {}).setdefault(h["outcome"], 0)
            hostile[h["kind"]][h["outcome"]] += 1
        loads = [r["load1"] for r in self.rss if r["t"] >= start]
        return {
            "model": args.model,
            "minutes": args.minutes,
            "clients": args.clients,
            "interval_s": round(self.interval, 2),
            "capacity_sentences_per_s": round(getattr(self, "capacity", 0.0), 3) or None,
            "env": args.env,
            "warmup_s": args.warmup,
            "good": summary([g["s"] for g in good if g["status"] == "200"])
            | {"errors": sum(errors.values()), "error_kinds": errors, "sentences": sum(g["n"] for g in good)},
            "hostile": hostile,
            "hostile_unexpected": sum(not h["ok"] for h in self.hostile),
            "expected": {k: sorted(v) for k, v in EXPECTED.items()},
            "health_at_end": health,
            "rss_after_warmup": rss,
            "load1": {"min": min(loads, default=None), "max": max(loads, default=None)},
            "per_minute": minutes,
            "rss_series": [r | {"t": round(r["t"] - start, 1)} for r in self.rss],
        }


# ---------------------------------------------------------------- server, outputs, CLI


def start_server(args, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "finsent.cli", "serve", "--model", args.model, "--host", HOST]
    cmd += ["--port", str(port), *args.server_arg]
    env = os.environ | dict(e.split("=", 1) for e in args.env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float = 600) -> dict:
    """The server's /v1/model once /health answers (it loads the model first)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode} before answering /health")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return httpx.get(f"{url}/v1/model", timeout=30).json()
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"no /health answer within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finsent.core.fsio import atomic_path

    series = [r for r in report["rss_series"] if r["rss_mb"]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot([r["t"] / 60 for r in series], [r["rss_mb"] for r in series], lw=1.2, label="server RSS")
    ax.axvline(report["warmup_s"] / 60, color="grey", ls="--", lw=1, label="end of warm-up")
    ax.axvline(0, color="grey", ls=":", lw=1, label="soak starts (before: calibration)")
    rss = report["rss_after_warmup"]
    if rss:
        ax.axhline(rss["start_mb"] * 1.1, color="red", ls=":", lw=1, label="+10% over RSS after warm-up")
    g = report["good"]
    ax.set(xlabel="minutes", ylabel="RSS (MB)", ylim=(0, None))
    ax.set_title(
        f"finsent serve soak, {report['model']}: good p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms, "
        f"{g['errors']} errors",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def markdown(r: dict) -> str:
    g, rss = r["good"], r["rss_after_warmup"]
    lines = [
        f"# Soak: finsent serve, {r['model']}, {r['minutes']} minutes",
        "",
        f"{r['clients']} good clients, one request of 1-8 sentences every {r['interval_s']} s each "
        f"(capacity measured first: {r['capacity_sentences_per_s']} sentences/s); server env {r['env'] or 'default'}; "
        f"load average (1 min) {r['load1']['min']:.1f}-{r['load1']['max']:.1f}.",
        "",
        f"- good requests: {g['n']} answered, p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms, errors {g['errors']} "
        f"{g['error_kinds'] or ''}",
        f"- hostile: {sum(sum(v.values()) for v in r['hostile'].values())} clients, "
        f"{r['hostile_unexpected']} with an unexpected outcome; /health at the end: {r['health_at_end']}",
        f"- RSS after {r['warmup_s']} s warm-up: start {rss.get('start_mb')} MB, end {rss.get('end_mb')} MB, "
        f"max {rss.get('max_mb')} MB (end {rss.get('growth_end_pct')}%, max {rss.get('growth_max_pct')}%); "
        f"minute medians {rss.get('median_first_mb')} -> {rss.get('median_last_mb')} MB "
        f"({rss.get('growth_median_pct')}%)",
        "",
        "| hostile kind | outcomes | expected |",
        "|---|---|---|",
        *(f"| {k} | {v} | {', '.join(r['expected'][k])} |" for k, v in sorted(r["hostile"].items())),
        "",
        "| minute | good | p50 ms | p99 ms | errors | hostile (unexpected) | RSS MB (median) | load |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {i + 1} | {m['n']} | {m['p50_ms']} | {m['p99_ms']} | {m['errors']} | {m['hostile']} "
            f"({m['hostile_unexpected']}) | {m['rss_mb']} ({m['rss_median_mb']}) | {m['load1']:.1f} |"
            for i, m in enumerate(r["per_minute"])
        ),
        "",
        "![RSS](rss.png)",
        "",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from finsent.core.registry import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(RESULTS / "soak"))
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--interval", type=float, default=None, help="seconds between a client's requests")
    ap.add_argument("--load", type=float, default=0.55, help="share of measured capacity to ask for")
    ap.add_argument("--calibrate", type=float, default=60.0, help="seconds of back-to-back requests first")
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds of the soak before RSS counts")
    ap.add_argument("--hostile-every", type=float, default=20.0, help="seconds between clients of a kind")
    ap.add_argument("--slow-seconds", type=float, default=15.0, help="how long a slow client trickles")
    ap.add_argument("--rss-every", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server's environment")
    ap.add_argument("--server-arg", action="append", default=[], help="an extra `finsent serve` argument")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from finsent.core.fsio import write_json, write_text

    args = parse(argv)
    out = Path(args.out)
    texts = sentences(args.model, args.data)
    port = free_port()
    proc = start_server(args, port, out / "server.log")
    try:
        info = wait_healthy(proc, f"http://{HOST}:{port}")
        print(f"[soak] server pid {proc.pid} on {HOST}:{port}, RSS {rss_mb(proc.pid):.0f} MB", flush=True)
        report = asyncio.run(Soak(args, port, proc.pid, texts, info["limits"]).run())
    finally:
        code = stop_server(proc)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is -15 either way
    report["server_exit"] = code
    report["clean_shutdown"] = "Application shutdown complete" in (out / "server.log").read_text(
        errors="replace"
    )
    write_json(out / "soak.json", report)
    write_text(out / "soak.md", markdown(report))
    plot(report, out / "rss.png")
    g, rss = report["good"], report["rss_after_warmup"]
    print(
        f"[soak] done: good p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms, errors {g['errors']}; hostile unexpected "
        f"{report['hostile_unexpected']}; RSS {rss}; written to {out}",
        flush=True,
    )
    return (
        0 if g["errors"] == 0 and report["hostile_unexpected"] == 0 and report["health_at_end"] == 200 else 1
    )


if __name__ == "__main__":
    sys.exit(main())
