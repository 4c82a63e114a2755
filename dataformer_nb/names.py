"""Project names: what a valid one is, for names the user types and names read from storage.

A name from a cache file is checked like one typed (``../../victim`` read from a tampered cache
must never reach the panel, an export's file name or a message as a name).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError

FULL = "full"  # clear_project_cache="full" clears everything: no project may be named so
_FORBIDDEN_IN_NAMES = set("/\\\x00")


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


def stored_name(name: Any) -> str | None:
    """``name`` if it is a valid project name as stored (canonical), else None."""
    try:
        return name if normalize_project(name, "a stored project name") == name else None
    except ConfigurationError:
        return None
