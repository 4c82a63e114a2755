"""Batched reads of the cache's rows: the one place that knows diskcache's table.

diskcache has no ``get_many``, and a ``Cache.get`` per key costs more than all the rest of
a warm re-run (benchmarks/: a loop of 10^5 gets is the warm floor; the whole warm re-run,
with these batched reads, is within 1.3x of it). ``RowReader`` runs the SELECT that
``Cache.get`` runs, for up to 500 keys a query, on its own read-only use of a SQLite
connection to the cache's database. ``RowReader.check`` runs when a cache opens: if a
diskcache release changes the table, the cache refuses to open with a clear error instead
of missing every hit. ``tests/test_rows.py`` compares it with ``Cache.get``.

Only rows stored inline (diskcache's ``MODE_RAW``) are read: a row that names a file or
holds a pickle was not written by dataformer_nb and is refused.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import diskcache

from ..errors import CacheError

TABLE_COLUMNS = frozenset({"key", "raw", "mode", "value", "tag", "filename", "expire_time"})
BATCH = 500
# Cache.get's SELECT (with tag=True) for rows stored inline, for a batch of keys; ?1 is the time now.
_SELECT = (f"SELECT key, value, tag FROM Cache WHERE raw = 1 AND mode = {diskcache.core.MODE_RAW}"
           " AND (expire_time IS NULL OR expire_time > ?1) AND key IN ({marks})")
# Which of a batch of keys exist at all.
_EXISTING = "SELECT key FROM Cache WHERE raw = 1 AND key IN ({marks})"


# One page of a project's responses, in the order they were stored; ``contains`` (lower case)
# matches the prompt or the response. NOT INDEXED: the table is read in rowid order and the
# scan stops once the page is full (LIMIT), so a page reads only the rows before it; through
# the key index, SQLite sorted every response by rowid first (measured: 222 ms for the first
# page of 10^5, against a few ms).
_PAGE = (f"SELECT key, value, tag FROM Cache NOT INDEXED WHERE raw = 1 AND mode = {diskcache.core.MODE_RAW}"
         " AND substr(key, 1, length(?1)) = ?1 AND json_valid(tag)"
         " AND EXISTS (SELECT 1 FROM json_each(tag, '$.projects') WHERE value = ?2)"
         " AND (?3 = '' OR instr(lower(coalesce(json_extract(tag, '$.prompt'), '')), ?3)"
         "      OR instr(lower(CAST(value AS TEXT)), ?3))"
         " ORDER BY rowid LIMIT ?4 OFFSET ?5")


class RowReader:
    """Reads the rows of the diskcache ``Cache`` table in ``directory``, many keys a query."""

    def __init__(self, cache: diskcache.Cache) -> None:
        self.directory = Path(cache.directory)
        self._database = self.directory / diskcache.core.DBNAME
        # The cache's own memory map and page cache (public settings): without the map, every
        # page is copied by a read() call, which cost a tenth of a warm re-run of 10^5 requests.
        self._pragmas = {"mmap_size": int(cache.sqlite_mmap_size), "cache_size": int(cache.sqlite_cache_size)}

    def check(self) -> None:
        """Raise CacheError unless the table has every column this module reads."""
        with self._connect() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(Cache)")}
        if not columns >= TABLE_COLUMNS:
            raise CacheError(
                f"the cache in {self.directory} has a table this version cannot read (diskcache "
                f"{diskcache.__version__}: columns {sorted(columns)}): install the diskcache version "
                "dataformer_nb's requirements name"
            )

    def read(self, keys: Sequence[str], prefix: str = "") -> Iterator[tuple[str, str | bytes, Any]]:
        """``(prefix + key, value, tag)`` for the keys found, in no particular order.

        A key that has a row not stored inline raises CacheError: such rows are looked
        for among the keys not found, so a warm re-run pays nothing for the check.
        Prefixed keys are made a batch at a time (10^5 of them weigh 12 MB).
        """
        with self._connect() as db:
            for start in range(0, len(keys), BATCH):
                batch = [prefix + key for key in keys[start:start + BATCH]]
                db.execute("BEGIN")  # both queries see one snapshot, whatever other processes write
                try:
                    rows = self._query(db, _SELECT, batch, (time.time(),))
                    if len(rows) < len(batch):
                        found = {key for key, _, _ in rows}
                        missing = [key for key in batch if key not in found]
                        for (key,) in self._query(db, _EXISTING, missing):
                            raise CacheError(refused_row(self.directory, key))
                finally:
                    db.execute("COMMIT")
                yield from rows

    def page(self, prefix: str, member: str, contains: str, limit: int, offset: int) -> list[tuple[str, Any, Any]]:
        """``(key, value, tag)`` of the rows under ``prefix`` whose tag lists ``member`` among its
        projects (and holds ``contains``, if given), ``limit`` of them after ``offset``."""
        with self._connect() as db:
            try:
                return db.execute(_PAGE, (prefix, member, contains.lower(), limit, offset)).fetchall()
            except sqlite3.Error as exc:
                raise CacheError(f"the cache in {self.directory} cannot be read ({exc})") from exc

    def _query(self, db: sqlite3.Connection, template: str, keys: Sequence[str],
               params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return db.execute(template.format(marks=",".join("?" * len(keys))), (*params, *keys)).fetchall()
        except sqlite3.Error as exc:
            raise CacheError(f"the cache in {self.directory} cannot be read ({exc})") from exc

    def compact(self) -> None:
        """Rewrite the database with its pages full (SQLite's VACUUM; writers wait meanwhile). The
        cache runs in SQLite's full auto-vacuum mode, which gives back only pages left wholly empty;
        responses deleted here and there leave pages part-empty, which only this packs."""
        with self._connect() as db:
            try:
                db.execute("VACUUM")
            except sqlite3.Error as exc:
                raise CacheError(f"the cache in {self.directory} could not be compacted ({exc}): "
                                 "try again when no other run is writing to it") from exc

    def _connect(self) -> _Connection:
        return _Connection(self._database, self._pragmas)


def refused_row(directory: Path, key: str) -> str:
    """The CacheError text for a row in ``directory`` that dataformer_nb did not write (``what`` it holds)."""
    return (f"the cache in {directory} holds a row not written by dataformer_nb ({key!r} is not stored inline "
            "as JSON): refusing to read it; clear the cache or pass another cache_dir=")


class _Connection:
    """A short-lived connection: opened per batch of reads, so any thread may read."""

    def __init__(self, database: Path, pragmas: dict[str, int]) -> None:
        self._database = database
        self._pragmas = pragmas
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._db = sqlite3.connect(str(self._database), timeout=60, isolation_level=None)
            for name, value in self._pragmas.items():
                self._db.execute(f"PRAGMA {name} = {value:d}")
        except sqlite3.Error as exc:
            raise CacheError(f"the cache in {self._database.parent} cannot be read ({exc})") from exc
        return self._db

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()
