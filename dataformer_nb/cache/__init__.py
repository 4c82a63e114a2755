"""The response cache: one diskcache ``Cache`` (SQLite) in ``cache_dir``, JSON only, by project;
or a team's PostgreSQL database (``cache_url``), with the same interface and promises.

- ``.store``: ``ResponseCache``, responses and their projects, accounting, browsing,
  listeners; ``.postgres``: ``PostgresCache``, the same on PostgreSQL;
- ``.browse``: what both build on their pages of entries (all of them, JSONL, pandas);
- ``.records``: the records kept beside responses, and the checks of what is read back;
- ``.disk``: the ``Disk`` that stores JSON only; ``.rows``: batched reads of its table;
- ``.migrations``: the named migrations of the stored format;
- ``.writer``: fresh responses committed in groups, on a thread of its own.

It knows nothing of HTTP.
"""

from __future__ import annotations

from .postgres import PostgresCache
from .records import ClearReport, Entry, Hits, NewResponse, ProjectInfo, clear_names
from .store import FULL, ResponseCache, normalize_project

# Either store: what generate, the panel and the magics hold.
Store = ResponseCache | PostgresCache


def open_store(cache_dir: str, cache_url: str | None = None, schema: str | None = None) -> Store:
    """The team cache at ``cache_url`` (in ``schema``) if given, else the local one in ``cache_dir``."""
    if cache_url:
        return PostgresCache(cache_url, schema or "dataformer")
    return ResponseCache(cache_dir)


__all__ = ["FULL", "ClearReport", "Entry", "Hits", "NewResponse", "PostgresCache", "ProjectInfo", "ResponseCache",
           "Store", "clear_names", "normalize_project", "open_store"]
