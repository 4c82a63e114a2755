"""The benchmark harness runs and every client gets every echo right (speed is not tested here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .bench_server import BENCH, serve, server_stats

OPTIONAL = {"openai": "openai", "httpx_aiohttp": "httpx_aiohttp", "dataformer_0.0.2": "dataformer"}


@pytest.fixture(scope="module")
def bench_server() -> Iterator[str]:
    yield from serve()


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[str]:
    yield from serve("--p429", "0.1", "--p500", "0.05", "--pdrop", "0.05", "--pmalformed", "0.05", "--seed", "7")


def _client(name: str, url: str, n: int, *options: str) -> dict:
    done = subprocess.run([sys.executable, str(BENCH / "clients.py"), name, "--url", f"{url}/v1", "-n", str(n),
                           *options], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])  # dataformer 0.0.2 prints a line of its own first


@pytest.mark.parametrize("name", ["aiohttp", "httpx", "dataformer_nb", *OPTIONAL])
def test_every_client_gets_every_echo_right(bench_server: str, name: str, tmp_path: Path) -> None:
    if name in OPTIONAL and importlib.util.find_spec(OPTIONAL[name]) is None:
        pytest.skip(f'{name} is not installed (pip install -e ".[bench]")')
    before = server_stats(bench_server)["requests"]
    result = _client(name, bench_server, 30, "--cache-dir", str(tmp_path / "c"))
    assert result["correct"] == 30 and result["cpu_s"] > 0 and result["rss_mb"] > 0
    assert server_stats(bench_server)["requests"] - before == 30


def test_warm_run_and_diskcache_floor_read_what_the_cold_run_stored(bench_server: str, tmp_path: Path) -> None:
    options = ("--cache", "on", "--cache-dir", str(tmp_path / "c"))
    before = server_stats(bench_server)["requests"]
    assert _client("dataformer_nb", bench_server, 40, *options)["correct"] == 40
    assert _client("dataformer_nb", bench_server, 40, *options)["correct"] == 40
    assert _client("diskcache_get", bench_server, 40, *options)["correct"] == 40
    assert server_stats(bench_server)["requests"] - before == 40  # the warm run sent nothing


def test_dataformer_nb_recovers_from_every_fault_the_server_injects(faulty_server: str) -> None:
    result = _client("dataformer_nb", faulty_server, 80, "--max-attempts", "12")
    stats = server_stats(faulty_server)
    assert result["correct"] == 80
    assert stats["statuses"]["ok"] == 80 and stats["requests"] == sum(stats["statuses"].values())
    assert {"429", "500", "drop", "malformed"} <= set(stats["statuses"])
    assert stats["peak_concurrency"] <= 64


def test_the_batch_benchmark_runs_and_every_client_gets_every_answer() -> None:
    if importlib.util.find_spec("openai") is None:
        pytest.skip('openai is not installed (pip install -e ".[bench]")')
    done = subprocess.run([sys.executable, str(BENCH / "batch.py"), "-n", "30", "--runs", "1"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("correct 30") == 3, done.stdout
