"""What servers say of their rate limits, read from the headers of every reply.

Each dialect the supported providers send is parsed into one ``ServerLimits``: a
``Quota`` for requests and one for tokens. Unknown, missing or garbled values are
ignored (a quota is simply not learned), never fatal. Sources:

- OpenAI, DeepInfra, Groq, Cerebras: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
  resets as durations (``1s``, ``6m0s``, ``59.9s``, ``20ms``). Limits are per minute
  (https://platform.openai.com/docs/guides/rate-limits, "Rate limits in headers";
  https://deepinfra.com/docs/advanced/rate-limits) except Groq's request limit, per day
  (https://console.groq.com/docs/rate-limits, "Rate limit headers"). Cerebras adds the window
  to the name (``x-ratelimit-limit-requests-day``).
- Together: ``x-ratelimit-{limit,remaining,reset}`` and ``x-tokenlimit-{limit,remaining}``,
  per second (https://support.together.ai/en/articles/8988956-rate-limits, "Rate limits in
  headers"). OpenRouter sends the same names with ``reset`` as an epoch in milliseconds
  (https://openrouter.ai/docs/api-reference/limits): told apart by size.
- Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens}-{limit,remaining,reset}``,
  resets in RFC 3339, per minute (https://docs.anthropic.com/en/api/rate-limits, "Response headers").
- IETF (draft-ietf-httpapi-ratelimit-headers): ``RateLimit-Policy: "p";q=100;w=60`` with
  ``RateLimit: "p";r=50;t=30``, and the earlier drafts' ``RateLimit-Limit``/``-Remaining``/``-Reset``.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
_WINDOWS = {"second": 1.0, "minute": MINUTE, "hour": HOUR, "day": DAY}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")
_PARAM = re.compile(r"(\w+)\s*=\s*\"?([^;,\"\s]+)\"?")


@dataclass(frozen=True)
class Quota:
    """One limit a server stated: ``limit`` units per ``window`` seconds (None: not stated),
    ``remaining`` when the server answered, whole again ``reset`` seconds later."""

    limit: float | None
    remaining: float | None
    reset: float | None
    window: float | None

    @property
    def rate(self) -> float | None:
        """Units a second the quota refills at, when the server's window is known."""
        return self.limit / self.window if self.limit and self.window else None

    def describe(self, unit: str) -> str:
        """The quota as the summary shows it: ``600 req/min (599 left)``."""
        if self.limit is None:
            return f"{unit}: {_number(self.remaining)} left"
        per = {1.0: "s", MINUTE: "min", HOUR: "h", DAY: "day"}.get(self.window or 0.0)
        return f"{_number(self.limit)} {unit}/{per}" if per else f"{_number(self.limit)} {unit} a window"


@dataclass(frozen=True)
class ServerLimits:
    """The request and token quotas one reply stated (either may be None), and whose dialect."""

    requests: Quota | None
    tokens: Quota | None
    dialect: str


def read(headers: Mapping[str, str], provider: str = "") -> ServerLimits | None:
    """The limits ``headers`` (case-insensitive) state, or None if they state none."""
    for dialect in (_anthropic, _openai, _together, _ietf):
        limits = dialect(headers, provider)
        if limits is not None and (limits.requests or limits.tokens):
            return limits
    return None


def _openai(headers: Mapping[str, str], provider: str) -> ServerLimits | None:
    if "x-ratelimit-remaining-requests" not in headers and "x-ratelimit-remaining-tokens" not in headers:
        return _cerebras(headers)
    request_window = DAY if provider == "groq" else MINUTE
    return ServerLimits(
        _quota(headers, "x-ratelimit-{}-requests", request_window, _duration),
        _quota(headers, "x-ratelimit-{}-tokens", MINUTE, _duration),
        "openai",
    )


def _cerebras(headers: Mapping[str, str]) -> ServerLimits | None:
    found = {}
    for unit in ("requests", "tokens"):
        for window in ("minute", "hour", "day"):
            if f"x-ratelimit-remaining-{unit}-{window}" in headers:
                found[unit] = _quota(headers, f"x-ratelimit-{{}}-{unit}-{window}", _WINDOWS[window], _duration)
                break
    return ServerLimits(found.get("requests"), found.get("tokens"), "openai") if found else None


def _together(headers: Mapping[str, str], provider: str) -> ServerLimits | None:
    if "x-ratelimit-remaining" not in headers and "x-tokenlimit-remaining" not in headers:
        return None
    window = 1.0 if provider == "together" else None
    return ServerLimits(
        _quota(headers, "x-ratelimit-{}", window, _seconds_or_epoch),
        _quota(headers, "x-tokenlimit-{}", window, _seconds_or_epoch),
        "together" if provider == "together" else "x-ratelimit",
    )


def _anthropic(headers: Mapping[str, str], provider: str) -> ServerLimits | None:
    if not any(f"anthropic-ratelimit-{unit}-remaining" in headers for unit in ("requests", "tokens", "input-tokens")):
        return None
    tokens = _quota(headers, "anthropic-ratelimit-tokens-{}", MINUTE, _rfc3339) \
        or _quota(headers, "anthropic-ratelimit-input-tokens-{}", MINUTE, _rfc3339)
    return ServerLimits(_quota(headers, "anthropic-ratelimit-requests-{}", MINUTE, _rfc3339), tokens, "anthropic")


def _ietf(headers: Mapping[str, str], provider: str) -> ServerLimits | None:
    if "ratelimit" in headers:  # draft 08 on: RateLimit: "name";r=50;t=30
        state = _params(headers["ratelimit"])
        policy = _params(headers.get("ratelimit-policy", ""))
        if state.get("qu", policy.get("qu", "requests")) != "requests":
            return None
        window = _number_or_none(policy.get("w"))
        limit = _number_or_none(policy.get("q") or state.get("limit"))
        remaining = _number_or_none(state.get("r") or state.get("remaining"))
        reset = _number_or_none(state.get("t") or state.get("reset"))
        quota = Quota(limit, remaining, reset, window) if remaining is not None else None
        return ServerLimits(quota, None, "ietf")
    if "ratelimit-remaining" in headers:  # drafts up to 07
        window = _number_or_none(_params(headers.get("ratelimit-policy", "")).get("w"))
        return ServerLimits(_quota(headers, "ratelimit-{}", window, _seconds_or_epoch), None, "ietf")
    return None


def _quota(headers: Mapping[str, str], pattern: str, window: float | None,
           parse_reset: Callable[[str], float | None]) -> Quota | None:
    remaining = _number_or_none(headers.get(pattern.format("remaining")))
    if remaining is None:
        return None
    limit = _number_or_none(headers.get(pattern.format("limit")))
    reset_text = headers.get(pattern.format("reset"))
    reset = parse_reset(reset_text) if reset_text else None
    if limit is not None and remaining > limit:
        limit = None  # contradicts itself: trust neither the limit nor its window
    return Quota(limit, remaining, reset, window if limit is not None else None)


def _number_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip().split(",")[0])  # "100, 100;w=60" in some drafts
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _number(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _duration(text: str) -> float | None:
    """``6m0s``, ``59.9s``, ``20ms``, ``1h2m3s`` or plain seconds."""
    text = text.strip()
    plain = _number_or_none(text)
    if plain is not None:
        return plain
    match = _DURATION.fullmatch(text)
    if not match or not text:
        return None
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * HOUR + minutes * MINUTE + seconds + millis / 1000


def _seconds_or_epoch(text: str) -> float | None:
    """Seconds from now: a delta, or an epoch in seconds or milliseconds (told apart by size)."""
    value = _number_or_none(text)
    if value is None:
        return _duration(text)
    if value > 1e11:  # milliseconds since 1970
        return max(value / 1000 - time.time(), 0.0)
    if value > 1e9:  # seconds since 1970
        return max(value - time.time(), 0.0)
    return value


def _rfc3339(text: str) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(when.timestamp() - time.time(), 0.0)


def _params(text: str) -> dict[str, str]:
    return {name.lower(): value for name, value in _PARAM.findall(text)}
