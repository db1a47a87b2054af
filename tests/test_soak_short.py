"""A short soak (bench/soak.py) of the real `finsent serve` subprocess on the tiny model: good clients at a
measured steady rate beside every kind of hostile client, on 127.0.0.1 only, 45 s of soak."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_soak_short(tiny_model_dir, all_data, tmp_path):
    out = tmp_path / "soak"
    cmd = [sys.executable, "-m", "bench.soak", "--model", str(tiny_model_dir), "--data", str(all_data)]
    cmd += ["--out", str(out), "--minutes", "0.75", "--calibrate", "8", "--warmup", "15", "--rss-every", "2"]
    cmd += ["--hostile-every", "8", "--slow-seconds", "4", "--server-arg=--max-body=20000"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert (out / "soak.json").is_file(), run.stdout[-2000:] + run.stderr[-2000:]
    r = json.loads((out / "soak.json").read_text())

    # good clients: all answered, none failed
    assert r["good"]["n"] >= 10 and r["good"]["errors"] == 0, r["good"]
    # every hostile kind came, several times, and each got what it should (4xx, or a closed connection)
    assert set(r["hostile"]) == set(r["expected"])
    for kind, outcomes in r["hostile"].items():
        assert sum(outcomes.values()) >= 3, (kind, outcomes)
        assert set(outcomes) <= set(r["expected"][kind]), (kind, outcomes)
    assert r["hostile"]["oversized"] == {"413": sum(r["hostile"]["oversized"].values())}
    assert r["hostile_unexpected"] == 0
    # the server still answered /health after all of it, and shut down cleanly on SIGTERM
    assert r["health_at_end"] == 200 and r["clean_shutdown"], r["server_exit"]
    assert run.returncode == 0, run.stdout[-2000:]
    # RSS after warm-up: the tiny model's activations are kilobytes, so what the process holds after
    # warm-up is torch, the tokenizer and the app (~0.5 GB); a leak of even 1 MB/s (a cache or list
    # kept per request, or glibc arenas keeping every freed block) would pass 50 MB in these 45 s,
    # while allocator noise stays within a few MB. 15% of the start, or 50 MB if larger.
    rss = r["rss_after_warmup"]
    assert rss["max_mb"] - rss["start_mb"] < max(0.15 * rss["start_mb"], 50), rss
    assert len(r["rss_series"]) >= 20 and len(r["per_minute"]) == 1
    assert (out / "rss.png").stat().st_size > 10_000 and (out / "soak.md").is_file()


def test_batcher_trims_the_heap_after_passes(monkeypatch):
    import sys

    import pytest

    from finsent.core.errors import FinsentError
    from finsent.serving.app import _trim_every
    from finsent.serving.batcher import MicroBatcher, release_memory

    if sys.platform.startswith("linux"):  # glibc here: the real malloc_trim answers 0 or 1
        assert release_memory()() in (0, 1)
    assert MicroBatcher(len, 4)._trim is None  # off unless asked for
    b = MicroBatcher(lambda texts: [t.upper() for t in texts], 4, trim_every=3600)
    calls = []
    b._trim = lambda: calls.append(1)
    assert b._predict_and_trim(["a"]) == ["A"] and calls == [1]
    assert b._predict_and_trim(["b"]) == ["B"] and calls == [1]  # at most once per trim_every seconds
    monkeypatch.setenv("FINSENT_MALLOC_TRIM_EVERY", "0")
    assert _trim_every() == 0.0
    monkeypatch.setenv("FINSENT_MALLOC_TRIM_EVERY", "often")
    with pytest.raises(FinsentError, match="FINSENT_MALLOC_TRIM_EVERY"):
        _trim_every()
    monkeypatch.delenv("FINSENT_MALLOC_TRIM_EVERY")
    assert _trim_every() == 1.0
