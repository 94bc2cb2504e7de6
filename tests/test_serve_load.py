"""Load test: a real `ast-audio serve` on 127.0.0.1 answers a minute of mixed good, bad, oversized and amplifying
requests from 16 concurrent clients: every answer is the expected status (no 5xx), the log has no traceback, the
good requests stay within a stated factor of their idle latency and the server's memory stays within a stated
bound. Slow (about 80 s); CI runs it. `pytest -s` prints the figures.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf

from serve_helpers import run_server, save_tiny_checkpoint, write_pattern

CONCURRENCY = 16
DURATION_S = 60.0
IDLE_REQUESTS = 20
# The server under test: small enough limits that the oversized and amplifying requests cross them cheaply.
MAX_UPLOAD_MB = 1
MAX_DURATION_S = 30
MAX_WINDOWS = 100
# Good requests' p99 latency under load may be at most this many times their median latency on the idle server.
# 16 clients share the model in fair turns, so a good request waits at most one turn of each of the other 15; but
# another client's turn is a forward pass over up to 8 windows (long uploads, events) or an explanation, not the good
# request's single short window, so one turn can cost up to ~8 good requests: 8 x 16. Measured p99: 5x to 64x,
# depending on what else ran on the machine; the first-come-first-served service let one amplifying request hold a
# 1 s clip back for 39 s (over 6000x).
P99_FACTOR = 8.0 * CONCURRENCY
# The server's resident memory may grow by at most RSS_GROWTH_MB over the run (after a single-client warm-up):
# 16 requests at once each hold an upload, a decoded clip and features, and each worker thread gets its own
# malloc arena (measured: +140 MiB in the first 5 s, then flat within +-20 MiB; +172 to +187 MiB in all). Over
# the second half of the run it may grow by at most RSS_CREEP_MB: clips and answers are freed, not accumulated.
RSS_GROWTH_MB = 320.0
RSS_CREEP_MB = 64.0


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: how to send it and the status it must get."""

    name: str
    weight: float
    status: int
    endpoint: str = "/v1/tag"
    file: str | None = "good"
    data: dict | None = None
    headers: dict | None = None
    content_type: str = "audio/wav"


KINDS = (
    Kind("good tag", 6, 200),
    Kind("good events", 2, 200, endpoint="/v1/events", data={"threshold": "0.4"}),
    Kind("good explain", 0.5, 200, endpoint="/v1/explain"),
    Kind("heavy tag (96 windows)", 1, 200, file="long", data={"window_s": "1.0", "hop_s": "0.2"}),
    Kind("corrupt bytes", 1, 422, file="corrupt"),
    Kind("text file", 1, 415, content_type="text/plain"),
    Kind("top_k=0", 1, 422, data={"top_k": "0"}),
    Kind("window_s=1e308", 1, 422, endpoint="/v1/events", data={"window_s": "1e308"}),
    Kind("foreign Host", 1, 400, headers={"Host": "evil.example"}),
    Kind("foreign Origin", 1, 403, headers={"Origin": "http://evil.example"}),
    Kind("body over max_upload_mb", 1, 413, file="big"),
    Kind("audio over max_duration_s", 1, 422, file="over_duration"),
    Kind("hop_s=0.001", 1, 422, data={"hop_s": "0.001"}),
    Kind("too many windows", 1, 422, file="long", data={"window_s": "0.1", "hop_s": "0.01"}),
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("load")
    over = folder / "over.wav"
    sf.write(str(over), np.zeros((MAX_DURATION_S + 10) * 8000, dtype=np.float32), 8000, subtype="PCM_16")
    out = {"good": write_pattern(folder / "good.wav", seconds=3.0).read_bytes(),
           "long": write_pattern(folder / "long.wav", seconds=20.0).read_bytes(),  # 640 kB
           "over_duration": over.read_bytes(),  # 640 kB, under the size limit
           "corrupt": np.random.default_rng(0).bytes(20000),
           "big": np.random.default_rng(1).bytes(int(1.2 * MAX_UPLOAD_MB * 2**20))}
    assert len(out["long"]) < MAX_UPLOAD_MB * 2**20 and len(out["over_duration"]) < MAX_UPLOAD_MB * 2**20
    return out


def send(client: httpx.Client, url: str, kind: Kind, files: dict[str, bytes]) -> tuple[int, float]:
    """(status, seconds) of one request of `kind`."""
    upload = {"file": ("clip.wav", files[kind.file], kind.content_type)} if kind.file else None
    start = time.monotonic()
    response = client.post(url + kind.endpoint, files=upload, data=kind.data, headers=kind.headers)
    return response.status_code, time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


@pytest.mark.slow
def test_mixed_load(tmp_path, files):
    checkpoint = save_tiny_checkpoint(tmp_path / "model")
    good = KINDS[0]
    with run_server(checkpoint, "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-duration-s", str(MAX_DURATION_S),
                    "--max-windows", str(MAX_WINDOWS)) as server:
        process = psutil.Process(server.process.pid)
        with httpx.Client(timeout=300) as client:
            for kind in KINDS:  # warm-up: every code path once, each with the status it must get
                assert send(client, server.url, kind, files)[0] == kind.status, kind.name
            idle = [send(client, server.url, good, files) for _ in range(IDLE_REQUESTS)]
        assert all(status == 200 for status, _ in idle)
        idle_latency = [seconds for _, seconds in idle]
        rss_before = process.memory_info().rss

        results: list[tuple[Kind, int, float]] = []
        failures: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + DURATION_S

        def worker(seed: int) -> None:
            chooser = random.Random(seed)
            with httpx.Client(timeout=300) as client:
                while time.monotonic() < deadline:
                    kind = chooser.choices(KINDS, weights=[k.weight for k in KINDS])[0]
                    try:
                        status, seconds = send(client, server.url, kind, files)
                    except httpx.HTTPError as exc:  # a refused connection or a cut answer is a failure too
                        with lock:
                            failures.append(f"{kind.name}: {type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        results.append((kind, status, seconds))

        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        peak_rss = rss_halfway = rss_before
        while any(thread.is_alive() for thread in threads):
            rss = process.memory_info().rss
            peak_rss = max(peak_rss, rss)
            if time.monotonic() < deadline - DURATION_S / 2:
                rss_halfway = rss
            time.sleep(0.2)
        for thread in threads:
            thread.join()
        rss_after = process.memory_info().rss
    log = server.output()

    by_status = Counter(status for _, status, _ in results)
    wrong = Counter(f"{kind.name}: {status}" for kind, status, _ in results if status != kind.status)
    loaded = [seconds for kind, _, seconds in results if kind is good]
    growth_mb, creep_mb = (rss_after - rss_before) / 2**20, (rss_after - rss_halfway) / 2**20
    print(f"\n{len(results)} requests in {DURATION_S:g} s from {CONCURRENCY} clients; by status {dict(by_status)}")
    print("by kind: " + ", ".join(f"{name} {count}" for name, count in Counter(k.name for k, _, _ in results).items()))
    print(f"good /v1/tag latency: idle p50 {percentile(idle_latency, 50) * 1000:.0f} ms, p99 "
          f"{percentile(idle_latency, 99) * 1000:.0f} ms ({len(idle_latency)} requests); under load p50 "
          f"{percentile(loaded, 50) * 1000:.0f} ms, p99 {percentile(loaded, 99) * 1000:.0f} ms ({len(loaded)} "
          f"requests); load p99 / idle p50 = {percentile(loaded, 99) / percentile(idle_latency, 50):.1f}x, "
          f"allowed {P99_FACTOR:g}x")
    print(f"server RSS: {rss_before / 2**20:.0f} MiB after warm-up, {rss_halfway / 2**20:.0f} MiB halfway, peak "
          f"{peak_rss / 2**20:.0f} MiB, {rss_after / 2**20:.0f} MiB at the end: growth {growth_mb:+.0f} MiB "
          f"(allowed {RSS_GROWTH_MB:g}), second half {creep_mb:+.0f} MiB (allowed {RSS_CREEP_MB:g})")

    assert not failures, failures[:5]
    assert not wrong, dict(wrong)
    assert not any(status >= 500 for status in by_status)
    assert "Traceback" not in log, log[-3000:]
    assert len(loaded) >= 20, "too few good requests to measure"
    assert {kind.name for kind, _, _ in results} == {kind.name for kind in KINDS}, "a kind was never sent"
    assert percentile(loaded, 99) <= P99_FACTOR * percentile(idle_latency, 50)
    assert growth_mb <= RSS_GROWTH_MB and creep_mb <= RSS_CREEP_MB
