"""``python -m dataformer_nb quickstart``: an end-to-end run with the offline echo provider;
``python -m dataformer_nb cache copy SRC DST``: one cache into another;
``python -m dataformer_nb cache import-dataformer DIR --provider P``: a dataformer 0.0.2 cache into this one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import AsyncLLM, get_request_list
from ._format import projects_table

QUESTIONS = [
    "Why should people read books?",
    "What is the importance of clouds?",
    "Name three uses of synthetic data.",
    "What is 2+10/2?",
]


def quickstart(cache_dir: str | None) -> None:
    """The README's quick start, end to end on the offline echo provider: a first run, then a re-run from the cache."""
    llm = AsyncLLM(api_provider="echo", project_name="quickstart", cache_dir=cache_dir, progress=False)
    requests = get_request_list(QUESTIONS, {"temperature": 0.7})
    results = llm.generate(requests)  # prints its summary line
    if results.summary.sent:
        print("First run: the requests went to the in-process echo provider; the answers are now cached.")
    else:
        print("A re-run: every answer came from the cache, nothing was sent.")
    for result in results:
        print(f"  {result.text}")
    llm.generate(requests)
    print("Run again: served from the cache.")
    print(projects_table(llm.cache.projects(), f"Cache: {llm.cache.location}")["text/plain"])


def main(argv: list[str] | None = None) -> int:
    """``python -m dataformer_nb`` (and the ``dataformer-nb`` script): the subcommands."""
    parser = argparse.ArgumentParser(prog="python -m dataformer_nb")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("quickstart", help="generate with the offline echo provider, twice")
    start.add_argument("--cache-dir", help="where to cache responses (default .cache/dataformer)")
    cache = commands.add_parser("cache", help="manage response caches").add_subparsers(dest="action", required=True)
    copy = cache.add_parser("copy", help="copy every response of one cache into another (either kind, idempotent)",
                            description="SRC and DST are each a cache directory or a postgresql:// URL. Run again "
                                        "after an interruption: it finishes the job, duplicating nothing.")
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("destination", metavar="DST")
    copy.add_argument("--schema", help="the team cache's schema (default DATAFORMER_CACHE_SCHEMA, else dataformer)")
    imports = cache.add_parser(
        "import-dataformer", help="import a dataformer 0.0.2 cache directory (its responses become hits here)",
        description="dataformer stored its requests without their provider: say where they were sent (--provider, "
                    "or --url for another server), and the model and sampling parameters dataformer filled in, if "
                    "its requests lack them. Into the cache that AsyncLLM would use here (DATAFORMER_CACHE_URL, "
                    "else --cache-dir, else .cache/dataformer). Idempotent.")
    imports.add_argument("directory", metavar="DIR", help="dataformer's cache directory (its default: "
                                                          ".cache/dataformer)")
    imports.add_argument("--provider", help="the provider its requests went to (together, openai, groq, ...)")
    imports.add_argument("--url", help="the server its requests went to, if not a provider's default")
    imports.add_argument("--model", help="the model, for requests that do not name one")
    imports.add_argument("--cache-dir", help="the local cache to import into (default: DATAFORMER_CACHE_DIR, else "
                                             ".cache/dataformer)")
    args = parser.parse_args(argv)
    if args.command == "quickstart":
        quickstart(args.cache_dir)
    elif args.action == "copy":
        return cache_copy(args.source, args.destination, args.schema)
    else:
        return import_dataformer(args)
    return 0


def import_dataformer(args: argparse.Namespace) -> int:
    """``cache import-dataformer DIR``: what was imported, per project, and what was skipped."""
    from .dataformer_cache import import_dataformer_cache
    from .errors import DataformerError

    try:
        llm = AsyncLLM(api_provider=args.provider, url=args.url, model=args.model, cache_dir=args.cache_dir,
                       progress=False, verbose=False)
        print(import_dataformer_cache(args.directory, llm))
    except DataformerError as exc:
        print(f"cache import-dataformer: {exc}", file=sys.stderr)
        return 1
    return 0


def cache_copy(source: str, destination: str, schema: str | None) -> int:
    """``cache copy SRC DST``: one line per 10,000 responses, then what was copied."""
    from .cache import open_store
    from .cache.copy import copy_store
    from .errors import DataformerError
    from .settings import CACHE_SCHEMA_ENV, resolve

    schema = schema or resolve(CACHE_SCHEMA_ENV, None, None)

    def store(where: str) -> Any:
        url = where if where.startswith(("postgresql://", "postgres://")) else None
        return open_store(where, url, schema)

    try:
        report = copy_store(store(source), store(destination),
                            progress=lambda n: print(f"  {n:,} responses", flush=True) if n % 10_000 == 0 else None)
    except DataformerError as exc:
        print(f"cache copy: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
