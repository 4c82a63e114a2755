"""A fast OpenAI-compatible echo server on 127.0.0.1 (aiohttp.web), for benchmarks.

``POST /v1/chat/completions`` replies ``"Echo: <last user message>"``; ``GET /stats``
reports what it saw; ``POST /reset`` zeroes it. Options add latency and faults::

    python benchmarks/server.py --port 8765 --latency 0.05 --p429 0.1 --p500 0.05

Faults are drawn per request from a seeded generator: 429 with ``Retry-After``, 500,
a dropped connection (closed without a reply) and a 200 whose body is not JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Faults:
    p429: float = 0.0
    p500: float = 0.0
    pdrop: float = 0.0
    pmalformed: float = 0.0
    retry_after: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self) -> str:
        x = self.rng.random()
        for name, p in (("429", self.p429), ("500", self.p500), ("drop", self.pdrop), ("malformed", self.pmalformed)):
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

    def as_dict(self, arrivals: bool) -> dict[str, object]:
        data: dict[str, object] = {
            "requests": self.requests,
            "peak_concurrency": self.peak_concurrency,
            "statuses": dict(self.statuses),
        }
        if arrivals:
            data["arrivals"] = self.arrivals
        return data


def make_app(latency: float, faults: Faults) -> web.Application:
    stats = Stats()

    async def completions(request: web.Request) -> web.StreamResponse:
        stats.requests += 1
        stats.arrivals.append(time.time())
        stats.active += 1
        stats.peak_concurrency = max(stats.peak_concurrency, stats.active)
        try:
            body = await request.json()
            if latency:
                await asyncio.sleep(latency)
            fault = faults.draw()
            stats.statuses[fault] += 1
            if fault == "429":
                return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                         headers={"Retry-After": f"{faults.retry_after:g}"})
            if fault == "500":
                return web.json_response({"error": {"message": "server error"}}, status=500)
            if fault == "drop":
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped on purpose")
            if fault == "malformed":
                return web.Response(text='{"choices": [', content_type="application/json")
            return web.json_response(_reply(body))
        finally:
            stats.active -= 1

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats.as_dict("arrivals" in request.query))

    async def reset(request: web.Request) -> web.Response:
        stats.reset()
        return web.json_response({"reset": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--p429", type=float, default=0.0, help="share of requests answered 429")
    parser.add_argument("--retry-after", type=float, default=0.0, help="Retry-After seconds sent with a 429")
    parser.add_argument("--p500", type=float, default=0.0, help="share answered 500")
    parser.add_argument("--pdrop", type=float, default=0.0, help="share whose connection is dropped")
    parser.add_argument("--pmalformed", type=float, default=0.0, help="share answered with a body that is not JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faults = Faults(args.p429, args.p500, args.pdrop, args.pmalformed, args.retry_after, args.seed)
    app = make_app(args.latency, faults)
    try:  # the server shares the machine with the client: the faster it is, the less it gets in the way
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    print(f"serving on http://127.0.0.1:{args.port}/v1", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
