"""Settings, resolved in one place: argument > environment > ``.env`` file > default.

The ``.env`` file is the one python-dotenv finds from the working directory upwards. It is
read (and re-read when it changes) without touching ``os.environ``, so a notebook next to
its ``.env`` works with no ``load_dotenv()`` call and the environment still wins.
Secrets read here are wrapped in :class:`Secret`, whose repr is ``***``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

DEFAULT_PROVIDER = "openai"
DEFAULT_PROJECT = "dataformer"
DEFAULT_CACHE_DIR = ".cache/dataformer"

PROVIDER_ENV = "DATAFORMER_PROVIDER"
MODEL_ENV = "DATAFORMER_MODEL"
PROJECT_ENV = "PROJECT_NAME"
CACHE_DIR_ENV = "DATAFORMER_CACHE_DIR"

T = TypeVar("T")
_dotenv_cache: dict[str, tuple[int, dict[str, str]]] = {}


class Secret:
    """A secret string (an API key) whose repr and str are ``***``: tracebacks with locals,
    ``%xmode Verbose`` and debuggers show the holder without the key."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def environment() -> dict[str, str]:
    """The non-empty variables of the ``.env`` file, overridden by the environment's."""
    return {**_dotenv_values(), **{k: v for k, v in os.environ.items() if v}}


def resolve(name: str, argument: T | None, default: T) -> T | str:
    """``argument`` if given, else the variable ``name`` (environment, then ``.env``), else ``default``."""
    if argument is not None:
        return argument
    return environment().get(name) or default


def dotenv_path() -> str | None:
    """The ``.env`` file in effect (python-dotenv's search from the working directory up)."""
    import dotenv  # here: 5 ms of import time, needed only once settings are resolved

    return dotenv.find_dotenv(usecwd=True) or None


def _dotenv_values() -> Mapping[str, str]:
    path = dotenv_path()
    if path is None:
        return {}
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    cached = _dotenv_cache.get(path)
    if cached is None or cached[0] != mtime:
        import dotenv

        values = {k: v for k, v in dotenv.dotenv_values(path).items() if v}
        _dotenv_cache[path] = cached = (mtime, values)
    return cached[1]
