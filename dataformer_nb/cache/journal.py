"""A local journal of responses received while the team cache's server could not be reached.

The writer keeps such responses in memory; beyond ``MEMORY_BOUND`` of them, and whatever is
still unwritten when a run gives up waiting for the server, they are appended here, under
``<cache_dir>/journal/``, one JSON line per response, flushed and fsync'ed before they leave
memory. Each writer has a file of its own, held under an OS lock (flock) while it is open, so a
replay never takes a file another live kernel is still appending to, and a killed kernel's
file is free at once. Any run that opens the cache later (or the writer itself, once the
server is back) replays every free file into the store and removes it: a kernel that dies
during an outage loses nothing it had spilled.

Lines are untrusted input like every stored row: a line that is not a response (a torn last
line of a killed writer, a key that is not a cache key, a body that is not a JSON object) is
skipped, and the count of skipped lines is said in one warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .._files import NOFOLLOW, NONBLOCK
from .._json import is_count, loads_or_none
from ..errors import CacheError, DataformerWarning
from ..names import stored_name
from .records import NewResponse

JOURNAL_DIR = "journal"
MEMORY_BOUND = 10_000  # responses held in memory during an outage before they are spilled here
MAX_LINE_BYTES = 64 * 1024 * 1024  # a line longer than any reply the transport accepts is not ours
_KEY = re.compile(r"[0-9a-f]{64}")


class Journal:
    """The journal files under ``cache_directory``; this writer's own file is made on first append."""

    def __init__(self, cache_directory: str | os.PathLike[str]) -> None:
        self.directory = Path(cache_directory) / JOURNAL_DIR
        self._own: IO[bytes] | None = None
        self._own_path: Path | None = None

    def append(self, items: list[NewResponse], project: str) -> None:
        """Write ``items`` (received for ``project``) to this writer's file, durably; CacheError if
        the disk refuses (the caller keeps them in memory then)."""
        lines = b"".join(json.dumps({"key": item.key, "project": project, "body": item.data.decode(),
                                     "prompt_tokens": item.prompt_tokens,
                                     "completion_tokens": item.completion_tokens, "prompt": item.prompt,
                                     "cost": item.cost}, separators=(",", ":")).encode() + b"\n"
                         for item in items)
        try:
            own = self._open_own()
            own.write(lines)
            own.flush()
            os.fsync(own.fileno())
        except OSError as exc:
            raise CacheError(f"the journal {self.directory} cannot be written ({exc}): free disk space; "
                             "the responses stay in memory meanwhile") from exc

    @property
    def path(self) -> Path | None:
        """This writer's file, once it has one."""
        return self._own_path

    def replay(self, store: Any) -> int:
        """Write every free journal file's responses to ``store`` and remove the file; how many
        responses were written. A file another live writer holds is left alone. StoreUnavailable
        (from the store) leaves the files as they are, for the next try."""
        self.close()  # this writer's own file too: it is replayed like the others
        written = skipped = 0
        for path, handle in self._free_files():
            with handle:
                by_project: dict[str, list[NewResponse]] = {}
                for item in _read_lines(handle):
                    if item is None:
                        skipped += 1
                    else:
                        by_project.setdefault(item[0], []).append(item[1])
                for project, items in by_project.items():
                    store.put_many(items, project)
                    written += len(items)
                path.unlink()  # under the lock: nobody appends to it meanwhile
        if skipped:
            warnings.warn(f"{skipped} lines of the journal in {self.directory} were not responses and were skipped",
                          DataformerWarning, stacklevel=2)
        return written

    def close(self) -> None:
        """Let this writer's file go (what it holds stays for the next replay); a later append
        starts a new one."""
        if self._own is not None:
            self._own.close()
        self._own, self._own_path = None, None

    def _open_own(self) -> IO[bytes]:
        if self._own is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.directory / f"{uuid.uuid4().hex}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | NOFOLLOW, 0o600)
            own = os.fdopen(fd, "ab")
            _lock(own.fileno())  # a new file: free, taken at once
            self._own, self._own_path = own, path
        return self._own

    def _free_files(self) -> Iterator[tuple[Path, IO[bytes]]]:
        """Each journal file no live writer holds, open and locked."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*.jsonl")):
            try:
                fd = os.open(path, os.O_RDONLY | NOFOLLOW | NONBLOCK)
            except OSError:
                continue  # gone (another run replayed it), or a link: not ours
            handle = os.fdopen(fd, "rb")
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not _lock(fd) or not path.exists():
                handle.close()  # not a file, another live writer's, or replayed by another run meanwhile
                continue
            yield path, handle


def _lock(fd: int) -> bool:
    """Take the OS lock of an open journal file if it is free; whether it is now held (Windows has
    no flock: there every file is taken as free)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _read_lines(handle: IO[bytes]) -> Iterator[tuple[str, NewResponse] | None]:
    """``(project, response)`` of each line that is one; None for each line that is not."""
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            with contextlib.suppress(OSError):
                while line and not line.endswith(b"\n"):  # the rest of the overlong line
                    line = handle.readline(MAX_LINE_BYTES)
            yield None
            continue
        yield _response(line)


def _response(line: bytes) -> tuple[str, NewResponse] | None:
    record = loads_or_none(line)
    if not isinstance(record, dict):
        return None
    key, project, body, prompt, cost = (record.get(name) for name in ("key", "project", "body", "prompt", "cost"))
    prompt_tokens, completion_tokens = counts = record.get("prompt_tokens"), record.get("completion_tokens")
    if not (isinstance(key, str) and _KEY.fullmatch(key) and stored_name(project) is not None
            and isinstance(project, str) and isinstance(body, str)
            and isinstance(loads_or_none(body.encode()), dict) and isinstance(prompt, str)
            and all(is_count(count) for count in counts)
            and (cost is None or (isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 <= cost < 1e9))):
        return None
    return project, NewResponse(key, body.encode(), int(prompt_tokens or 0), int(completion_tokens or 0), prompt, cost)
