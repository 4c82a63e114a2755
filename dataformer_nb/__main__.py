"""``python -m dataformer_nb quickstart``: an end-to-end run with the offline echo provider."""

from __future__ import annotations

import argparse
import sys

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
    args = parser.parse_args(argv)
    if args.command == "quickstart":
        quickstart(args.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
