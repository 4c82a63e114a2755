"""The rate limiter, on a fake clock: no sleeping, no timing assertions."""

from __future__ import annotations

import itertools

from dataformer_nb.limits import RateBucket, estimate_request_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_are_spread_evenly() -> None:
    bucket = RateBucket(max_requests_per_minute=1200, max_tokens_per_minute=None,
                        max_concurrent_requests=8, clock=Clock())
    starts = [bucket.reserve(1) for _ in range(60)]
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(starts)}
    assert gaps == {0.05} and starts[0] == 100.0


def test_rpm_and_tpm_hold_together() -> None:
    bucket = RateBucket(max_requests_per_minute=60, max_tokens_per_minute=600,
                        max_concurrent_requests=8, clock=Clock())
    # 100 tokens at 10 tokens/s: tokens bind (10 s apart), not requests (1 s apart)
    starts = [bucket.reserve(100) for _ in range(3)]
    assert [s - 100 for s in starts] == [0.0, 10.0, 20.0]
    small = RateBucket(60, 600, 8, clock=Clock())
    starts = [small.reserve(1) for _ in range(3)]  # now requests bind
    assert [s - 100 for s in starts] == [0.0, 1.0, 2.0]


def test_real_usage_corrects_the_token_estimate() -> None:
    bucket = RateBucket(None, 600, 8, clock=Clock())
    bucket.reserve(100)
    bucket.settle(estimated=100, actual=40)
    assert bucket.reserve(1) - 100 == 4.0


def test_a_pause_holds_only_its_own_bucket() -> None:
    clock = Clock()
    limited, other = RateBucket(None, None, 8, clock=clock), RateBucket(None, None, 8, clock=clock)
    limited.pause(2.5)
    assert limited.reserve(1) == 102.5 and other.reserve(1) == 100.0
    limited.pause(10**6)
    assert limited.reserve(1) == 160.0  # Retry-After is capped


def test_token_estimate_counts_prompt_and_completion_budget() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100, "n": 2}
    assert estimate_request_tokens(body) == 4 + 10 + 200
    assert estimate_request_tokens({"prompt": "abcd", "options": {"num_predict": 5}}) == 6
