"""The one adapter that reads diskcache's table: it must agree with Cache.get, and refuse a
table it does not know and rows it did not write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import diskcache
import pytest

from dataformer_nb import CacheError, ResponseCache
from dataformer_nb.cache.disk import JSONOnlyDisk
from dataformer_nb.cache.rows import RowReader


def test_the_reader_returns_what_cache_get_returns(tmp_path: Path) -> None:
    cache = diskcache.Cache(str(tmp_path), disk=JSONOnlyDisk, disk_min_file_size=2**30)
    cache.set("a", b'{"x":1}', tag='{"projects":["p"]}')
    cache.set("b", {"record": [1, "é"]})
    cache.set("gone", b"{}", expire=-1)  # already expired: get() sees nothing
    keys = ["a", "b", "gone", "missing", *[f"k{i}" for i in range(1200)]]
    for i in range(1200):
        cache.set(f"k{i}", b'{"i":%d}' % i, tag=str(i))

    read = {key: (value, tag) for key, value, tag in RowReader(cache).read(keys)}

    expected = {}
    for key in keys:
        value, tag = cache.get(key, tag=True)
        if value is not None:
            expected[key] = (value, tag)
    assert set(read) == set(expected) == {"a", "b", *[f"k{i}" for i in range(1200)]}
    assert read["a"] == expected["a"] == (b'{"x":1}', '{"projects":["p"]}')
    assert read["b"][0] == '{"record":[1,"é"]}' and expected["b"][0] == {"record": [1, "é"]}  # get() decodes
    assert all(read[k] == expected[k] for k in keys if k.startswith("k"))


def test_a_cache_whose_table_changed_refuses_to_open(tmp_path: Path) -> None:
    ResponseCache(tmp_path).close()
    with sqlite3.connect(tmp_path / "cache.db") as db:
        db.execute("ALTER TABLE Cache RENAME COLUMN tag TO label")
    with pytest.raises(CacheError, match="table this version cannot read"):
        ResponseCache(tmp_path)


def test_a_row_stored_in_a_file_is_refused_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "secret.json"
    outside.write_text('{"choices": [{"message": {"content": "stolen"}}]}')
    cache = ResponseCache(tmp_path / "c")
    with sqlite3.connect(cache.directory / "cache.db") as db:
        db.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size,"
                   " mode, filename, value) VALUES ('response:k', 1, 0, NULL, 0, 0, '{}', 0, ?, ?, NULL)",
                   (diskcache.core.MODE_BINARY, str(outside)))
    with pytest.raises(CacheError, match="not stored inline"):
        cache.lookup(["k"], "p")
    with pytest.raises(CacheError, match="not stored inline"):
        cache.get("k")


def test_clearing_never_deletes_a_file_a_row_names(tmp_path: Path) -> None:
    outside = tmp_path / "id_rsa"
    outside.write_text("private")
    cache = ResponseCache(tmp_path / "c")
    cache.put("k", {"choices": [{"message": {"content": "hi"}}]}, "p")
    with sqlite3.connect(cache.directory / "cache.db") as db:
        db.execute("UPDATE Cache SET mode = ?, filename = ? WHERE key = 'response:k'",
                   (diskcache.core.MODE_BINARY, str(outside)))
    cache.clear("full")
    assert outside.read_text() == "private"
