"""The on-disk response cache, with the projects that use each response.

Storage is one diskcache ``Cache`` (SQLite) through ``JSONOnlyDisk``: every value is JSON
held inline in SQLite (never pickled, never in a file of its own), eviction is off, and
every change is one transaction, so a killed process loses nothing it had committed.

Stored format 2, under string keys (``<key>`` is the SHA-256 of ``dataformer_nb.cachekey``):

- ``meta``: ``{"format": 2, "created": t, "migrations": [names], "projects": [names],
  "responses": n, "bytes": b}``, written when the cache is created; ``responses`` and
  ``bytes`` count unique responses;
- ``response:<key>``: the response's JSON document, as bytes, exactly as stored from the
  reply; the row's diskcache tag holds its entry record, JSON text:
  ``{"projects": [names], "size": bytes of the response, "prompt_tokens": p,
  "completion_tokens": c, "created": t, "prompt": text, "by": name, "cost": dollars}``: who uses
  the response, what it cost, and the prompt that asked for it (its first 1,000 characters, for
  browsing); ``by`` names the project that paid for it and ``cost`` is there when its model had a
  price. ``prompt``, ``by`` and ``cost`` are optional: records written before them have none, and
  every reader takes them as optional (without ``by``, the first project is taken as the payer);
- ``project:<name>``: ``{"entries": n, "bytes": b, "last_used": t, "prompt_tokens": p,
  "completion_tokens": c, "saved_tokens": s, "cost": dollars, "unpriced": u}``: the responses
  it uses and their bytes, the tokens of the responses it generated, the tokens it was served
  from the cache, and what its responses cost where their model had a price (``unpriced``
  counts those generated without one). ``cost`` and ``unpriced`` are optional: records written
  before them read as 0.

Times are epoch seconds. A repeated identical request's k-th sample has its own key (see
``cachekey``), so it needs nothing more here. The entry rides in the response's row (its
tag) so that a hit reads one row, as 0.1.0 did, without parsing bytes (measured on 10^5
hits: a second row per response, even joined in the same query, doubled the read); hits
are read 500 keys a query (``rows``). A write costs the same whatever the cache's size;
``projects()`` reads one small record per project. Clearing a project reads every entry
once, removes the project from each and deletes those no other project uses.

A cache written by 0.1.0 (format 1: ``r:<key>`` and ``p:<name>``) is migrated once, in one
transaction, when it is first opened (``migrations.py``); 0.1.0 cannot read format 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import diskcache

from .._format import plural
from .._json import dumps, is_count, is_time
from .._sync import warn
from ..errors import CacheError, ConfigurationError, DataformerWarning, UnknownProjectWarning
from ..names import FULL, normalize_project, stored_name
from ..settings import DEFAULT_CACHE_DIR
from .browse import Browsing
from .disk import JSONOnlyDisk
from .listeners import Observed
from .migrations import MIGRATIONS
from .records import (
    ClearReport,
    Entry,
    Hits,
    NewResponse,
    ProjectInfo,
    _decode_records,
    _entry,
    _entry_record,
    _finite,
    _new_response,
    clear_names,
    without_entry,
)
from .rows import RowReader

FORMAT = 2
READ_BATCH = 500
T = TypeVar("T")
META = "meta"
RESPONSE, PROJECT = "response:", "project:"
class ResponseCache(Browsing, Observed):
    """Responses on disk under ``directory``, each tagged with the projects that used it."""

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_CACHE_DIR) -> None:
        self.directory = Path(directory).expanduser().resolve()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.directory),
                disk=JSONOnlyDisk,
                eviction_policy="none",
                size_limit=2**62,
                disk_min_file_size=2**30,  # every value inline in SQLite: one atomic write each
                cull_limit=0,  # nothing expires or is evicted: culling would be a wasted query per write
                statistics=False,
            )
        except sqlite3.DatabaseError as exc:
            raise _open_failed(directory, exc) from exc
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(
                f"cache_dir={str(directory)!r} cannot be opened for writing ({exc}): "
                "pass another cache_dir= or fix the directory's permissions"
            ) from exc
        _owner_only(self.directory)
        self._rows = RowReader(self._cache)
        self._rows.check()
        self._migrate()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r})"

    @property
    def location(self) -> str:
        """The cache's directory, as messages and the panel name it."""
        return str(self.directory)

    def has_project(self, project: str) -> bool:
        """Whether ``project`` (a valid name) is in the cache."""
        return project in self._meta()["projects"]

    def __len__(self) -> int:
        """The number of cached responses."""
        return int(self._meta()["responses"])

    @property
    def stored_bytes(self) -> int:
        """The bytes of the cached responses (each counted once, however many projects use it)."""
        return int(self._meta()["bytes"])

    def volume(self) -> int:
        """Bytes the cache's files take on disk."""
        return int(self._cache.volume())

    def compact(self) -> int:
        """Pack the cache's database, giving back to the disk the room deleted responses left in
        it (part-empty pages, which later responses would fill); the bytes freed.

        SQLite rewrites its database to do it (VACUUM): for a large cache it takes seconds and
        needs free disk space as large as the cache, and other runs' writes wait meanwhile.
        Raises CacheError if the database is busy or the disk is full; the cache is unchanged then.
        """
        before = self.volume()
        self._rows.compact()
        self.notify()
        return max(before - self.volume(), 0)

    def close(self) -> None:
        """Close the SQLite connection (it reopens on next use)."""
        self._cache.close()

    # Reading and writing responses

    @staticmethod
    def exists(directory: str | os.PathLike[str]) -> bool:
        """Whether ``directory`` holds a cache (without creating one, as opening does)."""
        return (Path(directory).expanduser() / diskcache.core.DBNAME).is_file()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (RESPONSE + key) in self._cache

    def get(self, key: str) -> dict[str, Any] | None:
        """The response cached under ``key``, or None."""
        data = self._read(RESPONSE + key)
        return None if data is None else json.loads(data)

    def lookup(self, keys: Iterable[str], project: str) -> Hits:
        """The cached responses among ``keys``, as JSON, each now recorded as used by ``project``."""
        project = normalize_project(project)
        found = Hits()
        joining: list[NewResponse] = []
        saved = 0
        for rows in _batched(self._rows.read(list(keys), RESPONSE), READ_BATCH):
            # Entries are decoded a batch at a time: 10^5 decoded at once weigh 40 MB.
            readable = [(key, value, tag) for key, value, tag in rows
                        if isinstance(value, bytes) and isinstance(tag, str)]
            for (row_key, response, _), record in zip(readable, self._records([r[2] for r in readable]), strict=True):
                if record is None:
                    continue  # damaged: a miss, sent again, and the new response replaces it
                key = row_key[len(RESPONSE):]
                found[key] = response
                saved += record["prompt_tokens"] + record["completion_tokens"]
                if project not in record["projects"]:
                    joining.append(NewResponse(key, response, record["prompt_tokens"], record["completion_tokens"]))
        if found:
            with self._transact():
                # Read before this write lock: another process may have cleared a response since.
                # The caller has it, so it goes back in, for this project: no one pays for it again.
                restored = [len(item.data) for item in joining if self._add_response(item, project)]
                self._add_to_totals(len(restored), sum(restored))
                sizes = [self._join(item.key, project) for item in joining]
                joined = [size for size in sizes if size is not None]
                self._add_to_project(project, len(restored) + len(joined), sum(restored) + sum(joined),
                                     saved_tokens=saved)
        found.saved_tokens = saved
        return found

    def users(self, keys: Iterable[str]) -> dict[str, frozenset[str]]:
        """The projects using each cached response among ``keys``; reads only, writes nothing."""
        found: dict[str, frozenset[str]] = {}
        for rows in _batched(self._rows.read(list(keys), RESPONSE), READ_BATCH):
            rows = [row for row in rows if isinstance(row[2], str)]
            for (row_key, _, _), record in zip(rows, self._records([r[2] for r in rows]), strict=True):
                if record is not None:
                    found[row_key[len(RESPONSE):]] = frozenset(record["projects"])
        return found

    # Browsing a project

    def entries(self, project: str, offset: int = 0, limit: int = 50, contains: str | None = "") -> list[Entry]:
        """A page of the responses ``project`` uses, in the order they were stored: ``limit`` of them
        after ``offset``, only those whose prompt or response holds ``contains`` (any case) if given.
        Reads only the page (and the rows an offset skips), whatever the cache's size."""
        project = normalize_project(project)
        contains = "" if contains is None else contains  # None, like "": every response
        if not isinstance(contains, str):
            raise ConfigurationError(f"contains={contains!r} must be a string (\"\" or None for every response)")
        rows = [row for row in self._rows.page(RESPONSE, project, contains, limit, offset) if isinstance(row[1], bytes)]
        records = self._records([tag for _, _, tag in rows])
        entries = [_entry(key[len(RESPONSE):], value, record) for (key, value, _), record in zip(rows, records,
                                                                                                strict=True)
                   if record is not None]
        return [entry for entry in entries if entry is not None]

    def remove(self, project: str, key: str) -> bool:
        """Drop one response from ``project``: deleted if no other project uses it, else kept for
        them. Whether ``project`` used it."""
        project = normalize_project(project)
        with self._transact():
            found = self._read_entry(key)
            if found is None or project not in found[1]["projects"]:
                return False
            response, record = found
            remaining = [p for p in record["projects"] if p != project]
            if remaining:
                self._write(RESPONSE + key, response, {**record, "projects": remaining})
            else:
                self._delete(RESPONSE + key)
                self._add_to_totals(-1, -int(record["size"]))
            own = self._project_record(project)
            if own is not None:
                self._write(PROJECT + project, without_entry(own, record, project))
        self.notify()
        return True

    def put(self, key: str, response: Mapping[str, Any] | bytes, project: str) -> None:
        """Store ``response`` under ``key`` for ``project`` (committed before returning)."""
        self.put_many([(key, response)], project)

    def put_many(self, items: Iterable[NewResponse | tuple[str, Mapping[str, Any] | bytes]], project: str) -> None:
        """Store each response for ``project``, all in one transaction.

        An item is a ``NewResponse`` or a ``(key, response)`` pair, the response a
        dict or its JSON bytes (one object), stored as they are.
        """
        project = normalize_project(project)
        new = [_new_response(item) for item in items]
        if not new:
            return
        added = added_bytes = prompt = completion = unpriced = 0
        cost = 0.0
        with self._transact():
            stored = []
            for item in new:
                prompt, completion = prompt + item.prompt_tokens, completion + item.completion_tokens
                cost, unpriced = (cost, unpriced + 1) if item.cost is None else (cost + item.cost, unpriced)
                size, is_new = self._store(item, project)
                if size is None:
                    continue
                if is_new:
                    stored.append(size)
                added, added_bytes = added + 1, added_bytes + size
            self._add_to_totals(len(stored), sum(stored))
            self._add_to_project(project, added, added_bytes, prompt_tokens=prompt, completion_tokens=completion,
                                 cost=cost, unpriced=unpriced)

    def touch(self, project: str) -> None:
        """Record that ``project`` was used now, even if nothing was added to it."""
        with self._transact():
            self._add_to_project(normalize_project(project), 0, 0)

    # Projects

    def projects(self) -> list[ProjectInfo]:
        """Every project, most recently used first."""
        infos = []
        for name in self._meta()["projects"]:
            record = self._project_record(name)
            if record is not None:
                infos.append(ProjectInfo(
                    name, record["entries"], record["bytes"],
                    datetime.fromtimestamp(record["last_used"], tz=timezone.utc),
                    record["prompt_tokens"], record["completion_tokens"], record["saved_tokens"],
                    record.get("cost") if record.get("cost") and not record.get("unpriced") else None,
                ))
        return sorted(infos, key=lambda p: p.last_used, reverse=True)

    def clear(self, projects: str | Iterable[str]) -> ClearReport:
        """Clear one project, several, or everything (``"full"``). Names are case-insensitive.

        A response another project still uses is kept, so clearing one project never makes
        another pay again. An unknown name warns and lists the known projects.
        """
        names = clear_names(projects)
        if FULL in names:
            return self._clear_all()
        known = set(self._meta()["projects"])
        unknown = [n for n in names if n not in known]
        if unknown:
            warn(f"clear_project_cache: no project named {', '.join(map(repr, unknown))} in the cache; "
                 f"known projects: {', '.join(sorted(known)) or 'none'}", UnknownProjectWarning)
        names = [n for n in names if n in known]
        report = self._clear_projects(set(names)) if names else ClearReport((), 0, 0, 0)
        self.notify()
        return report

    def _clear_projects(self, names: set[str]) -> ClearReport:
        deleted = freed = kept = 0
        with self._transact():
            # Under the write lock and before any write here, the reader sees exactly this
            # transaction's starting state.
            rows = list(self._rows.read([k for k in self._cache.iterkeys() if k.startswith(RESPONSE)]))
            records = self._records([entry for _, _, entry in rows])
            for (key, response, _), record in zip(rows, records, strict=True):
                if record is None or not isinstance(response, bytes) or names.isdisjoint(record["projects"]):
                    continue
                remaining = [p for p in record["projects"] if p not in names]
                if remaining:
                    self._write(key, response, {**record, "projects": remaining})
                    kept += 1
                else:
                    self._delete(key)
                    deleted += 1
                    freed += record["size"]
            for name in names:
                self._delete(PROJECT + name)
            meta = self._meta()
            meta["projects"] = [p for p in meta["projects"] if p not in names]
            meta["responses"] -= deleted
            meta["bytes"] -= freed
            self._write(META, meta)
        return ClearReport(tuple(sorted(names)), deleted, freed, kept)

    def _clear_all(self) -> ClearReport:
        with self._transact():
            meta = self._meta()
            report = ClearReport(tuple(meta["projects"]), meta["responses"], meta["bytes"], 0)
            self._cache.clear(retry=True)
            self._write(META, {**meta, "projects": [], "responses": 0, "bytes": 0})
        self.notify()
        return report

    # Copying between stores (cache/copy.py)

    def all_rows(self, page: int = 1000) -> Iterator[list[tuple[str, bytes, dict[str, Any]]]]:
        """Every response as ``(key, JSON bytes, entry record)``, ``page`` at a time, records
        checked (a damaged row is left out with a warning)."""
        keys = [k[len(RESPONSE):] for k in self._cache.iterkeys() if isinstance(k, str) and k.startswith(RESPONSE)]
        for start in range(0, len(keys), page):
            rows = [(k, v, t) for k, v, t in self._rows.read(keys[start:start + page], RESPONSE)
                    if isinstance(v, bytes) and isinstance(t, str)]
            records = self._records([t for _, _, t in rows])
            yield [(k[len(RESPONSE):], v, r) for (k, v, _), r in zip(rows, records, strict=True) if r is not None]

    def merge_rows(self, rows: list[tuple[str, bytes, dict[str, Any]]]) -> None:
        """Add responses with their records, in one transaction: a key already here gains the
        projects it lacks (its own bytes and record otherwise kept). Project counts are not
        touched: ``merge_accounting`` recounts them."""
        with self._transact():
            added = added_bytes = 0
            for key, body, record in rows:
                found = self._read_entry(key)
                if found is None:
                    self._write(RESPONSE + key, body, record)
                    added, added_bytes = added + 1, added_bytes + len(body)
                else:
                    here, mine = found[1]["projects"], [p for p in record["projects"] if p not in found[1]["projects"]]
                    if mine:
                        self._write(RESPONSE + key, found[0], {**found[1], "projects": [*here, *mine]})
            self._add_to_totals(added, added_bytes)

    def project_records(self) -> dict[str, dict[str, Any]]:
        """Each project's accounting record, checked (see ``projects``)."""
        found = {}
        for name in self._meta()["projects"]:
            record = self._project_record(name)
            if record is not None:
                found[name] = record
        return found

    def merge_accounting(self, source: str, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Add the tokens, savings and costs of ``records`` (another store's projects) once per
        ``source`` (a second copy from it adds nothing), and recount every project's responses
        and bytes from the rows."""
        with self._transact():
            meta = self._meta()
            copied = meta.get("copied_from", [])
            copied = copied if isinstance(copied, list) else []
            counts: dict[str, list[int]] = {}
            responses = size = 0
            for rows in self.all_rows():  # one pass: every project's counts, and the totals
                for _, body, record in rows:
                    responses, size = responses + 1, size + len(body)
                    for project in record["projects"]:
                        count = counts.setdefault(project, [0, 0])
                        count[0], count[1] = count[0] + 1, count[1] + len(body)
            names = sorted(n for n in {*meta["projects"], *records, *counts} if stored_name(n) is not None)
            for name in names:
                own = self._project_record(name) or {"last_used": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                                     "saved_tokens": 0, "cost": 0.0, "unpriced": 0}
                theirs = records.get(name) if source not in copied else None
                if theirs:
                    own = {**own, "last_used": max(own["last_used"], theirs["last_used"]),
                           **{f: own[f] + theirs[f] for f in ("prompt_tokens", "completion_tokens", "saved_tokens",
                                                               "cost", "unpriced")}}
                entries, used = counts.get(name, [0, 0])
                self._write(PROJECT + name, {**own, "entries": entries, "bytes": used})
            self._write(META, {**self._meta(), "projects": names, "responses": responses, "bytes": size,
                               "copied_from": copied if source in copied else [*copied, source]})

    # Internals

    def _migrate(self) -> None:
        """Bring the stored format to ``FORMAT`` (one read when it already is)."""
        meta = self._read(META)
        if meta is not None and meta.get("format") == FORMAT and len(meta["migrations"]) == len(MIGRATIONS):
            return
        with self._transact():
            meta = self._read(META)  # again under the write lock: another process may have migrated
            if meta is None:
                meta = {"format": FORMAT, "created": time.time(), "migrations": [], "projects": [],
                        "responses": 0, "bytes": 0}
            if meta.get("format", 0) > FORMAT:
                raise CacheError(
                    f"the cache in {self.directory} was written by a newer dataformer_nb (format "
                    f"{meta['format']}, this version reads {FORMAT}): upgrade dataformer_nb or pass another cache_dir="
                )
            for name, migration in MIGRATIONS:
                if name not in meta["migrations"]:
                    try:
                        migration(self._cache, meta)
                    except (OSError, sqlite3.Error, ValueError, KeyError, TypeError) as exc:
                        raise CacheError(
                            f"the cache in {self.directory} could not be upgraded to format {FORMAT} by {name} "
                            f"({type(exc).__name__}: {exc}); it was left as it was: free disk space or fix "
                            "permissions and open it again, or pass another cache_dir="
                        ) from exc
                    meta["migrations"].append(name)
            meta["format"] = FORMAT
            self._write(META, meta)

    def _meta(self) -> dict[str, Any]:
        """The meta record, checked: project names read from it are valid names (a tampered
        ``../../victim`` never reaches the panel or a file name), totals whole numbers."""
        meta = self._read(META)
        if not isinstance(meta, dict) or type(meta.get("format")) is not int:
            raise CacheError(f"the cache in {self.directory} has lost its meta record: "
                             "it was not written by dataformer_nb; pass another cache_dir=")
        names = meta.get("projects")
        valid = sorted({n for n in names if stored_name(n) is not None}) if isinstance(names, list) else []
        if not isinstance(names, list) or len(valid) != len(names):
            what = "project names that are not valid" if isinstance(names, list) else "no list of projects"
            warnings.warn(f"the cache in {self.directory} lists {what}: they are left out (the cache was changed "
                          "by something other than dataformer_nb)", DataformerWarning, stacklevel=3)
        migrations = meta.get("migrations")
        return {**meta, "projects": valid,
                "migrations": [m for m in migrations if isinstance(m, str)] if isinstance(migrations, list) else [],
                "responses": meta["responses"] if is_count(meta.get("responses")) else 0,
                "bytes": meta["bytes"] if is_count(meta.get("bytes")) else 0}

    @contextlib.contextmanager
    def _sqlite_errors(self, doing: str) -> Iterator[None]:
        """SQLite's errors as a CacheError naming the cache (the one place they are mapped)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise CacheError(f"the cache in {self.directory} cannot be {doing} ({exc})") from exc

    @contextlib.contextmanager
    def _transact(self) -> Iterator[None]:
        """One transaction; its BEGIN and COMMIT happen entering and leaving the ``with``, so
        that is where their errors (a disk that fills at commit) are mapped."""
        with self._sqlite_errors("written"), self._cache.transact(retry=True):
            yield

    def _read(self, key: str) -> Any:
        with self._sqlite_errors("read"):
            return self._cache.get(key, retry=True)

    def _write(self, key: str, value: Mapping[str, Any] | bytes, entry: Mapping[str, Any] | None = None) -> None:
        """Store ``value`` under ``key``, with ``entry`` (a response's record) as its tag."""
        with self._sqlite_errors("written"):
            self._cache.set(key, value, tag=None if entry is None else dumps(entry), retry=True)

    def _add_response(self, item: NewResponse, project: str) -> bool:
        """Store a new response for ``project`` unless its key is taken; whether it was stored.
        The caller adds what was stored to the totals (once per transaction)."""
        entry: dict[str, Any] = {"projects": [project], "size": len(item.data), "created": int(time.time()),
                                 "prompt_tokens": item.prompt_tokens, "completion_tokens": item.completion_tokens,
                                 "by": project}
        if item.prompt:
            entry["prompt"] = item.prompt
        if item.cost is not None:
            entry["cost"] = item.cost
        with self._sqlite_errors("written"):
            # add() inserts only if the key is absent: one statement fewer than a check and a set.
            return bool(self._cache.add(RESPONSE + item.key, item.data, tag=dumps(entry), retry=True))

    def _delete(self, key: str) -> None:
        with self._sqlite_errors("written"):
            self._cache.delete(key, retry=True)

    def _read_entry(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        """The response under ``key`` and its entry record, or None if there is none."""
        with self._sqlite_errors("read"):
            response, tag = self._cache.get(RESPONSE + key, tag=True, retry=True)
        if not isinstance(response, bytes) or not isinstance(tag, str):
            return None
        record = self._records([tag])[0]
        return None if record is None else (response, record)

    def _store(self, item: NewResponse, project: str) -> tuple[int | None, bool]:
        """Store ``item`` for ``project``, its row read at most once: (the size it adds to the
        project, whether its row is new); (None, False) if the project already had it."""
        if self._add_response(item, project):
            return len(item.data), True
        found = self._read_entry(item.key)
        if found is None:
            # A damaged row under its key (or one removed since): the new response takes its place.
            # Without this, a damaged row would be a miss that every run paid for again.
            self._delete(RESPONSE + item.key)
            return (len(item.data), True) if self._add_response(item, project) else (None, False)
        return self._join_entry(item.key, found, project), False

    def _join(self, key: str, project: str) -> int | None:
        """Add ``project`` to the entry of ``key``: the response's size if it was added, else None."""
        found = self._read_entry(key)
        return None if found is None else self._join_entry(key, found, project)

    def _join_entry(self, key: str, found: tuple[bytes, dict[str, Any]], project: str) -> int | None:
        response, record = found
        if project in record["projects"]:
            return None
        self._write(RESPONSE + key, response, {**record, "projects": [*record["projects"], project]})
        return record["size"]

    def _records(self, tags: list[str]) -> list[dict[str, Any] | None]:
        """The entry records of response rows (their tags), each checked: None for one that is not
        JSON of the shape written, counted in one warning per call."""
        records = [_entry_record(r) for r in _decode_records(tags)]
        damaged = records.count(None)
        if damaged:
            warnings.warn(f"{plural(damaged, 'response')} in the cache in {self.directory} "
                          f"{'has' if damaged == 1 else 'have'} a damaged record: read as not cached (a new "
                          "response replaces each); the cache was changed by something other than dataformer_nb",
                          DataformerWarning, stacklevel=3)
        return records

    def _project_record(self, name: str) -> dict[str, Any] | None:
        """A project's record, checked; None (with a warning) if it is missing or damaged."""
        record = self._read(PROJECT + name)
        if record is None:
            return None
        fields = ("entries", "bytes", "prompt_tokens", "completion_tokens", "saved_tokens")
        ok = (isinstance(record, dict) and all(is_count(record.get(f, 0)) for f in fields)
              and is_time(record.get("last_used", 0)) and _finite(record.get("cost", 0.0))
              and is_count(record.get("unpriced", 0)))
        if not ok:
            warnings.warn(f"the record of project {name!r} in the cache in {self.directory} is damaged: its counts "
                          "start again from zero (its responses are kept)", DataformerWarning, stacklevel=3)
            return None
        return {"last_used": 0, "cost": 0.0, "unpriced": 0, **{f: 0 for f in fields}, **record}

    def _add_to_project(self, project: str, entries: int, size: int, *, prompt_tokens: int = 0,
                        completion_tokens: int = 0, saved_tokens: int = 0, cost: float = 0.0,
                        unpriced: int = 0) -> None:
        record = self._project_record(project)
        meta = self._meta()
        if record is None or project not in meta["projects"]:
            record = record or {"entries": 0, "bytes": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                "saved_tokens": 0}
            meta["projects"] = sorted({*meta["projects"], project})
            self._write(META, meta)
        self._write(PROJECT + project, {
            "entries": record["entries"] + entries,
            "bytes": record["bytes"] + size,
            "last_used": time.time(),
            "prompt_tokens": record["prompt_tokens"] + prompt_tokens,
            "completion_tokens": record["completion_tokens"] + completion_tokens,
            "saved_tokens": record["saved_tokens"] + saved_tokens,
            "cost": record.get("cost", 0.0) + cost,
            "unpriced": record.get("unpriced", 0) + unpriced,
        })

    def _add_to_totals(self, responses: int, size: int) -> None:
        if not responses:
            return
        meta = self._meta()
        meta["responses"] += responses
        meta["bytes"] += size
        self._write(META, meta)


def _owner_only(directory: Path) -> None:
    """Make the cache directory 0700 and its database files 0600, as a new cache is: a cache
    made by an older release, or under another umask, may be readable by other users."""
    paths = [directory, *(directory / name for name in ("cache.db", "cache.db-wal", "cache.db-shm"))]
    for path, mode in zip(paths, (0o700, 0o600, 0o600, 0o600), strict=True):
        try:
            if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(mode)
        except OSError as exc:
            warnings.warn(f"{path} is readable by other users and cannot be made private ({exc}): "
                          "move the cache to a directory you own", DataformerWarning, stacklevel=3)
            return


def _open_failed(directory: str | os.PathLike[str], error: sqlite3.DatabaseError) -> CacheError:
    """Why a cache could not be opened, told apart by SQLite's words: a full disk or a read-only
    one is not a damaged cache (after freeing space it opens fine), and must not be moved away."""
    said = str(error).lower()
    where = f"cache_dir={str(directory)!r}"
    if "full" in said:
        return CacheError(f"{where}: no space left on the disk that holds it ({error}); the cache is not damaged: "
                          "free some space and run again, or pass another cache_dir=")
    if "readonly" in said or "read-only" in said or "read only" in said:
        return CacheError(f"{where} is on a read-only disk or in a directory you cannot write ({error}): "
                          "pass a cache_dir= you can write; the cache itself is not damaged")
    if "unable to open" in said or "disk i/o" in said:
        return CacheError(f"{where} cannot be opened ({error}): check that the disk is there and the directory is "
                          "yours, or pass another cache_dir=")
    return CacheError(f"{where} holds a cache.db that SQLite cannot read ({error}): it is damaged or not a cache; "
                      "move it away (nothing else in the directory is used) or pass another cache_dir=")


def _batched(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
