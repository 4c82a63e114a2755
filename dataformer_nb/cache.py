"""The on-disk response cache, with the projects that use each response.

Storage is one diskcache ``Cache`` (SQLite) that stores JSON only, never pickles, never
evicts, and keeps every value inline in SQLite so that each write is one atomic
transaction (a killed process loses nothing it had committed).

Layout, under the opaque keys the client computes:

- ``r:<key>`` -> ``{"response": {...}, "projects": ["questions", ...], "size": bytes}``
- ``p:<project>`` -> ``{"entries": n, "bytes": b, "last_used": epoch seconds}``

A hit therefore costs one read, a write costs the same whatever the cache's size, and
:meth:`ResponseCache.projects` reads one small record per project. Clearing a project
scans the entries once, removes the project from each and deletes those no other project
uses.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import diskcache

from .errors import CacheError, ConfigurationError, UnknownProjectWarning

DEFAULT_CACHE_DIR = ".cache/dataformer"
FULL = "full"
_RESPONSE, _PROJECT = "r:", "p:"
_READ_BATCH = 500
_FORBIDDEN_IN_NAMES = set("/\\\x00")
# Listeners by directory: every ResponseCache on one directory in this process shares them,
# so a panel hears the generate of any AsyncLLM that writes there.
_LISTENERS: dict[Path, list[Callable[[], None]]] = {}


class _JSONDisk(diskcache.Disk):
    """Keys are strings, values JSON; a pickled row (never written by us) is refused."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if not isinstance(key, str):
            raise CacheError(f"cache keys are strings, not {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise CacheError("the cache holds a pickled key: refusing to unpickle it")
        return key

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if isinstance(value, _EncodedEntry):
            return super().store(value.data, read, key)
        return super().store(_encode(value), read, key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise CacheError("the cache holds a pickled value: refusing to unpickle it")
        data = super().fetch(mode, filename, value, read)
        return json.loads(data)


@dataclass(frozen=True)
class _EncodedEntry:
    """A response entry already in its stored JSON form (re-encoding a reply costs CPU)."""

    data: bytes

    @classmethod
    def new(cls, response: bytes, project: str) -> _EncodedEntry:
        return cls(b'{"response":' + response + b',"projects":' + _encode([project]) + b',"size":%d}' % len(response))


def _split_entry(data: bytes, project: str, name: bytes) -> tuple[bytes, bool]:
    """An entry's response (still JSON), and whether ``project`` (JSON: ``name``) uses it.

    Entries are written as ``{"response":...,"projects":[...],"size":n}``: the last
    ``,"projects":`` is ours, as a quote inside the list's strings is escaped, and the
    list is decoded only when it is neither ``[project]`` nor free of ``project``.
    """
    cut = data.rfind(b',"projects":')
    if not data.startswith(b'{"response":') or cut < 0:
        entry = json.loads(data)
        return _encode(entry["response"]), project in entry["projects"]
    tail = data[cut + len(b',"projects":'):]
    if tail.startswith(b"[" + name + b"],"):
        member = True
    elif name not in tail:
        member = False
    else:
        member = project in json.loads(b"{" + data[cut + 1:])["projects"]
    return data[len(b'{"response":'):cut], member


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()




@dataclass(frozen=True)
class ProjectInfo:
    """What one project holds: ``responses`` it used, their ``bytes``, when it was last used."""

    name: str
    responses: int
    bytes: int
    last_used: datetime


@dataclass(frozen=True)
class ClearReport:
    """What a clear removed: project names, memberships, entries deleted and bytes freed.

    ``kept_shared`` counts responses the cleared projects used that stay because another
    project still uses them.
    """

    projects: tuple[str, ...]
    responses_deleted: int
    bytes_freed: int
    kept_shared: int

    def __str__(self) -> str:
        names = ", ".join(self.projects) or "nothing"
        text = f"cleared {names}: {plural(self.responses_deleted, 'response')} deleted ({human_size(self.bytes_freed)})"
        if self.kept_shared:
            text += f", {self.kept_shared} kept because other projects use them"
        return text


def normalize_project(name: object, source: str = "project_name") -> str:
    """The canonical (lower-case) form of a project name; a clear error for a bad one."""
    if not isinstance(name, str):
        raise ConfigurationError(f"{source}={name!r} is not a string: pass a project name such as 'questions'")
    canonical = name.strip().lower()
    bad_chars = any(c in _FORBIDDEN_IN_NAMES or not c.isprintable() for c in canonical)
    if not canonical or bad_chars or canonical in (".", "..") or len(canonical) > 200:
        raise ConfigurationError(
            f"{source}={name!r} is not a valid project name: use 1-200 printable characters "
            "without '/', '\\' or control characters"
        )
    if canonical == FULL:
        raise ConfigurationError(f"{source}={name!r} is reserved (clear_project_cache='full' clears everything)")
    return canonical


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")



class ResponseCache:
    """Responses on disk under ``directory``, each tagged with the projects that used it."""

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_CACHE_DIR) -> None:
        self.directory = Path(directory).expanduser().resolve()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._cache = diskcache.Cache(
                str(self.directory),
                disk=_JSONDisk,
                eviction_policy="none",
                size_limit=2**62,
                disk_min_file_size=2**30,  # every value inline in SQLite: one atomic write each
                statistics=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(
                f"cache_dir={str(directory)!r} cannot be opened for writing ({exc}): "
                "pass another cache_dir= or fix the directory's permissions"
            ) from exc

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r})"

    def __len__(self) -> int:
        """The number of cached responses."""
        return len(self._cache) - sum(1 for _ in self._project_keys())

    def volume(self) -> int:
        """Bytes the cache takes on disk."""
        return int(self._cache.volume())

    def close(self) -> None:
        self._cache.close()

    # Reading and writing responses

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (_RESPONSE + key) in self._cache

    def get(self, key: str) -> dict[str, Any] | None:
        """The response cached under ``key``, or None."""
        entry = self._read(_RESPONSE + key)
        return entry["response"] if entry else None

    def lookup(self, keys: Iterable[str], project: str) -> dict[str, bytes]:
        """The cached responses among ``keys``, as JSON, each now recorded as used by ``project``."""
        project = normalize_project(project)
        found: dict[str, bytes] = {}
        joining: list[str] = []
        name = _encode(project)
        for key, data in self._read_many([_RESPONSE + key for key in keys]):
            found[key[len(_RESPONSE):]], member = _split_entry(data, project, name)
            if not member:
                joining.append(key[len(_RESPONSE):])
        if joining:
            with self._transact():
                added = [self._join(_RESPONSE + key, project) for key in joining]
                self._update_summary(project, sum(1 for a in added if a), sum(added))
        return found

    def put(self, key: str, response: Mapping[str, Any] | bytes, project: str) -> None:
        """Store ``response`` under ``key`` for ``project`` (committed before returning)."""
        self.put_many([(key, response)], project)

    def put_many(self, items: Iterable[tuple[str, Mapping[str, Any] | bytes]], project: str) -> None:
        """Store each ``(key, response)`` for ``project``, all in one transaction.

        A response may be given as its JSON bytes (one object), stored as they are.
        """
        project = normalize_project(project)
        added = added_bytes = 0
        with self._transact():
            for key, response in items:
                entry = self._read(_RESPONSE + key)
                if entry is None:
                    data = response if isinstance(response, bytes) else _encode(response)
                    self._write(_RESPONSE + key, _EncodedEntry.new(data, project))
                    size = len(data)
                elif project not in entry["projects"]:
                    size = self._join(_RESPONSE + key, project, entry)
                else:
                    continue
                added, added_bytes = added + 1, added_bytes + size
            if added:
                self._update_summary(project, added, added_bytes)

    def touch(self, project: str) -> None:
        """Record that ``project`` was used now, even if nothing was added to it."""
        with self._transact():
            self._update_summary(normalize_project(project), 0, 0)

    # Projects

    def projects(self) -> list[ProjectInfo]:
        """Every project, most recently used first."""
        infos = []
        for key in self._project_keys():
            record = self._read(key)
            if record is not None:
                infos.append(ProjectInfo(
                    key[len(_PROJECT):], record["entries"], record["bytes"],
                    datetime.fromtimestamp(record["last_used"], tz=timezone.utc),
                ))
        return sorted(infos, key=lambda p: p.last_used, reverse=True)

    def clear(self, projects: str | Iterable[str]) -> ClearReport:
        """Clear one project, several, or everything (``"full"``). Names are case-insensitive.

        A response another project still uses is kept, so clearing one project never makes
        another pay again. An unknown name warns and lists the known projects.
        """
        names = _clear_names(projects)
        if FULL in names:
            return self._clear_all()
        known = {p.name for p in self.projects()}
        unknown = [n for n in names if n not in known]
        if unknown:
            warnings.warn(
                f"clear_project_cache: no project named {', '.join(map(repr, unknown))} in the cache; "
                f"known projects: {', '.join(sorted(known)) or 'none'}",
                UnknownProjectWarning,
                stacklevel=3,
            )
        names = [n for n in names if n in known]
        report = self._clear_projects(set(names)) if names else ClearReport((), 0, 0, 0)
        self.notify()
        return report

    def _clear_projects(self, names: set[str]) -> ClearReport:
        deleted = freed = kept = 0
        with self._transact():
            for key in list(self._cache.iterkeys()):
                if not key.startswith(_RESPONSE):
                    continue
                entry = self._read(key)
                if entry is None or names.isdisjoint(entry["projects"]):
                    continue
                remaining = [p for p in entry["projects"] if p not in names]
                if remaining:
                    self._write(key, {**entry, "projects": remaining})
                    kept += 1
                else:
                    self._cache.delete(key, retry=True)
                    deleted += 1
                    freed += entry["size"]
            for name in names:
                self._cache.delete(_PROJECT + name, retry=True)
        return ClearReport(tuple(sorted(names)), deleted, freed, kept)

    def _clear_all(self) -> ClearReport:
        with self._transact():
            names = tuple(sorted(key[len(_PROJECT):] for key in self._project_keys()))
            sizes = [self._read(k)["size"] for k in self._cache.iterkeys() if k.startswith(_RESPONSE)]
            self._cache.clear(retry=True)
        report = ClearReport(names, len(sizes), sum(sizes), 0)
        self.notify()
        return report

    # Observers: the panel refreshes itself when a generate or a clear changes the cache.

    def subscribe(self, listener: Callable[[], None]) -> None:
        _LISTENERS.setdefault(self.directory, []).append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        listeners = _LISTENERS.get(self.directory, [])
        if listener in listeners:
            listeners.remove(listener)

    def notify(self) -> None:
        for listener in list(_LISTENERS.get(self.directory, [])):
            listener()

    # Internals

    def _project_keys(self) -> Iterable[str]:
        # Keys iterate in sorted order and "p:" sorts before "r:": stop at the first response.
        for key in self._cache.iterkeys():
            if not key.startswith(_PROJECT):
                return
            yield key

    def _transact(self) -> Any:
        try:
            return self._cache.transact(retry=True)
        except sqlite3.Error as exc:
            raise CacheError(f"the cache in {self.directory} cannot be written ({exc})") from exc

    def _read(self, key: str) -> dict[str, Any] | None:
        try:
            return self._cache.get(key, retry=True)
        except sqlite3.Error as exc:
            raise CacheError(f"the cache in {self.directory} cannot be read ({exc})") from exc

    def _read_many(self, keys: list[str]) -> Iterator[tuple[str, bytes]]:
        """``(key, stored JSON)`` of the entries among ``keys``: one query per batch.

        diskcache has no get_many, and a get() per key costs more than all the rest of a
        warm re-run. This runs Cache.get's own SELECT over a batch of keys; a row not held
        inline as JSON (never written by us) goes through get(), which refuses pickles.
        """
        for start in range(0, len(keys), _READ_BATCH):
            batch = keys[start:start + _READ_BATCH]
            select = (f"SELECT key, mode, value FROM Cache WHERE raw = 1 AND key IN ({','.join('?' * len(batch))})"
                      " AND (expire_time IS NULL OR expire_time > ?)")
            try:
                rows = self._cache._sql(select, (*batch, time.time())).fetchall()
            except sqlite3.Error as exc:
                raise CacheError(f"the cache in {self.directory} cannot be read ({exc})") from exc
            for key, mode, value in rows:
                if mode == diskcache.core.MODE_RAW:
                    yield key, bytes(value)
                elif (entry := self._read(key)) is not None:
                    yield key, _encode(entry)

    def _write(self, key: str, value: Mapping[str, Any] | _EncodedEntry) -> None:
        try:
            self._cache.set(key, value, retry=True)
        except sqlite3.Error as exc:
            raise CacheError(f"the cache in {self.directory} cannot be written ({exc})") from exc

    def _join(self, key: str, project: str, entry: dict[str, Any] | None = None) -> int:
        """Add ``project`` to the entry under ``key`` (read unless given); its size if it was added, else 0."""
        entry = entry or self._read(key)
        if entry is None or project in entry["projects"]:
            return 0
        self._write(key, {**entry, "projects": [*entry["projects"], project]})
        return entry["size"]

    def _update_summary(self, project: str, entries: int, size: int) -> None:
        record = self._read(_PROJECT + project) or {"entries": 0, "bytes": 0}
        self._write(_PROJECT + project, {
            "entries": record["entries"] + entries,
            "bytes": record["bytes"] + size,
            "last_used": time.time(),
        })


def _clear_names(projects: object) -> list[str]:
    if isinstance(projects, str):
        items: list[object] = [projects]
    elif isinstance(projects, (list, tuple, set, frozenset)):
        items = list(projects)
    else:
        raise ConfigurationError(
            f"clear_project_cache={projects!r} must be a project name, a list of names, or 'full'"
        )
    names = []
    for item in items:
        if isinstance(item, str) and item.strip().lower() == FULL:
            names.append(FULL)
        else:
            names.append(normalize_project(item, "clear_project_cache"))
    return names
