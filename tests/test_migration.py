"""Caches written by 0.1.0 (format 1) keep every hit, project, membership and size after the
upgrade; the migration runs once, in one transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import diskcache
import pytest

from dataformer_nb import AsyncLLM, CacheError, ResponseCache
from dataformer_nb.cache import migrations as migrations_module
from dataformer_nb.echo import echo_reply

from .test_cachekey import PINNED_0_1_0

OLD = time.time() - 86400


def write_0_1_0_cache(directory: Path, entries: dict[str, tuple[bytes, list[str]]],
                      projects: dict[str, dict[str, Any]]) -> None:
    """The rows release 0.1.0 wrote: diskcache with its settings, every value JSON bytes inline,
    ``r:<key>`` = ``{"response":<reply bytes>,"projects":[...],"size":n}``, ``p:<name>`` records."""
    cache = diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**62, disk_min_file_size=2**30,
                            statistics=False)
    for key, (reply, names) in entries.items():
        tail = json.dumps(names, ensure_ascii=False, separators=(",", ":")).encode()
        cache.set("r:" + key, b'{"response":' + reply + b',"projects":' + tail + b',"size":%d}' % len(reply))
    for name, record in projects.items():
        cache.set("p:" + name, json.dumps(record, separators=(",", ":")).encode())
    cache.close()


def echo_bytes(request: dict[str, Any], model: str = "echo") -> bytes:
    # As received from a server: indented, with a trailing newline.
    return (json.dumps(echo_reply({**request, "model": model}), indent=2) + "\n").encode()


@pytest.fixture
def old_cache(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A 0.1.0 cache of two echo responses: one used by 'questions' and 'maths', one by 'questions'."""
    chat = PINNED_0_1_0["chat"]
    unicode = PINNED_0_1_0["unicode_and_floats"]
    replies = {chat[3]: echo_bytes(chat[1]), unicode[3]: echo_bytes(unicode[1])}
    sizes = {key: len(reply) for key, reply in replies.items()}
    write_0_1_0_cache(
        tmp_path / "cache",
        {chat[3]: (replies[chat[3]], ["questions", "maths"]), unicode[3]: (replies[unicode[3]], ["questions"])},
        {"questions": {"entries": 2, "bytes": sum(sizes.values()), "last_used": OLD},
         "maths": {"entries": 1, "bytes": sizes[chat[3]], "last_used": OLD - 10}},
    )
    return tmp_path / "cache", replies


def test_a_0_1_0_cache_keeps_every_hit_project_membership_and_size(old_cache) -> None:
    directory, replies = old_cache
    llm = AsyncLLM(api_provider="echo", cache_dir=directory, progress=False, verbose=False)
    before = {p.name: (p.responses, p.bytes) for p in llm.cache.projects()}
    assert before == {"questions": (2, sum(map(len, replies.values()))),
                      "maths": (1, len(replies[PINNED_0_1_0["chat"][3]]))}
    assert len(llm.cache) == 2

    results = llm.generate([PINNED_0_1_0["chat"][1], PINNED_0_1_0["unicode_and_floats"][1]], project_name="maths")
    assert results.summary.sent == 0 and all(r.cached for r in results)
    for result, reply in zip(results, replies.values(), strict=True):
        assert result.response == json.loads(reply)
    assert llm.cache.lookup(list(replies), "questions") == replies  # the bytes 0.1.0 stored, to the byte

    report = llm.cache.clear("questions")  # both are still used by maths now
    assert (report.responses_deleted, report.kept_shared) == (0, 2)
    assert llm.cache.clear("maths").bytes_freed == sum(map(len, replies.values()))


def test_the_migration_runs_once_and_is_recorded(old_cache) -> None:
    directory, _ = old_cache
    ResponseCache(directory).close()
    with sqlite3.connect(directory / "cache.db") as db:
        keys = {key for (key,) in db.execute("SELECT key FROM Cache")}
        (meta,) = db.execute("SELECT value FROM Cache WHERE key = 'meta'").fetchone()
    assert not any(k.startswith(("r:", "p:")) for k in keys)
    assert json.loads(meta)["migrations"] == [name for name, _ in migrations_module.MIGRATIONS]
    assert json.loads(meta)["format"] == 2
    calls = []
    original = migrations_module.MIGRATIONS[0]
    migrations_module.MIGRATIONS[0] = (original[0], lambda *a: calls.append(a))
    try:
        ResponseCache(directory).close()
    finally:
        migrations_module.MIGRATIONS[0] = original
    assert calls == []


def test_a_migration_that_fails_halfway_leaves_the_0_1_0_cache_as_it_was(old_cache) -> None:
    directory, replies = old_cache
    with sqlite3.connect(directory / "cache.db") as db:
        rows_before = sorted(db.execute("SELECT key, value FROM Cache"))

    def fail_halfway(cache: diskcache.Cache, meta: dict[str, Any]) -> None:
        cache.set("response:half", b"{}")
        raise OSError("disk full")

    original = migrations_module.MIGRATIONS[0]
    migrations_module.MIGRATIONS[0] = (original[0], fail_halfway)
    try:
        with pytest.raises(CacheError, match=r"could not be upgraded .*disk full.*left as it was"):
            ResponseCache(directory)
    finally:
        migrations_module.MIGRATIONS[0] = original
    with sqlite3.connect(directory / "cache.db") as db:
        assert sorted(db.execute("SELECT key, value FROM Cache")) == rows_before
    assert ResponseCache(directory).lookup(list(replies), "questions") == replies


def test_a_cache_written_by_a_newer_release_is_refused_clearly(tmp_path: Path) -> None:
    cache = diskcache.Cache(str(tmp_path))
    cache.set("meta", json.dumps({"format": 99, "migrations": []}))
    cache.close()
    with pytest.raises(CacheError, match=r"newer dataformer_nb .*format 99"):
        ResponseCache(tmp_path)
