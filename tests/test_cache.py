"""ResponseCache on its own: storage format, projects, clearing."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest

from dataformer_nb import CacheError, ConfigurationError, ResponseCache, UnknownProjectWarning
from dataformer_nb.cache.postgres import PostgresCache

RESPONSE = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}


@pytest.fixture(params=["local", "team"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResponseCache | PostgresCache]:
    """Each behaviour test runs against both stores: the local one and the team one (PostgreSQL)."""
    if request.param == "local":
        yield ResponseCache(tmp_path / "c")
        return
    store = PostgresCache(*request.getfixturevalue("team_url"))
    yield store
    store.close()


@pytest.fixture
def local_cache(tmp_path: Path) -> ResponseCache:
    """For the tests of the local store's own storage (SQLite, diskcache, files)."""
    return ResponseCache(tmp_path / "c")


def test_entries_are_shared_across_projects_and_survive_clearing_another(cache: ResponseCache) -> None:
    cache.put("k1", RESPONSE, "A")
    cache.put("k2", RESPONSE, "a")  # names are case-insensitive
    assert {k: json.loads(v) for k, v in cache.lookup(["k1", "k3"], "B").items()} == {"k1": RESPONSE}

    report = cache.clear("A")
    assert (report.responses_deleted, report.kept_shared) == (1, 1)
    assert "k1" in cache and "k2" not in cache
    assert [(p.name, p.responses) for p in cache.projects()] == [("b", 1)]


def test_projects_report_responses_bytes_and_last_used(cache: ResponseCache) -> None:
    cache.put("k1", RESPONSE, "x")
    cache.put("k2", {**RESPONSE, "id": "longer"}, "x")
    cache.put("k1", RESPONSE, "x")  # already a member: counted once
    (info,) = cache.projects()
    assert info.name == "x" and info.responses == 2 and info.bytes > 2 * len('{"choices":[]}')
    assert info.last_used.tzinfo is not None


def test_clear_full_empties_everything(cache: ResponseCache) -> None:
    for i in range(3):
        cache.put(f"k{i}", RESPONSE, f"p{i}")
    report = cache.clear("FULL")
    assert report.responses_deleted == 3 and report.projects == ("p0", "p1", "p2")
    assert len(cache) == 0 and cache.projects() == []


def test_clearing_an_unknown_project_warns_and_lists_known_ones(cache: ResponseCache) -> None:
    cache.put("k", RESPONSE, "known")
    with pytest.warns(UnknownProjectWarning, match="'nope'.*known projects: known"):
        report = cache.clear(["nope"])
    assert report.responses_deleted == 0 and "k" in cache


@pytest.mark.parametrize("spec", [3, None, {"a": 1}, ["ok", 5]])
def test_clear_of_a_wrong_type_raises(cache: ResponseCache, spec) -> None:
    with pytest.raises(ConfigurationError, match="clear_project_cache"):
        cache.clear(spec)


@pytest.mark.parametrize("name", ["", "  ", "../x", "a/b", "a\\b", "..", "full", "a\x00b", "x" * 201])
def test_bad_project_names_are_refused(cache: ResponseCache, name) -> None:
    with pytest.raises(ConfigurationError, match="project_name"):
        cache.put("k", RESPONSE, name)
    assert len(cache) == 0


def test_storage_is_json_without_eviction_and_owner_only(local_cache: ResponseCache) -> None:
    cache = local_cache
    cache.put("k", RESPONSE, "p")
    assert stat.S_IMODE(cache.directory.stat().st_mode) == 0o700
    with sqlite3.connect(cache.directory / "cache.db") as db:
        settings = dict(db.execute("SELECT key, value FROM Settings"))
        modes = {mode for (mode,) in db.execute("SELECT mode FROM Cache")}
        raw = db.execute("SELECT value FROM Cache WHERE key = 'response:k'").fetchone()[0]
    assert settings["eviction_policy"] == "none"
    assert modes == {diskcache.core.MODE_RAW}
    assert json.loads(raw) == RESPONSE  # format 2: the response row holds the response's own JSON


def test_a_pickled_value_is_refused_not_unpickled(local_cache: ResponseCache) -> None:
    cache = local_cache
    with diskcache.Cache(str(cache.directory)) as plain:  # default Disk: pickles
        plain.set("response:evil", {"response": object.__name__})
    with pytest.raises(CacheError, match="refusing to unpickle"):
        cache.get("evil")


def test_an_unwritable_cache_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match=r"cache_dir=.*cannot be opened"):
        ResponseCache(blocker / "cache")


def test_listeners_hear_clears(cache: ResponseCache) -> None:
    heard = []
    cache.subscribe(lambda: heard.append(1))
    cache.put("k", RESPONSE, "p")
    cache.clear("p")
    assert heard == [1]


def test_a_panel_nobody_holds_is_not_kept_alive_by_the_cache(cache: ResponseCache) -> None:
    import gc
    import weakref

    class Panel:
        def __init__(self) -> None:
            self.refreshed = 0

        def refresh(self) -> None:
            self.refreshed += 1

    kept, dropped = Panel(), Panel()
    cache.subscribe(kept.refresh)
    cache.subscribe(dropped.refresh)
    gone = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert gone() is None  # the cache's registry did not hold it
    cache.put("k", RESPONSE, "p")
    cache.clear("p")
    assert kept.refreshed == 1
    cache.unsubscribe(kept.refresh)
    cache.clear("full")
    assert kept.refreshed == 1


def test_a_reply_stored_as_its_own_bytes_reads_back_whole(cache: ResponseCache) -> None:
    raw = b'{\n  "choices": [{"message": {"role": "assistant", "content": "a,\\"projects\\":[\\"p\\"]"}}]\n}\n'
    cache.put_many([("k1", raw), ("k2", RESPONSE)], "p")
    assert cache.get("k1") == json.loads(raw) and cache.get("k2") == RESPONSE
    assert cache.lookup(["k1"], "p") == {"k1": raw}
    assert [(p.name, p.responses, p.bytes) for p in cache.projects()] == [
        ("p", 2, len(raw) + len(json.dumps(RESPONSE, separators=(",", ":"))))
    ]


@pytest.mark.parametrize("names", [['x"p', "p"], ["p", 'x"p'], ["pp", "p"], ['p"', "p"]])
def test_lookup_tells_a_project_from_names_that_contain_it(cache: ResponseCache, names: list[str]) -> None:
    first, second = names
    cache.put("k", RESPONSE, first)
    cache.lookup(["k"], second)  # joins: the entry now serves both
    cache.lookup(["k"], second)  # already a member: counted once
    assert sorted((p.name, p.responses) for p in cache.projects()) == sorted([(first, 1), (second, 1)])
    assert cache.clear(first).kept_shared == 1


def test_an_entry_written_in_another_key_order_is_still_read(tmp_path: Path) -> None:
    raw = diskcache.Cache(str(tmp_path / "c"))  # a format-1 (0.1.0) cache, migrated when opened
    raw.set("r:k", json.dumps({"size": 1, "projects": ["a"], "response": RESPONSE}).encode())
    raw.close()
    cache = ResponseCache(tmp_path / "c")
    assert json.loads(cache.lookup(["k"], "a")["k"]) == RESPONSE
    assert json.loads(cache.lookup(["k"], "b")["k"]) == RESPONSE


def test_a_hit_cleared_by_another_process_before_its_join_is_put_back(tmp_path: Path) -> None:
    """Found by the rival-process tests: a hit read before another process cleared the only
    project using it was returned, but not recorded, and deleted: the next run paid again."""
    mine, theirs = ResponseCache(tmp_path / "c"), ResponseCache(tmp_path / "c")
    theirs.put("k", RESPONSE, "theirs")
    read = mine._rows.read

    def read_then_rival_clears(*args: object, **kwargs: object):
        yield from read(*args, **kwargs)
        theirs.clear("theirs")  # between this lookup's read and its join

    mine._rows.read = read_then_rival_clears  # type: ignore[method-assign]
    assert json.loads(mine.lookup(["k"], "mine")["k"]) == RESPONSE
    assert "k" in mine and [(p.name, p.responses) for p in mine.projects()] == [("mine", 1)]


def test_a_row_inserted_between_the_readers_two_queries_is_not_called_foreign(tmp_path: Path) -> None:
    """Found by the rival-process tests: the check for rows not stored inline ran on a second
    snapshot, so a row another process inserted in between read as foreign."""
    cache, rival = ResponseCache(tmp_path / "c"), ResponseCache(tmp_path / "c")
    query = cache._rows._query

    def query_then_rival_inserts(db, template, keys, params=()):  # type: ignore[no-untyped-def]
        rows = query(db, template, keys, params)
        if "mode =" in template:
            rival.put("k", RESPONSE, "rival")
        return rows

    cache._rows._query = query_then_rival_inserts  # type: ignore[method-assign]
    assert list(cache._rows.read(["response:k"])) == []  # a miss in its snapshot, not an error
