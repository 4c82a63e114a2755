"""Rate limits: requests per minute, tokens per minute and a concurrency cap, all at once.

Each (endpoint, key) pair has its own :class:`RateBucket`. Rates are paced, not burst:
a request is granted the time slot after the previous one (the virtual scheduling of
GCRA), so sends are spread evenly over the minute and a request larger than a second's
worth of tokens still goes through. Bucket state is plain floats, so it lives across
``generate`` calls and event loops; the concurrency cap is a semaphore made per run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

MAX_PAUSE_SECONDS = 60.0


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters a token, as BPE vocabularies give
    English): no encoding to download, and every reply corrects it with real usage."""
    return (len(text) + 3) // 4


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list):
        return sum(
            estimate_tokens(part["text"]) if isinstance(part, dict) and isinstance(part.get("text"), str)
            else estimate_tokens(json.dumps(part, default=str))
            for part in content
        )
    return estimate_tokens(json.dumps(content, default=str))


def estimate_request_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens plus the completion budget, as providers count them against TPM."""
    if "messages" in body:
        prompt = sum(4 + _content_tokens(m.get("content")) for m in body["messages"])
        prompt += _content_tokens(body.get("system"))
    else:
        prompt = _content_tokens(body.get("prompt"))
    options = body.get("options") or {}
    budget = body.get("max_tokens") or body.get("max_completion_tokens") or options.get("num_predict") or 0
    n = body.get("n") or 1
    return prompt + int(budget) * int(n) if isinstance(budget, int) and isinstance(n, int) else prompt


class _Pacer:
    """Grants costs at ``per_minute`` units a minute, each after the one before."""

    def __init__(self, per_minute: float) -> None:
        self._seconds_per_unit = 60.0 / per_minute
        self._next = 0.0

    def reserve(self, cost: float, now: float) -> float:
        start = max(self._next, now)
        self._next = start + cost * self._seconds_per_unit
        return start

    def correct(self, delta: float) -> None:
        """Move later grants by the difference between real and estimated cost."""
        self._next += delta * self._seconds_per_unit


class RateBucket:
    """The limits of one (endpoint, key) pair."""

    def __init__(
        self,
        max_requests_per_minute: float | None,
        max_tokens_per_minute: float | None,
        max_concurrent_requests: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrent_requests = max_concurrent_requests
        self._requests = _Pacer(max_requests_per_minute) if max_requests_per_minute else None
        self._tokens = _Pacer(max_tokens_per_minute) if max_tokens_per_minute else None
        self._clock = clock
        self._paused_until = 0.0

    def reserve(self, tokens: int) -> float:
        """The time at which a request of ``tokens`` may be sent."""
        now = max(self._clock(), self._paused_until)
        start = now
        if self._requests:
            start = max(start, self._requests.reserve(1, now))
        if self._tokens:
            start = max(start, self._tokens.reserve(tokens, now))
        return start

    def settle(self, estimated: int, actual: int | None) -> None:
        if self._tokens and actual is not None:
            self._tokens.correct(actual - estimated)

    def pause(self, seconds: float) -> None:
        """Hold every send of this bucket for ``seconds`` (a 429 said so)."""
        until = self._clock() + min(max(seconds, 0.0), MAX_PAUSE_SECONDS)
        self._paused_until = max(self._paused_until, until)

    async def wait_turn(self, tokens: int) -> None:
        """Sleep until a request of ``tokens`` may go, re-checking pauses that began meanwhile."""
        import asyncio

        while True:
            delay = self.reserve(tokens) - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._paused_until <= self._clock():
                return


class RateLimiter:
    """The buckets of one AsyncLLM, keyed by (endpoint, key fingerprint)."""

    def __init__(
        self,
        max_requests_per_minute: float | None,
        max_tokens_per_minute: float | None,
        max_concurrent_requests: int,
    ) -> None:
        self._limits = (max_requests_per_minute, max_tokens_per_minute, max_concurrent_requests)
        self._buckets: dict[tuple[str, str], RateBucket] = {}

    def bucket(self, endpoint: str, key_fingerprint: str) -> RateBucket:
        key = (endpoint, key_fingerprint)
        if key not in self._buckets:
            self._buckets[key] = RateBucket(*self._limits)
        return self._buckets[key]
