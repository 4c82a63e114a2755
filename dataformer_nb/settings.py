"""Settings, resolved in one place: argument > environment > ``.env`` file > default.

The ``.env`` file is the nearest one from the working directory up to the user's home or the
project root (a directory holding ``.git`` or ``pyproject.toml``), whichever comes first: a
``.env`` planted higher up (``/tmp/.env``) must not redirect a key. Like ssh with its config, a
``.env`` owned by another user (root aside), writable by everyone, not a regular file or over
1 MB is ignored with a warning. It is read (and re-read when it changes) by python-dotenv
without touching ``os.environ``, so a notebook next to its ``.env`` works with no
``load_dotenv()`` call and the environment still wins. Secrets read here are wrapped in
``Secret``, whose repr is ``***``.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from .errors import ConfigurationError, DataformerWarning

DEFAULT_PROVIDER = "openai"
DEFAULT_PROJECT = "dataformer"
DEFAULT_CACHE_DIR = ".cache/dataformer"

PROVIDER_ENV = "DATAFORMER_PROVIDER"
MODEL_ENV = "DATAFORMER_MODEL"
PROJECT_ENV = "PROJECT_NAME"
CACHE_DIR_ENV = "DATAFORMER_CACHE_DIR"
CACHE_URL_ENV = "DATAFORMER_CACHE_URL"  # a team cache on PostgreSQL, instead of the directory's
CACHE_SCHEMA_ENV = "DATAFORMER_CACHE_SCHEMA"  # the team cache's schema (default "dataformer")

T = TypeVar("T")
_dotenv_cache: dict[str, tuple[int, dict[str, str]]] = {}


class Secret:
    """A secret string (an API key) whose repr and str are ``***``: tracebacks with locals,
    ``%xmode Verbose`` and debuggers show the holder without the key."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself (only where it is sent: never shown, logged or stored)."""
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretHeaders(dict[str, str]):
    """Request headers whose repr hides the values of those holding credentials, so a verbose
    traceback's locals show ``{'Authorization': '***'}``."""

    _HIDDEN = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})

    def __repr__(self) -> str:
        return repr({k: "***" if k.lower() in self._HIDDEN else v for k, v in self.items()})

    __str__ = __repr__


class Environment(dict[str, str]):
    """Settings variables (keys among them): the repr names them without their values, so a
    verbose traceback's locals do not show a key."""

    def __repr__(self) -> str:
        return f"<environment: {', '.join(sorted(self))}>"

    __str__ = __repr__


def environment() -> Environment:
    """The non-empty variables of the ``.env`` file, overridden by the environment's."""
    return Environment({**_dotenv_values(), **{k: v for k, v in os.environ.items() if v}})


def resolve(name: str, argument: T | None, default: T) -> T | str:
    """``argument`` if given, else the variable ``name`` (environment, then ``.env``), else ``default``."""
    if argument is not None:
        return argument
    return environment().get(name) or default


def resolve_dir(name: str, argument: object, default: str, source: str) -> str:
    """A directory as ``resolve`` finds it (an empty ``argument`` counts as not given), as a
    string; a ConfigurationError naming ``source`` if ``argument`` is not a path."""
    if argument is not None and argument != "" and not isinstance(argument, (str, os.PathLike)):
        raise ConfigurationError(f"{source}={argument!r} is not a path: pass a directory, e.g. '.cache/dataformer'")
    given = os.fspath(argument) if isinstance(argument, (str, os.PathLike)) and argument != "" else None
    found = resolve(name, given, default)
    if not isinstance(found, str):
        raise ConfigurationError(f"{source}={found!r} is not a path: pass a directory")
    return found


_PROJECT_ROOT_MARKERS = (".git", "pyproject.toml")
MAX_DOTENV_BYTES = 1_000_000


def dotenv_path() -> str | None:
    """The ``.env`` file in effect: the nearest from the working directory up to the user's home
    or the project root, whichever comes first (see the module's documentation); None if there
    is none, or if the nearest one is not to be trusted (a warning says why)."""
    try:
        here = Path.cwd()
    except OSError:  # the working directory was removed
        return None
    try:
        home: Path | None = Path.home()
    except (KeyError, RuntimeError):  # no home directory known for this user
        home = None
    for directory in (here, *here.parents):
        candidate = directory / ".env"
        if os.path.lexists(candidate):
            return str(candidate) if _trusted(candidate) else None
        if directory == home or any((directory / marker).exists() for marker in _PROJECT_ROOT_MARKERS):
            return None
    return None


def _trusted(path: Path) -> bool:
    try:
        info = os.stat(path)
    except OSError as exc:
        return _distrust(path, f"it cannot be read ({exc.strerror})")
    if not stat.S_ISREG(info.st_mode):
        return _distrust(path, "it is not a regular file")
    if info.st_size > MAX_DOTENV_BYTES:
        return _distrust(path, f"it is larger than {MAX_DOTENV_BYTES:,} bytes")
    if hasattr(os, "getuid") and info.st_uid not in (os.getuid(), 0):
        return _distrust(path, "another user owns it: move it into your project, or chown it")
    if info.st_mode & stat.S_IWOTH:
        return _distrust(path, "everyone may write it: chmod o-w it")
    return True


def _distrust(path: Path, why: str) -> bool:
    warnings.warn(f"{path} is ignored: {why}", DataformerWarning, stacklevel=2)
    return False


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
        import dotenv  # here: 5 ms of import time, needed only once settings are resolved

        try:
            values = {k: v for k, v in dotenv.dotenv_values(path, encoding="utf-8").items() if v}
        except UnicodeDecodeError as exc:
            line = Path(path).read_bytes()[:exc.start].count(b"\n") + 1
            raise ConfigurationError(f"{path} is not valid UTF-8 (line {line}, byte {exc.object[exc.start]:#04x}): "
                                     "save it as UTF-8") from None
        _dotenv_cache[path] = cached = (mtime, values)
    return cached[1]


def valid_secret(value: str) -> bool:
    """Whether ``value`` can be an API key or password in a header: ASCII, printable, no space."""
    return bool(value) and value.isascii() and not any(c.isspace() or not c.isprintable() for c in value)


def bad_secret(name: str) -> ConfigurationError:
    """The error for a key or password ``name`` that ``valid_secret`` refuses (it never shows it)."""
    return ConfigurationError(f"{name} is empty or holds a space, newline, control or non-ASCII character (often "
                              "pasted with the key): set the key alone")


def check_secret(value: str, name: str) -> str:
    """``value`` if it can be an API key or password in a header, else a ConfigurationError
    that names ``name`` and never shows the value."""
    if not valid_secret(value):
        del value  # a verbose traceback shows this frame's locals
        raise bad_secret(name)
    return value
