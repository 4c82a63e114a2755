"""The benchmark server (``benchmarks/server.py``) started in a subprocess on a free port, for tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def serve(*options: str) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(BENCH / "server.py"), "--port", str(port), *options],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and "serving on" in proc.stdout.readline()  # printed before it listens
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            server_stats(url)
            break
        except OSError:
            time.sleep(0.05)  # the port opens a moment after the line is printed
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def server_stats(url: str, arrivals: bool = False) -> dict:
    with urllib.request.urlopen(f"{url}/stats{'?arrivals' if arrivals else ''}", timeout=5) as reply:
        return json.load(reply)
