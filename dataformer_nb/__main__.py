"""``python -m dataformer_nb quickstart``: an end-to-end run with the offline echo provider."""

from __future__ import annotations

import argparse
import sys

from . import AsyncLLM, get_request_list

QUESTIONS = [
    "Why should people read books?",
    "What is the importance of clouds?",
    "Name three uses of synthetic data.",
    "What is 2+10/2?",
]


def quickstart(cache_dir: str | None) -> None:
    llm = AsyncLLM(api_provider="echo", project_name="quickstart", cache_dir=cache_dir, progress=False)
    requests = get_request_list(QUESTIONS, {"temperature": 0.7})
    print("First run: every request is sent (to the in-process echo provider).")
    results = llm.generate(requests)
    for result in results:
        print(f"  {result.text}")
    print("Second run: every request is served from the cache.")
    llm.generate(requests)
    for project in llm.cache.projects():
        print(f"  project {project.name}: {project.responses} responses, {project.bytes} bytes")
    print(f"Cache directory: {llm.cache.directory}")


def main(argv: list[str] | None = None) -> int:
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
