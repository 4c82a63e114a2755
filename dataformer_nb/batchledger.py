"""The ledger of provider batches: what was submitted, for which requests, and how it went.

A batch is paid for once it is created, so it is recorded in the cache before the
run waits for it (and an intent before it is created: see ``batchrun``); a re-run after an
interrupt, a kernel restart or a SIGKILL finds it here and collects it instead of paying again.

One JSON file per batch under ``<cache_dir>/batches/``, ``<local>.json``, written whole to a
temporary file and renamed over the old one (``os.replace`` is atomic), so a killed process
leaves either the old record or the new one; the cache keys it covers are in ``<local>.keys``
(a JSON list), written once before the record and removed once the batch is collected
(rewriting 50,000 keys at every status read would write megabytes every poll). Files, not rows
of the response cache: clearing the cache (even ``"full"``) must not forget a batch that is
still running. A record never holds an API key, only a fingerprint of it. Records are read as
untrusted input: a file that is not a record is skipped with a warning, and a batch id is only
ever used in a URL if it is a plain identifier.

With the team store (PostgreSQL) the same records are rows of its ``batch_records`` table, and
the lock is an advisory lock of its server: any member's run resumes and collects a batch that
another member submitted, and two machines never submit the same requests as two batches. The
rows are read by the same reader as the files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._files import NOFOLLOW, NONBLOCK, open_untrusted
from ._format import printable, table_bundle, when
from ._json import is_count, is_time
from .errors import CacheError, DataformerWarning
from .names import stored_name

LEDGER_DIR = "batches"
LOCK_FILE = ".submit.lock"
LOCK_POLL_SECONDS = 0.1
SUBMITTING = "submitting"  # recorded, not (yet known to be) created
HELD = "held"  # created, perhaps, under an id we refuse to use: its requests wait for llm.forget_batch
MAX_RECORD_BYTES = 1_000_000
MAX_KEYS_BYTES = 100_000 * 70  # 100,000 keys of 64 hex digits, quoted, comma-separated
_TEXT_FIELDS = ("protocol", "api", "provider", "key", "model", "gen_type", "project", "status", "note")
_COUNT_FIELDS = ("requests", "done", "failed")
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


@dataclass
class BatchRecord:
    """One batch as the ledger keeps it. ``keys`` are the cache keys of its requests (each its
    ``custom_id``), kept until its results are collected."""

    local: str  # the record's own id (its file name), known before the provider's
    protocol: str  # "openai" (files + batches) or "anthropic" (message batches)
    api: str  # the batch API's base URL, without credentials
    provider: str
    key: str  # a fingerprint of the API key it was submitted with ("" without a key)
    model: str
    gen_type: str
    project: str
    created: float
    keys: list[str] = field(default_factory=list)  # kept in a file of their own (see the module's docstring)
    requests: int = 0
    id: str | None = None  # the provider's batch id, once created
    status: str = SUBMITTING
    done: int = 0  # requests answered, well or not
    failed: int = 0
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    checked: float | None = None  # when its status was last read
    collected: float | None = None  # when its results were stored
    note: str = ""  # why it ended without results, when it did

    @property
    def pending(self) -> bool:
        """Not collected yet: its requests are awaited, not submitted again."""
        return self.collected is None

    def job(self) -> BatchJob:
        """What a user sees of this record: a BatchJob."""
        shown = self.id or f"({'held' if self.status == HELD else 'submitting'} {self.local[:8]})"
        return BatchJob(shown, self.provider, self.status, self.requests,
                        self.done, self.failed, self.project,
                        datetime.fromtimestamp(self.created, timezone.utc), self.collected is not None)

    @classmethod
    def from_json(cls, data: Any) -> BatchRecord:
        """A record from what a file held; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        for name in ("id", "input_file_id", "output_file_id", "error_file_id"):
            value = getattr(record, name)
            if value is not None and not is_batch_id(value):
                raise ValueError(f"{name} {str(value)[:40]!r} is not a plain identifier")
        if not is_batch_id(record.local) or not is_time(record.created):
            raise ValueError("'created' or 'local' is missing or garbled")
        for name in ("checked", "collected"):
            if getattr(record, name) is not None and not is_time(getattr(record, name)):
                raise ValueError(f"{name!r} is not a time")
        bad = [n for n in _TEXT_FIELDS if not isinstance(getattr(record, n), str)]
        bad += [n for n in _COUNT_FIELDS if not is_count(getattr(record, n))]
        if bad:
            raise ValueError(f"{', '.join(bad)} garbled")
        if stored_name(record.project) is None:
            raise ValueError(f"project {record.project[:40]!r} is not a valid project name")
        return record


@dataclass(frozen=True)
class BatchJob:
    """A provider batch as ``llm.batches()`` and ``results.batches`` show it."""

    id: str
    provider: str
    status: str
    requests: int
    done: int
    failed: int
    project: str
    created: datetime
    collected: bool

    def row(self) -> list[str]:
        """The job as a row of the batches table: id, provider, state, answered / requests, project, created."""
        counts = f"{self.done:,} / {self.requests:,}" + (f" ({self.failed:,} failed)" if self.failed else "")
        return [self.id, self.provider, self.state, counts, self.project, when(self.created)]

    @property
    def state(self) -> str:
        """``collected`` once its results are in the cache, else the service's last word (``in_progress``, ...)."""
        return "collected" if self.collected else self.status

    def __repr__(self) -> str:
        return (f"<BatchJob {self.id} {self.state}: {self.done:,} of {self.requests:,} answered, "
                f"project {self.project}>")


class BatchList(list[BatchJob]):
    """Batches, shown as a table."""

    HEADER = ("batch", "provider", "status", "answered", "project", "created")

    def _table(self) -> dict[str, str]:
        pending = sum(1 for job in self if not job.collected)
        return table_bundle(list(self.HEADER), [job.row() for job in self], caption=f"{pending} pending")

    def __str__(self) -> str:
        return self._table()["text/plain"] if self else "no batches"

    # IPython prints a list through its own list printer unless the class has _repr_pretty_.
    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return self._table()["text/html"] if self else "no batches"


def is_batch_id(text: object) -> bool:
    """Whether ``value`` can be a service's batch id: printable, short, no path or URL characters."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None


class BatchLedger:
    """The batch records of one cache: files in its directory for the local store, rows of the
    team store (``store``, a PostgresCache) when it is one, so every member's run sees them.
    Either way the records are read here, as untrusted input, by one reader."""

    def __init__(self, cache_directory: str | os.PathLike[str], store: object = None) -> None:
        self._directory = cache_directory
        self._records: _RecordFiles | _TeamRecords = (
            _TeamRecords(store) if hasattr(store, "batch_records") else _RecordFiles(cache_directory))

    @property
    def where(self) -> str:
        """Where the records are: a directory, or the team store's host, database and schema."""
        return self._records.where

    def submitting(self, waiting: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a run looks for recorded batches and submits new ones: two runs of one call at
        once (two kernels, here or, with a team store, anywhere) would otherwise both submit. A lock
        a killed process never leaves held; ``waiting()`` is called once if another run holds it."""
        return self._records.submitting(waiting)

    def new(self, **values: Any) -> BatchRecord:
        """A record for a batch about to be submitted, saved at once (with its keys)."""
        record = BatchRecord(local=uuid.uuid4().hex, **values)
        record.requests = record.requests or len(record.keys)
        self._records.write(record.local, _record_bytes(record), json.dumps(record.keys).encode())
        return record

    def save(self, record: BatchRecord) -> None:
        """Write ``record`` (all but its keys) whole, atomically."""
        self._records.write(record.local, _record_bytes(record))

    def collected(self, record: BatchRecord) -> None:
        """Mark ``record`` collected: its results are in the cache, its keys no longer needed."""
        record.collected, record.keys = time.time(), []
        self.save(record)
        self._records.drop_keys(record.local)

    def forget(self, record: BatchRecord) -> None:
        """Remove the record of a batch that was never created."""
        self._records.drop(record.local)

    def records(self) -> list[BatchRecord]:
        """Every record (without its keys), oldest first; one that is not a record is skipped with
        a warning."""
        if isinstance(self._records, _TeamRecords):
            self._adopt_files()
        records = []
        for where, local, data in self._records.read():
            try:
                if len(data) > MAX_RECORD_BYTES:
                    raise ValueError(f"larger than {MAX_RECORD_BYTES:,} bytes")
                record = BatchRecord.from_json(json.loads(data))
                if local is not None and record.local != local:
                    raise ValueError(f"it names another record, {record.local[:40]!r}")
            except (ValueError, TypeError, RecursionError) as exc:
                _skipped(where, exc, self._records.fix)
            else:
                record.keys = []
                records.append(record)
        return sorted(records, key=lambda r: r.created)

    def pending(self) -> list[BatchRecord]:
        """The records not collected yet, with their keys."""
        return [record for record in self.records() if record.pending and self._read_keys(record)]

    def _read_keys(self, record: BatchRecord) -> bool:
        """Give ``record`` its keys; False (with a warning) if they cannot be read."""
        try:
            data = self._records.keys(record.local)
            if len(data) > MAX_KEYS_BYTES:
                raise ValueError(f"larger than {MAX_KEYS_BYTES:,} bytes")
            keys = json.loads(data)
            if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                raise ValueError("not a list of strings")
        except (OSError, ValueError, RecursionError) as exc:
            _skipped(self._records.keys_where(record.local), exc, self._records.fix)
            return False
        record.keys = keys
        return True

    def _adopt_files(self) -> None:
        """Move into the team store the records that 0.2.0 kept in files beside a team cache (it
        had no batch_records table): a batch submitted before the upgrade is resumed, not paid
        for again. Read by the same reader; a record whose keys cannot be read stays in its file."""
        if not (Path(self._directory) / LEDGER_DIR).is_dir():
            return
        files = BatchLedger(self._directory)
        for record in files.records():
            if record.pending and not files._read_keys(record):
                continue
            keys = json.dumps(record.keys).encode() if record.pending else None
            self._records.write(record.local, _record_bytes(record), keys)
            files.forget(record)


def _record_bytes(record: BatchRecord) -> bytes:
    data = {f.name: getattr(record, f.name) for f in fields(record) if f.name != "keys"}
    return json.dumps(data, separators=(",", ":")).encode()


class _RecordFiles:
    """The records as files under ``<cache_dir>/batches/`` (see the module's docstring)."""

    fix = "move the file away if it is not dataformer_nb's"

    def __init__(self, cache_directory: str | os.PathLike[str]) -> None:
        self.directory = Path(cache_directory) / LEDGER_DIR

    @property
    def where(self) -> str:
        return str(self.directory)

    @contextlib.asynccontextmanager
    async def submitting(self, waiting: Callable[[], None]) -> AsyncIterator[None]:
        """An OS lock on a file (flock), so a killed process never leaves it held. Where there is
        no flock (Windows), runs are not serialised."""
        import asyncio

        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # never through a link (it would create a file outside the cache), a regular file only
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | NOFOLLOW | NONBLOCK, 0o600)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(f"{LOCK_FILE} is not a regular file")
            lock = os.fdopen(fd, "r+b")
        except OSError as exc:
            raise CacheError(f"{self.directory / LOCK_FILE} cannot be opened ({exc}): fix the cache directory's "
                             "permissions or pass another cache_dir=") from exc
        with lock:
            told = False
            while True:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        waiting()
                        told = True
                    await asyncio.sleep(LOCK_POLL_SECONDS)  # flock cannot be awaited: ask again
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def write(self, local: str, record: bytes, keys: bytes | None = None) -> None:
        if keys is not None:  # the keys first: a record is never without them
            self._write(self._keys_path(local), keys)
        self._write(self._path(local), record)

    def drop_keys(self, local: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._keys_path(local).unlink()

    def drop(self, local: str) -> None:
        for path in (self._path(local), self._keys_path(local)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def read(self) -> Iterator[tuple[str, str | None, bytes]]:
        """``(where, None, bytes)`` of each record file that can be read (the others are skipped)."""
        if not self.directory.is_dir():
            return
        for path in self.directory.glob("*.json"):
            if path.name.startswith(".tmp-"):
                continue
            try:
                yield str(path), None, read_file(path, MAX_RECORD_BYTES)
            except (OSError, ValueError) as exc:
                _skipped(str(path), exc, self.fix)

    def keys(self, local: str) -> bytes:
        return read_file(self._keys_path(local), MAX_KEYS_BYTES)

    def keys_where(self, local: str) -> str:
        return str(self._keys_path(local))

    def _write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` whole or not at all (a temporary file renamed over it)."""
        tmp = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, OSError):
                raise CacheError(f"the batch record {path} cannot be written ({exc}): free disk space or fix the "
                                 "directory's permissions, then run the same call again") from exc
            raise

    def _keys_path(self, local: str) -> Path:
        return self.directory / f"{local}.keys"

    def _path(self, local: str) -> Path:
        return self.directory / f"{local}.json"


class _TeamRecords:
    """The records as rows of the team store, shared by every member: an advisory lock of its
    server instead of the file lock, so two machines never submit the same requests twice."""

    fix = "delete that row of batch_records if it is not dataformer_nb's"

    def __init__(self, store: Any) -> None:
        self._store = store

    @property
    def where(self) -> str:
        return f"the team cache at {self._store.location}"

    @contextlib.asynccontextmanager
    async def submitting(self, waiting: Callable[[], None]) -> AsyncIterator[None]:
        import asyncio

        lock = self._store.submit_lock()
        try:
            told = False
            while not await asyncio.to_thread(lock.try_acquire):  # a network call: off the event loop
                if not told:
                    waiting()
                    told = True
                await asyncio.sleep(LOCK_POLL_SECONDS)
            yield
        finally:
            await asyncio.to_thread(lock.release)

    def write(self, local: str, record: bytes, keys: bytes | None = None) -> None:
        self._store.save_batch_record(local, record, keys)

    def drop_keys(self, local: str) -> None:
        self._store.drop_batch_keys(local)

    def drop(self, local: str) -> None:
        self._store.drop_batch_record(local)

    def read(self) -> Iterator[tuple[str, str | None, bytes]]:
        for local, data in self._store.batch_records():
            yield f"batch record {printable(local)[:40]!r} of {self.where}", local, data

    def keys(self, local: str) -> bytes:
        data: bytes | None = self._store.batch_record_keys(local)
        if data is None:
            raise ValueError("its keys are missing")
        return data

    def keys_where(self, local: str) -> str:
        return f"the keys of batch record {local!r} of {self.where}"


def read_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes`` (``_files.open_untrusted``);
    OSError or ValueError otherwise."""
    with open_untrusted(path, max_bytes) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes:,} bytes")
    return data


def _skipped(where: str, error: Exception, fix: str) -> None:
    warnings.warn(f"{where} is not a batch record ({error}): it was skipped; if it recorded a batch still running, its "
                  f"requests would be submitted again: {fix}", DataformerWarning, stacklevel=4)
