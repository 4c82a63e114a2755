"""A random history against one cache directory, run in its own process by the crash and
rival tests: ``python tests/cache_history.py DIR SEED STEPS PROJECTS JOURNAL [--kill-at N] [--full]``.

Each operation is journalled (``{"begin": op}`` before, ``{"end": n}`` after) with unbuffered
writes, so a SIGKILL loses no line. ``--kill-at N`` SIGKILLs this process just before its
N-th write to diskcache (inside group commits, clears and joins alike), or, with a team cache
(``DATAFORMER_CACHE_URL`` set), just before its N-th statement inside a PostgreSQL transaction.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

PROMPTS = [f"q{i}" for i in range(16)] + ["Grüße"]


def operations(rng: random.Random, steps: int, projects: list[str], full: bool) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.6:
            ops.append({"op": "generate", "project": rng.choice(projects),
                        "prompts": [rng.choice(PROMPTS) for _ in range(rng.randint(1, 8))]})
        elif roll < 0.85:
            ops.append({"op": "clear", "names": rng.sample(projects, rng.randint(1, min(2, len(projects))))})
        elif roll < 0.9 and full:
            ops.append({"op": "clear_full"})
        else:
            ops.append({"op": "reopen"})
    return ops


def kill_at(n: int) -> None:
    if os.environ.get("DATAFORMER_CACHE_URL"):
        return kill_at_statement(n)
    import diskcache

    count = [0]
    for name in ("set", "add", "delete", "clear"):
        original = getattr(diskcache.Cache, name)

        def wrapper(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return _original(self, *args, **kwargs)

        setattr(diskcache.Cache, name, wrapper)


def kill_at_statement(n: int) -> None:
    import psycopg
    from psycopg.pq import TransactionStatus

    count = [0]
    original = psycopg.Cursor.execute

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.connection.info.transaction_status == TransactionStatus.INTRANS:
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("seed", type=int)
    parser.add_argument("steps", type=int)
    parser.add_argument("projects")
    parser.add_argument("journal")
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    if args.kill_at:
        kill_at(args.kill_at)
    import warnings

    from dataformer_nb import AsyncLLM

    warnings.simplefilter("ignore")  # clearing a project another step cleared already warns
    journal = os.open(args.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def log(entry: dict[str, Any]) -> None:
        os.write(journal, (json.dumps(entry) + "\n").encode())

    def open_llm() -> AsyncLLM:
        return AsyncLLM(api_provider="echo", cache_dir=args.directory, progress=False, verbose=False)

    llm = open_llm()
    for n, op in enumerate(operations(random.Random(args.seed), args.steps, args.projects.split(","), args.full)):
        log({"begin": op})
        if op["op"] == "generate":
            requests = [{"messages": [{"role": "user", "content": p}]} for p in op["prompts"]]
            results = llm.generate(requests, project_name=op["project"])
            assert results.texts == [f"Echo: {p}" for p in op["prompts"]], results.summary
        elif op["op"] == "clear":
            llm.clear_cache(op["names"])
        elif op["op"] == "clear_full":
            llm.clear_cache("full")
        else:
            llm.cache.close()
            llm = open_llm()
        log({"end": n})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
