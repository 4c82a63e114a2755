"""Providers added from outside the package: register_provider, and the entry-point group."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from dataformer_nb import (
    AsyncLLM,
    ConfigurationError,
    DataformerWarning,
    Provider,
    UnknownProviderError,
    WireFormat,
    register_provider,
)
from dataformer_nb import providers as registry
from dataformer_nb import wire as wires
from dataformer_nb.testing import FakeBatchServer

from .conftest import chat

KEY = "kv-key-SECRET-51"


class KVWire(WireFormat):
    """A made-up format: POST {base}/generate {"model", "input"} -> {"output", "tokens"}, the key
    in X-KV-Key, a schema as "grammar"."""

    name = "kv"
    paths = MappingProxyType({"chat": "/generate"})
    batch_protocol = None

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"X-KV-Key": key}

    def build_body(self, gen_type: Any, payload: dict[str, Any], model: str) -> dict[str, Any]:
        return {"model": model, "input": payload["messages"][-1]["content"]}

    def ask_for_schema(self, body: dict[str, Any], name: str, json_schema: dict[str, Any]) -> None:
        body["grammar"] = json_schema

    def to_openai(self, gen_type: Any, data: Any) -> dict[str, Any]:
        return wires.openai_shape(gen_type, "", data["model"], data["output"], "stop", data["tokens"], 1)


class KVServer:
    """Speaks KVWire on 127.0.0.1; answers ``Answer: <input>`` to the right key, 401 otherwise."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                ok = self.path == "/kv/generate" and self.headers.get("X-KV-Key") == KEY
                reply = ({"model": body["model"], "output": f"Answer: {body['input']}", "tokens": 3} if ok
                         else {"error": "no"})
                data = json.dumps(reply).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/kv"
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def kv_server() -> Iterator[KVServer]:
    server = KVServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers into copies: the package's registries are as they were after it."""
    monkeypatch.setattr(registry, "PROVIDERS", dict(registry.PROVIDERS))
    monkeypatch.setattr(wires, "WIRE_FORMATS", dict(wires.WIRE_FORMATS))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


def test_a_provider_with_its_own_wire_format_works_online_and_is_cached(kv_server: KVServer, cache_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    register_provider(Provider("kvcloud", kv_server.url, "KVCLOUD_API_KEY", "kv-small", style="kv"), wire=KVWire())
    monkeypatch.setenv("KVCLOUD_API_KEY", KEY)
    llm = AsyncLLM(api_provider="kvcloud", cache_dir=cache_dir, progress=False, verbose=False)
    results = llm.generate([chat("one"), chat("two")], project_name="plug")
    assert results.texts == ["Answer: one", "Answer: two"]
    # Sent concurrently: they may arrive in either order (a fresh clone's CI saw "two" first).
    assert sorted(kv_server.bodies, key=lambda b: b["input"]) == [{"model": "kv-small", "input": "one"},
                                                                  {"model": "kv-small", "input": "two"}]
    assert results.summary.prompt_tokens == 6  # its usage, read through its format
    again = llm.generate([chat("one"), chat("two")], project_name="plug")
    assert again.summary.cached == 2 and len(kv_server.bodies) == 2


def test_its_format_carries_schemas_and_its_key_stays_hidden(kv_server: KVServer, cache_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    register_provider(Provider("kvcloud", kv_server.url, "KVCLOUD_API_KEY", "kv-small", style="kv"), wire=KVWire())
    monkeypatch.setenv("KVCLOUD_API_KEY", "kv-wrong-SECRET-key")
    llm = AsyncLLM(api_provider="kvcloud", cache_dir=cache_dir, progress=False, verbose=False)
    result, = llm.generate([chat("one")], schema={"type": "object"})
    assert "HTTP 401" in str(result.error) and "kv-wrong-SECRET-key" not in str(result.error)
    assert kv_server.bodies[0]["grammar"]["type"] == "object"


def test_a_provider_speaking_openais_format_works_in_batch_mode(cache_dir: Path) -> None:
    with FakeBatchServer(process_seconds=0, key=KEY) as fake:
        register_provider(Provider("acme", fake.url, "ACME_API_KEY", "m", batch_api=True))
        llm = AsyncLLM(api_provider="acme", api_key=KEY, cache_dir=cache_dir, batch_poll_interval=0.01,
                       progress=False, verbose=False)
        results = llm.generate([chat(f"q{i}") for i in range(5)], batch=True)
        assert [r.text for r in results] == [f"Answer: q{i}" for i in range(5)]
        assert fake.creations == 1


def test_a_provider_without_a_batch_api_says_so(kv_server: KVServer, cache_dir: Path) -> None:
    register_provider(Provider("kvcloud", kv_server.url, None, "kv-small", style="kv", key_required=False),
                      wire=KVWire())
    llm = AsyncLLM(api_provider="kvcloud", cache_dir=cache_dir, progress=False, verbose=False)
    with pytest.raises(Exception, match="has no batch API that dataformer_nb speaks"):
        llm.generate([chat("one")], batch=True)


def test_bad_registrations_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="no wire format called 'nope'"):
        register_provider(Provider("x", "http://127.0.0.1:9/v1", None, "m", style="nope"))
    with pytest.raises(ConfigurationError, match="registered already"):
        register_provider(Provider("openai", "http://127.0.0.1:9/v1", None, "m"))
    with pytest.raises(ConfigurationError, match="lower-case name"):
        register_provider(Provider("Shouty", "http://127.0.0.1:9/v1", None, "m"))
    with pytest.raises(ConfigurationError, match="not an http"):
        register_provider(Provider("ftp", "ftp://example.com", None, "m"))
    with pytest.raises(ConfigurationError, match="is not a Provider"):
        register_provider({"name": "dict"})  # type: ignore[arg-type]


def _install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A distribution on sys.path whose entry point names ``kvplugin:register``."""
    (tmp_path / "kvplugin.py").write_text(body, encoding="utf-8")
    info = tmp_path / "kvplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kvplugin\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[dataformer_nb.providers]\nkv = kvplugin:register\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kvplugin", raising=False)


def test_a_provider_from_an_entry_point_is_found_by_name(kv_server: KVServer, cache_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(tmp_path, monkeypatch, f"""
from dataformer_nb import Provider, register_provider
from tests.test_plugins import KVWire

def register():
    register_provider(Provider("kvplugin", {kv_server.url!r}, None, "kv-small", style="kv", key_required=False),
                      wire=KVWire())
""")
    monkeypatch.setattr("tests.test_plugins.KEY", None)  # the plugin's server is keyless here
    llm = AsyncLLM(api_provider="kvplugin", cache_dir=cache_dir, progress=False, verbose=False)
    assert "kvplugin" in registry.known_providers()
    assert llm.generate([chat("via entry point")]).texts == ["Answer: via entry point"]


def test_a_plugin_that_fails_is_skipped_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(tmp_path, monkeypatch, "def register():\n    raise RuntimeError('broken plugin')\n")
    with pytest.warns(DataformerWarning, match="provider plugin 'kv'.*broken plugin"), \
            pytest.raises(UnknownProviderError, match="not a known provider"):
        AsyncLLM(api_provider="kvplugin")
