"""Named migrations of the cache's stored format, each applied once, in order.

The ``meta`` record lists the names applied. Opening a cache runs the missing ones inside
one transaction (so a crash leaves the cache as it was) and records them; a new cache runs
them all, on nothing. Never edit a released migration: add the next one.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import diskcache

from .._json import dumpb, dumps, loads_or_none
from ..errors import DataformerWarning
from ..names import stored_name

Migration = Callable[[diskcache.Cache, dict[str, Any]], None]


def m001_responses_apart_from_their_projects(cache: diskcache.Cache, meta: dict[str, Any]) -> None:
    """0.1.0 (format 1) kept ``r:<key>`` = ``{"response": ..., "projects": [...], "size": n}``
    and ``p:<name>`` = ``{"entries", "bytes", "last_used"}``. Format 2 keeps the response's
    bytes as the value of ``response:<key>`` and its record as that row's tag, per-project
    token counts, and the project list and totals in ``meta``. Projects, memberships and sizes
    are kept; responses keep the bytes 0.1.0 stored."""
    now = time.time()
    old_keys = [k for k in cache.iterkeys() if isinstance(k, str) and k[:2] in ("r:", "p:")]
    for key in old_keys:
        stored = cache.get(key)
        data = stored if isinstance(stored, bytes) else dumpb(stored)
        record = _v1_record(key, data)
        if record is None:  # not what 0.1.0 wrote: left out, as a read of it would be refused
            warnings.warn(f"the 0.1 cache row {key[:40]!r} is not of the shape 0.1.0 wrote (or names a project "
                          "that is not valid): it is dropped", DataformerWarning, stacklevel=2)
            cache.delete(key)
            continue
        if key.startswith("r:"):
            response = _v1_response(data, record)
            usage = record["response"].get("usage") or {}
            entry = {
                "projects": list(record["projects"]), "size": record["size"], "created": now,
                "prompt_tokens": _count(usage.get("prompt_tokens")),
                "completion_tokens": _count(usage.get("completion_tokens")),
            }
            cache.set("response:" + key[2:], response, tag=dumps(entry))
            meta["responses"] += 1
            meta["bytes"] += record["size"]
        else:
            cache.set("project:" + key[2:], {
                "entries": record["entries"], "bytes": record["bytes"], "last_used": record["last_used"],
                "prompt_tokens": 0, "completion_tokens": 0, "saved_tokens": 0,
            })
            meta["projects"].append(key[2:])
        cache.delete(key)
    meta["projects"].sort()


def _v1_record(key: str, data: bytes) -> dict[str, Any] | None:
    """A 0.1.0 row's record if it has the shape 0.1.0 wrote, with valid project names; else None.
    (Added after 0.2.0 shipped this migration: rows 0.1.0 wrote migrate exactly as before.)"""
    record = loads_or_none(data)
    if not isinstance(record, dict):
        return None
    if key.startswith("p:"):
        counts = ("entries", "bytes", "last_used")
        ok = stored_name(key[2:]) is not None and all(type(record.get(c)) in (int, float) for c in counts)
        return record if ok else None
    projects = record.get("projects")
    ok = (isinstance(record.get("response"), dict) and type(record.get("size")) is int and isinstance(projects, list)
          and all(stored_name(p) is not None for p in projects))
    return record if ok else None


def _v1_response(data: bytes, record: dict[str, Any]) -> bytes:
    """The response's bytes as 0.1.0 stored them: it wrote ``{"response":`` + the bytes +
    ``,"projects":[...],"size":n}`` (compact JSON); anything else is re-encoded."""
    head = b'{"response":'
    tail = b',"projects":' + dumpb(record["projects"]) + b',"size":%d}' % record["size"]
    if data.startswith(head) and data.endswith(tail):
        inner = data[len(head):-len(tail)]
        try:
            if json.loads(inner) == record["response"]:
                return inner
        except ValueError:
            pass
    return dumpb(record["response"])


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_responses_apart_from_their_projects", m001_responses_apart_from_their_projects),
]
