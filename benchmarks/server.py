"""A fast OpenAI-compatible echo server on 127.0.0.1 (aiohttp.web), for benchmarks and tests.

``POST /v1/chat/completions`` (and Anthropic's ``/v1/messages``) replies ``"Echo: <last
user message>"``; ``GET /stats`` reports what it saw; ``POST /reset`` zeroes it. Options
add latency, faults and rate limits::

    python benchmarks/server.py --port 8765 --latency 0.05 --p429 0.1 --p500 0.05
    python benchmarks/server.py --rpm 300 --dialect openai

Faults are drawn per request from a seeded generator: 429 with ``Retry-After``, 503 with
``Retry-After`` (none with ``--retry-after 0``), 500, a dropped connection and a 200 whose body
is not JSON; ``--burst429 S`` makes 429s come in stretches of S seconds on average (hiccups), the
same share of the time. Rate limits are
what real providers run: a token bucket per key (``--rpm`` requests or ``--tpm`` tokens a
minute; a minute's quota may go at once), 429 with ``retry-after`` past it, and the
provider's rate-limit headers on every reply (``--dialect``; ``none`` sends no header at all,
not even ``retry-after``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Faults:
    p429: float = 0.0
    p503: float = 0.0
    p500: float = 0.0
    pdrop: float = 0.0
    pmalformed: float = 0.0
    retry_after: float = 0.0
    seed: int = 0
    burst: float = 0.0  # mean length in seconds of a stretch of time when every request gets 429 (0: none)
    rng: random.Random = field(init=False)
    in_burst: bool = field(init=False, default=False)
    switch_at: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self) -> str:
        if self.burst > 0 and self.p429:
            # Hiccups in time, whatever the pace of the requests: stretches of refusal (mean
            # ``burst`` s) between stretches of service (mean burst * (1 - p) / p s), so that a
            # share p429 of the time refuses. Seeded; the clock starts at the first request.
            now = time.monotonic()
            if not self.switch_at:  # the first stretch: refusing with the share's probability
                self.in_burst = self.rng.random() < self.p429
                mean = self.burst if self.in_burst else self.burst * (1 - self.p429) / self.p429
                self.switch_at = now + self.rng.expovariate(1 / mean)
            while now >= self.switch_at:
                self.in_burst = not self.in_burst
                mean = self.burst if self.in_burst else self.burst * (1 - self.p429) / self.p429
                self.switch_at += self.rng.expovariate(1 / mean)
            if self.in_burst:
                return "429"
            return self._draw_other(("503", self.p503), ("500", self.p500), ("drop", self.pdrop),
                                    ("malformed", self.pmalformed))
        return self._draw_other(("429", self.p429), ("503", self.p503), ("500", self.p500), ("drop", self.pdrop),
                                ("malformed", self.pmalformed))

    def _draw_other(self, *shares: tuple[str, float]) -> str:
        x = self.rng.random()
        for name, p in shares:
            if x < p:
                return name
            x -= p
        return "ok"


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.active = 0
        self.peak_concurrency = 0
        self.statuses: Counter[str] = Counter()
        self.arrivals: list[float] = []
        self.granted: list[tuple[float, float]] = []  # (monotonic time, cost) of each request let through
        self.rejected: list[tuple[float, float]] = []  # (monotonic time, cost) of each 429 the limit sent

    def as_dict(self, arrivals: bool) -> dict[str, object]:
        data: dict[str, object] = {
            "requests": self.requests,
            "peak_concurrency": self.peak_concurrency,
            "active": self.active,
            "statuses": dict(self.statuses),
        }
        if arrivals:
            data |= {"arrivals": self.arrivals, "granted": self.granted, "rejected": self.rejected}
        return data


class Limit:
    """A provider's rate limit: a token bucket per key, refilled at ``per_minute / 60`` a second."""

    def __init__(self, per_minute: float, unit: str, burst: float | None, dialect: str) -> None:
        self.unit, self.dialect = unit, dialect
        self.rate = per_minute / 60
        self.per_minute = per_minute
        # Together states its limits per second, so its bucket holds a second's quota.
        self.capacity = burst or (self.rate if dialect == "together" else per_minute)
        self._levels: dict[str, tuple[float, float]] = {}

    def reset(self) -> None:
        """Every key's bucket whole again, as for a new client."""
        self._levels.clear()

    def take(self, key: str, cost: float) -> tuple[bool, float, float]:
        """Spend ``cost`` for ``key`` if it is there: (granted, remaining, seconds until whole)."""
        now = time.monotonic()
        level, then = self._levels.get(key, (self.capacity, now))
        level = min(self.capacity, level + (now - then) * self.rate)
        granted = level >= min(cost, self.capacity)
        if granted:
            level -= cost
        self._levels[key] = (level, now)
        return granted, level, max(self.capacity - level, 0.0) / self.rate

    def headers(self, remaining: float, full_in: float, wait: float | None) -> dict[str, str]:
        shown = max(int(remaining), 0)
        unit = self.unit
        if self.dialect == "openai":
            headers = {f"x-ratelimit-limit-{unit}": f"{self.per_minute:g}",
                       f"x-ratelimit-remaining-{unit}": str(shown),
                       f"x-ratelimit-reset-{unit}": f"{full_in:.3f}s"}
        elif self.dialect == "anthropic":
            reset = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=full_in)
            headers = {f"anthropic-ratelimit-{unit}-limit": f"{self.per_minute:g}",
                       f"anthropic-ratelimit-{unit}-remaining": str(shown),
                       f"anthropic-ratelimit-{unit}-reset": reset.isoformat().replace("+00:00", "Z")}
        elif self.dialect == "together":
            prefix = "x-tokenlimit" if self.unit == "tokens" else "x-ratelimit"
            headers = {f"{prefix}-limit": f"{self.capacity:g}", f"{prefix}-remaining": str(shown),
                       f"{prefix}-reset": f"{full_in:.3f}"}
        else:
            return {}
        if wait is not None:
            headers |= {"retry-after-ms": str(max(int(wait * 1000), 1)), "retry-after": str(max(round(wait), 1))}
        return headers


def _cost(body: dict, unit: str) -> float:
    """What a request costs against the limit: 1, or its prompt and completion budget in tokens."""
    if unit == "requests":
        return 1.0
    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    return prompt // 4 + 1 + int(body.get("max_tokens") or 16)


def make_app(latency: float, faults: Faults, limit: Limit | None = None) -> web.Application:
    stats = Stats()

    async def completions(request: web.Request) -> web.StreamResponse:
        stats.requests += 1
        stats.arrivals.append(time.time())
        stats.active += 1
        stats.peak_concurrency = max(stats.peak_concurrency, stats.active)
        try:
            body = await request.json()
            limited: dict[str, str] = {}
            if limit is not None:
                key = request.headers.get("Authorization") or request.headers.get("x-api-key", "")
                cost = _cost(body, limit.unit)
                granted, remaining, full_in = limit.take(key, cost)
                if not granted:
                    stats.statuses["429"] += 1
                    stats.rejected.append((time.monotonic(), cost))
                    wait = (min(cost, limit.capacity) - remaining) / limit.rate
                    return web.json_response({"error": {"message": f"rate limit: {limit.per_minute:g} "
                                                        f"{limit.unit}/min"}},
                                             status=429, headers=limit.headers(remaining, full_in, wait))
                stats.granted.append((time.monotonic(), cost))
                limited = limit.headers(remaining, full_in, None)
            if latency:
                await asyncio.sleep(latency)
            fault = faults.draw()
            stats.statuses[fault] += 1
            if fault in ("429", "503"):
                wait = {"Retry-After": f"{faults.retry_after:g}"} if faults.retry_after > 0 else {}
                return web.json_response({"error": {"message": "busy"}}, status=int(fault), headers=wait)
            if fault == "500":
                return web.json_response({"error": {"message": "server error"}}, status=500)
            if fault == "drop":
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped on purpose")
            if fault == "malformed":
                return web.Response(text='{"choices": [', content_type="application/json")
            anthropic = request.path.endswith("/messages")
            return web.json_response(_anthropic_reply(body) if anthropic else _reply(body), headers=limited)
        finally:
            stats.active -= 1

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats.as_dict("arrivals" in request.query))

    async def reset(request: web.Request) -> web.Response:
        stats.reset()
        if limit is not None:
            limit.reset()
        return web.json_response({"reset": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/messages", completions)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    return app


def _reply(body: dict) -> dict:
    users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    prompt = users[-1] if users else ""
    text = f"Echo: {prompt}"
    prompt_tokens, completion_tokens = len(prompt) // 4 + 1, len(text) // 4 + 1
    return {
        "id": "bench",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "echo"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _anthropic_reply(body: dict) -> dict:
    openai = _reply(body)
    usage = openai["usage"]
    return {"id": "msg_bench", "type": "message", "role": "assistant", "model": openai["model"],
            "content": [{"type": "text", "text": openai["choices"][0]["message"]["content"]}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--p429", type=float, default=0.0, help="share of requests answered 429")
    parser.add_argument("--retry-after", type=float, default=0.0,
                        help="Retry-After seconds sent with a 429 or 503 (0: no Retry-After)")
    parser.add_argument("--burst429", type=float, default=0.0,
                        help="429s in stretches of time of this mean length in seconds, the same share of time "
                             "(0: each request drawn on its own)")
    parser.add_argument("--p503", type=float, default=0.0, help="share answered 503 (with Retry-After)")
    parser.add_argument("--p500", type=float, default=0.0, help="share answered 500")
    parser.add_argument("--pdrop", type=float, default=0.0, help="share whose connection is dropped")
    parser.add_argument("--pmalformed", type=float, default=0.0, help="share answered with a body that is not JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rpm", type=float, help="requests a minute, per key (a token bucket)")
    parser.add_argument("--tpm", type=float, help="tokens a minute, per key (prompt + max_tokens, at arrival)")
    parser.add_argument("--burst", type=float, help="the bucket's size (default: a minute's quota)")
    parser.add_argument("--dialect", choices=["openai", "anthropic", "together", "none"], default="openai",
                        help="the rate-limit headers sent (none: no header, not even retry-after)")
    args = parser.parse_args()
    faults = Faults(args.p429, args.p503, args.p500, args.pdrop, args.pmalformed, args.retry_after, args.seed,
                    args.burst429)
    limit = None
    if args.rpm or args.tpm:
        limit = Limit(args.rpm or args.tpm, "requests" if args.rpm else "tokens", args.burst, args.dialect)
    app = make_app(args.latency, faults, limit)
    try:  # the server shares the machine with the client: the faster it is, the less it gets in the way
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    print(f"serving on http://127.0.0.1:{args.port}/v1", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
