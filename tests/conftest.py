from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from dataformer_nb import AsyncLLM
from dataformer_nb.providers import PROVIDERS
from dataformer_nb.testing import FakeLLMServer

from . import postgres

TOGETHER_KEY = "sk-together-test-SECRET-4f9a1c"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's keys, base URLs, project settings or .env file."""
    for provider in PROVIDERS.values():
        if provider.key_env:
            monkeypatch.delenv(provider.key_env, raising=False)
        monkeypatch.delenv(provider.base_url_env, raising=False)
    for name in ("PROJECT_NAME", "DATAFORMER_CACHE_DIR", "DATAFORMER_PROVIDER", "DATAFORMER_MODEL",
                 "DATAFORMER_CACHE_URL", "DATAFORMER_CACHE_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # .env files are looked for from the working directory up


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    """The loopback server, with every provider's base URL pointed at it."""
    with FakeLLMServer() as srv:
        for provider in PROVIDERS.values():
            if provider.name != "echo":
                base = srv.url if provider.style == "ollama" else f"{srv.url}/v1"
                monkeypatch.setenv(provider.base_url_env, base)
        monkeypatch.setenv("TOGETHER_API_KEY", TOGETHER_KEY)
        yield srv


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_llm(cache_dir: Path) -> Callable[..., AsyncLLM]:
    def make(**kwargs: Any) -> AsyncLLM:
        options: dict[str, Any] = {"api_provider": "together", "cache_dir": cache_dir, "progress": False,
                                   "verbose": False, "retry_base_delay": 0.001}
        return AsyncLLM(**{**options, **kwargs})

    return make


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], **extra}


@pytest.fixture
def ip(server: FakeLLMServer, cache_dir: Path) -> Iterator[InteractiveShell]:
    """An IPython shell with the extension loaded, its cache in ``cache_dir``, provider together."""
    shell = InteractiveShell.instance()
    shell.reset()
    shell.run_line_magic("load_ext", "dataformer_nb")
    shell.run_line_magic("config", f"Dataformer.cache_dir = {str(cache_dir)!r}")
    shell.run_line_magic("config", "Dataformer.provider = 'together'")
    shell.run_line_magic("config", "Dataformer.progress = False")
    shell.run_line_magic("config", "Dataformer.max_rows = 20")  # %config persists across tests
    yield shell
    shell.run_line_magic("config", "Dataformer.max_rows = 20")
    shell.run_line_magic("reload_ext", "dataformer_nb")  # fresh defaults for the next test


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server (tests/postgres.py says which)."""
    yield from postgres.server_url()


@pytest.fixture
def private_postgres() -> Iterator[postgres.PrivateServer]:
    """A PostgreSQL server of the test's own, which it may stop and start (see tests/postgres.py)."""
    bin_dir = postgres.binaries()
    if bin_dir is None:
        postgres.unavailable("no initdb found to start a server of the test's own")
    assert bin_dir is not None
    server = postgres.PrivateServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def team_url(postgres_server: str) -> Iterator[tuple[str, str]]:
    """``(url, schema)``: a schema of its own for one test, dropped after it."""
    import psycopg

    schema = postgres.fresh_schema()
    yield postgres_server, schema
    with psycopg.connect(postgres_server, autocommit=True) as db:
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a module that runs both stores, a test marked ``local_store`` runs on the local one only."""
    items[:] = [item for item in items
                if not (item.get_closest_marker("local_store") and getattr(item, "callspec", None)
                        and item.callspec.params.get("store") == "team")]


# A module whose tests are cache behaviour runs each of them on both stores: ``pytestmark = BOTH_STORES``.
BOTH_STORES = [pytest.mark.parametrize("store", ["local", "team"], indirect=True), pytest.mark.usefixtures("store")]


@pytest.fixture
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store a test's AsyncLLMs, magics and panels use: "local" unless the test is
    parametrized (``BOTH_STORES``); for "team", ``DATAFORMER_CACHE_URL`` names a server and
    ``DATAFORMER_CACHE_SCHEMA`` a schema of the test's own, as a user would set them."""
    kind = getattr(request, "param", "local")
    if kind == "team":
        url, schema = request.getfixturevalue("team_url")
        monkeypatch.setenv("DATAFORMER_CACHE_URL", url)
        monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", schema)
    return kind


def the_store(cache_dir: Path) -> Any:
    """The store a test's AsyncLLMs write to (see ``store``): the team one if the test runs on it."""
    import os

    from dataformer_nb.cache import open_store

    return open_store(str(cache_dir), os.environ.get("DATAFORMER_CACHE_URL"), os.environ.get("DATAFORMER_CACHE_SCHEMA"))


@contextlib.contextmanager
def said(text: str) -> Iterator[threading.Semaphore]:
    """A semaphore released each time dataformer_nb's logger says something holding ``text`` (at
    INFO and up, the level set for the block): what a test waits for instead of sleeping."""
    heard = threading.Semaphore(0)

    class Listening(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                heard.release()

    logger, handler = logging.getLogger("dataformer_nb"), Listening()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield heard
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
