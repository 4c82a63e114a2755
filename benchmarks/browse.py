"""Browsing a project of 100,000 responses: how long a page of the panel takes to read.

    python benchmarks/browse.py [-n 100000]

Fills a fresh cache with the echo provider (no network), then times ``ResponseCache.entries``
(what the panel's Browse view reads) for the first page, a page far in, and filters that match
early, late and never (the last is a full scan). Median of 5 runs each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

from dataformer_nb import AsyncLLM


def timed(label: str, read: Callable[[], list]) -> None:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        found = read()
        times.append(time.perf_counter() - start)
    print(f"{label}: {statistics.median(times) * 1000:.1f} ms ({len(found)} entries)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000)
    n = parser.parse_args().n
    llm = AsyncLLM(api_provider="echo", cache_dir=tempfile.mkdtemp(), progress=False, verbose=False)
    start = time.perf_counter()
    llm.generate([{"messages": [{"role": "user", "content": f"question number {i}"}]} for i in range(n)],
                 project_name="big")
    print(f"filled {n:,} responses in {time.perf_counter() - start:.1f} s")
    page = 21  # the panel reads one more than it shows, to know whether there is a next page
    timed("first page", lambda: llm.cache.entries("big", 0, page))
    timed(f"page at offset {n // 2:,}", lambda: llm.cache.entries("big", n // 2, page))
    timed("filter matching early", lambda: llm.cache.entries("big", 0, page, "number 1"))
    timed("filter matching one late entry", lambda: llm.cache.entries("big", 0, page, f"number {n - 2}"))
    timed("filter matching nothing (a full scan)", lambda: llm.cache.entries("big", 0, page, "zzz"))


if __name__ == "__main__":
    main()
