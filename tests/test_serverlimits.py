"""Reading rate-limit headers in every dialect the supported providers send."""

from __future__ import annotations

import datetime
import time

import httpx
import pytest

from dataformer_nb.serverlimits import DAY, MINUTE, Quota, read


def test_openai_headers_give_a_per_minute_quota_for_requests_and_tokens() -> None:
    limits = read(httpx.Headers({
        "x-ratelimit-limit-requests": "300", "x-ratelimit-remaining-requests": "299",
        "x-ratelimit-reset-requests": "200ms", "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984", "x-ratelimit-reset-tokens": "6m0s",
    }), "openai")
    assert limits is not None and limits.dialect == "openai"
    assert limits.requests == Quota(300, 299, 0.2, MINUTE) and limits.requests.rate == 5
    assert limits.tokens == Quota(150000, 149984, 360.0, MINUTE)


def test_groqs_request_limit_is_per_day() -> None:
    headers = httpx.Headers({"x-ratelimit-limit-requests": "14400", "x-ratelimit-remaining-requests": "14370",
                             "x-ratelimit-reset-requests": "2m59.56s"})
    limits = read(headers, "groq")
    assert limits is not None and limits.requests == Quota(14400, 14370, pytest.approx(179.56), DAY)


def test_cerebras_names_the_window_in_the_header() -> None:
    limits = read(httpx.Headers({"x-ratelimit-limit-requests-day": "1000",
                                 "x-ratelimit-remaining-requests-day": "998",
                                 "x-ratelimit-remaining-tokens-minute": "5000"}), "")
    assert limits is not None and limits.requests == Quota(1000, 998, None, DAY)
    assert limits.tokens == Quota(None, 5000, None, None)


@pytest.mark.parametrize(("value", "seconds"), [("1s", 1.0), ("6m0s", 360.0), ("59.9s", 59.9), ("20ms", 0.02),
                                                 ("1h2m3s", 3723.0), ("7", 7.0)])
def test_openai_reset_durations(value: str, seconds: float) -> None:
    limits = read({"x-ratelimit-remaining-requests": "1", "x-ratelimit-limit-requests": "2",
                   "x-ratelimit-reset-requests": value})
    assert limits is not None and limits.requests is not None
    assert limits.requests.reset == pytest.approx(seconds)


def test_together_quotas_are_per_second() -> None:
    limits = read(httpx.Headers({"x-ratelimit-limit": "10", "x-ratelimit-remaining": "9",
                                 "x-ratelimit-reset": "1", "x-tokenlimit-limit": "3333",
                                 "x-tokenlimit-remaining": "3000"}), "together")
    assert limits is not None and limits.dialect == "together"
    assert limits.requests == Quota(10, 9, 1.0, 1.0) and limits.requests.rate == 10
    assert limits.tokens == Quota(3333, 3000, None, 1.0)


def test_openrouters_reset_is_an_epoch_in_milliseconds() -> None:
    reset_ms = str(int((time.time() + 30) * 1000))
    limits = read(httpx.Headers({"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "5",
                                 "X-RateLimit-Reset": reset_ms}), "openrouter")
    assert limits is not None and limits.requests is not None
    assert limits.requests.window is None and 28 < limits.requests.reset <= 30  # type: ignore[operator]


def test_anthropic_headers_reset_in_rfc3339() -> None:
    reset = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=20)).isoformat()
    limits = read(httpx.Headers({
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": reset.replace("+00:00", "Z"),
        "anthropic-ratelimit-input-tokens-limit": "40000", "anthropic-ratelimit-input-tokens-remaining": "39000",
    }), "anthropic")
    assert limits is not None and limits.dialect == "anthropic"
    assert limits.requests is not None and limits.requests.limit == 50 and limits.requests.window == MINUTE
    assert 18 < limits.requests.reset <= 20  # type: ignore[operator]
    assert limits.tokens == Quota(40000, 39000, None, MINUTE)


def test_ietf_structured_fields_and_the_earlier_drafts() -> None:
    new = read(httpx.Headers({"RateLimit-Policy": '"default";q=100;w=60', "RateLimit": '"default";r=50;t=30'}))
    assert new is not None and new.requests == Quota(100, 50, 30.0, 60.0)
    old = read(httpx.Headers({"RateLimit-Limit": "100", "RateLimit-Remaining": "7", "RateLimit-Reset": "12",
                              "RateLimit-Policy": "100;w=60"}))
    assert old is not None and old.requests == Quota(100, 7, 12.0, 60.0)
    bytes_quota = read(httpx.Headers({"RateLimit-Policy": '"b";q=1000;w=1;qu="content-bytes"',
                                      "RateLimit": '"b";r=5;t=1'}))
    assert bytes_quota is None  # not a quota of requests


@pytest.mark.parametrize("headers", [
    {}, {"content-type": "application/json"},
    {"x-ratelimit-remaining-requests": "lots"}, {"x-ratelimit-remaining-requests": "nan"},
    {"x-ratelimit-remaining-requests": "-3"}, {"anthropic-ratelimit-requests-remaining": ""},
    {"RateLimit": "garbage;;;=="}, {"x-ratelimit-remaining": "inf"},
])
def test_missing_or_garbled_headers_teach_nothing(headers: dict[str, str]) -> None:
    assert read(httpx.Headers(headers), "openai") is None


def test_garbled_parts_are_dropped_and_the_rest_kept() -> None:
    limits = read(httpx.Headers({"x-ratelimit-limit-requests": "many", "x-ratelimit-remaining-requests": "10",
                                 "x-ratelimit-reset-requests": "soon"}))
    assert limits is not None and limits.requests == Quota(None, 10, None, None)
    contradiction = read(httpx.Headers({"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "10"}))
    assert contradiction is not None and contradiction.requests == Quota(None, 10, None, None)
