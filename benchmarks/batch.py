"""A 100,000-request batch job: what ``generate(batch=True)`` costs the client, side by side with
doing the same job by hand with the openai SDK (upload, create, poll, download, parse), which
caches nothing, and the same by hand keeping each response in a diskcache (one transaction), the
least a user must add so that nothing paid for is lost.

    python benchmarks/batch.py [-n 100000] [--runs 3]

The fake batch service (``dataformer_nb.testing``) runs in a process of its own, and
each client run in a fresh process, so the figures are the client's alone: CPU seconds, wall
seconds and peak RSS, from submission to the last result in hand (the request list is built
before the clock starts). Runs alternate between the two clients; medians are reported, and the
ratio dataformer_nb / openai SDK. A third figure is dataformer_nb's re-run of the same call
(everything cached: no service call).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SERVE = """
import sys, time
from dataformer_nb.testing import FakeBatchServer
server = FakeBatchServer(process_seconds=0).start()
print(server.url, flush=True)
sys.stdin.read()
"""

POLL_SECONDS = 0.5


def requests(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"Write one sentence about the number {i}."}],
             "max_tokens": 64} for i in range(n)]


def run_dataformer_nb(url: str, n: int, cache_dir: str) -> dict[str, Any]:
    from dataformer_nb import AsyncLLM

    llm = AsyncLLM(url=url, api_key="k", model="bench", cache_dir=cache_dir, batch_poll_interval=POLL_SECONDS,
                   progress=False, verbose=False)
    body = requests(n)
    figures = measured(lambda: llm.generate(body, batch=True).texts)
    figures["rerun"] = measured(lambda: llm.generate(body, batch=True).texts)
    return figures


def run_openai_diskcache(url: str, n: int, cache_dir: str) -> dict[str, Any]:
    return run_openai(url, n, cache_dir, keep=True)


def run_openai(url: str, n: int, cache_dir: str, keep: bool = False) -> dict[str, Any]:
    import diskcache
    import openai

    cache = diskcache.Cache(cache_dir) if keep else None

    client = openai.OpenAI(base_url=url, api_key="k")
    body = requests(n)

    def job() -> list[str | None]:
        lines = [json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                             "body": {"model": "bench", **request}}) for i, request in enumerate(body)]
        batches = []
        for start in range(0, n, 50_000):
            data = ("\n".join(lines[start:start + 50_000]) + "\n").encode()
            uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
            batches.append(client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                 completion_window="24h").id)
        texts: dict[str, str] = {}
        waiting = list(batches)
        while waiting:
            for batch_id in list(waiting):
                batch = client.batches.retrieve(batch_id)
                if batch.status in ("completed", "failed", "expired", "cancelled"):
                    waiting.remove(batch_id)
                    if batch.output_file_id:
                        lines = client.files.content(batch.output_file_id).text.splitlines()
                        with cache.transact() if cache is not None else contextlib.nullcontext():
                            for line in lines:
                                result = json.loads(line)
                                reply = result["response"]["body"]
                                texts[result["custom_id"]] = reply["choices"][0]["message"]["content"]
                                if cache is not None:
                                    cache[result["custom_id"]] = json.dumps(reply)
            if waiting:
                time.sleep(POLL_SECONDS)
        return [texts.get(f"r{i}") for i in range(n)]

    return measured(job)


def measured(job: Any) -> dict[str, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    texts = job()
    figures = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
    figures["correct"] = sum(t == f"Answer: Write one sentence about the number {i}." for i, t in enumerate(texts))
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def child(args: argparse.Namespace) -> None:
    run = {"dataformer_nb": run_dataformer_nb, "openai": run_openai,
           "openai+diskcache": run_openai_diskcache}[args.client]
    with tempfile.TemporaryDirectory() as cache_dir:
        print(json.dumps(run(args.url, args.n, cache_dir)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return child(args)
    server = subprocess.Popen([sys.executable, "-c", SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()  # type: ignore[union-attr]
    runs: dict[str, list[dict[str, Any]]] = {"dataformer_nb": [], "openai": [], "openai+diskcache": []}
    try:
        for _ in range(args.runs):
            for name in runs:
                out = subprocess.run([sys.executable, __file__, "--client", name, "--url", url, "-n", str(args.n)],
                                     capture_output=True, text=True, check=True).stdout
                runs[name].append(json.loads(out))
    finally:
        server.terminate()
    median = {name: {k: statistics.median(r[k] for r in results) for k in ("cpu", "wall", "rss_mb", "correct")}
              for name, results in runs.items()}
    rerun = statistics.median(r["rerun"]["wall"] for r in runs["dataformer_nb"])
    print(f"batch job of {args.n:,} requests, median of {args.runs} alternating runs (client process only):")
    for name, m in median.items():
        print(f"  {name:16} CPU {m['cpu']:6.2f} s  wall {m['wall']:6.2f} s  peak RSS {m['rss_mb']:5.0f} MB  "
              f"correct {m['correct']:,.0f}")
    for name, what in (("openai", "caches nothing"), ("openai+diskcache", "keeps each response in a diskcache")):
        ratio = median["dataformer_nb"]["cpu"] / median[name]["cpu"]
        print(f"  client CPU dataformer_nb / openai SDK by hand that {what}: {ratio:.2f}x")
    print(f"  dataformer_nb re-run of the same call (all cached, nothing asked of the service): {rerun:.2f} s wall")


if __name__ == "__main__":
    main()
