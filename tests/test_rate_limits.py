"""Real providers' rate limits, on a loopback server that enforces them as providers do.

A token bucket per key (a burst, then a steady rate), 429 past it, and the provider's
rate-limit headers on every reply, or none at all. Whatever the dialect, every request must
come back right, none may fail for being rate-limited, and what is sent must never pass the
server's limit by more than its burst.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dataformer_nb import AsyncLLM

from .bench_server import serve, server_stats

RATE = 20.0  # a second: 1,200 requests a minute
BURST = 20.0  # requests the bucket holds
TOKENS_PER_REQUEST = 22  # what the server charges each request below: prompt + max_tokens
N = 70
# Fewer than the burst: with no header to go by, what is in flight when the first 429 comes is
# sent past the limit. Real buckets hold a minute's quota, far more than any concurrency.
CONCURRENCY = 8


@pytest.fixture(params=["openai", "anthropic", "together", "none"])
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


def limited_server(dialect: str, unit: str) -> Iterator[str]:
    scale = 1 if unit == "rpm" else TOKENS_PER_REQUEST
    yield from serve(f"--{unit}", f"{RATE * 60 * scale:g}", "--burst", f"{BURST * scale:g}", "--dialect", dialect)


def llm_for(dialect: str, url: str, cache_dir: object) -> AsyncLLM:
    provider = {"openai": "openai", "anthropic": "anthropic", "together": "together", "none": "openai"}[dialect]
    return AsyncLLM(api_provider=provider, url=f"{url}/v1", api_key="sk-test", cache_dir=cache_dir,
                    max_concurrent_requests=CONCURRENCY, retry_base_delay=0.05, progress=False, verbose=False)


def request(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i:03d}"}], "max_tokens": 20}


def sends_within_limit(stats: dict, scale: float) -> float:
    """The most any stretch of time saw sent (granted or refused), less what the server allows
    in it (its burst and its rate): what the client sent beyond the server's limit."""
    sends = sorted([tuple(x) for x in stats["granted"]] + [tuple(x) for x in stats["rejected"]])
    worst = 0.0
    for i, (start, _) in enumerate(sends):
        total = 0.0
        for end, cost in sends[i:]:
            total += cost
            worst = max(worst, total - (BURST + RATE * (end - start)) * scale)
    return worst


@pytest.mark.parametrize("unit", ["rpm", "tpm"])
def test_every_request_comes_back_within_the_servers_limit(dialect: str, unit: str, cache_dir) -> None:
    scale = 1 if unit == "rpm" else TOKENS_PER_REQUEST
    for url in limited_server(dialect, unit):
        llm = llm_for(dialect, url, cache_dir)
        results = llm.generate([request(i) for i in range(N)])

        assert results.texts == [f"Echo: question {i:03d}" for i in range(N)]
        assert results.summary.failed == 0 and results.summary.sent == N
        stats = server_stats(url, arrivals=True)
        assert len(stats["granted"]) == N
        assert sends_within_limit(stats, scale) <= BURST * scale
        if dialect != "none":
            # told the quota, the client keeps to it; a refusal or two at the edges of the refill at most
            assert len(stats["rejected"]) <= 3, stats["rejected"]
            assert "server limits: " in str(results.summary)
        bucket, = next(iter(llm.limits().values()))
        assert bucket.rate_limited_replies == len(stats["rejected"])


def test_a_batch_within_the_reported_quota_goes_out_at_once(cache_dir) -> None:
    """max_requests_per_minute=60, 10 requests, a server reporting its quota: none is held back
    (benchmarks/ times it: all sent within the first second)."""
    for url in serve("--rpm", "600", "--dialect", "openai"):
        llm = AsyncLLM(api_provider="openai", url=f"{url}/v1", api_key="sk-test", cache_dir=cache_dir,
                       max_requests_per_minute=60, progress=False, verbose=False)
        assert llm.generate([request(0)]).summary.sent == 1  # its reply tells the quota: 599 left
        bucket, = llm._limiter._buckets.values()
        for _ in range(9):
            ticket = bucket.reserve(1)
            assert ticket.start <= time.monotonic()  # granted now, not later
        assert "600 req/min (599 left)" in str(llm.limits())
