"""The diskcache ``Disk`` of the cache: JSON only, never pickle, never a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diskcache

from .._json import dumps
from ..errors import CacheError
from .rows import refused_row


class JSONOnlyDisk(diskcache.Disk):
    """Keys are strings. Records (dicts) are stored as JSON text; responses as their JSON
    bytes, read back as bytes (a response is decoded only when a result asks for it).
    A row stored any other way was not written by dataformer_nb and is refused."""

    def __init__(self, directory: str, **settings: Any) -> None:
        super().__init__(directory, **settings)
        self.cache_directory = Path(directory)  # for messages (Disk keeps its own privately)

    def put(self, key: Any) -> tuple[Any, bool]:
        if not isinstance(key, str):
            raise CacheError(f"cache keys are strings, not {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise CacheError("the cache holds a pickled key: refusing to unpickle it")
        return key

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if isinstance(value, bytes):
            return super().store(value, read, key)
        return super().store(dumps(value), read, key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise CacheError("the cache holds a pickled value: refusing to unpickle it")
        if mode != diskcache.core.MODE_RAW:
            raise CacheError(refused_row(self.cache_directory, "a value stored in a file"))
        data = super().fetch(mode, filename, value, read)
        return data if isinstance(data, bytes) else json.loads(data)

    def remove(self, file_path: str) -> None:
        # Every value is inline: a row that names a file was not written by us, and what it
        # names (possibly outside the cache) is never deleted.
        return None
