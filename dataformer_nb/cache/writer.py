"""Fresh responses committed to the cache in groups, on a thread of its own (see ``CacheWriter``)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import time
import warnings
from typing import Any

from .._json import dumpb
from ..errors import CacheError, DataformerWarning, StoreUnavailable
from . import Store, journal
from .journal import Journal
from .records import NewResponse

RETRY_SECONDS = 1.0  # between two writes tried while the team cache's server is unreachable
OUTAGE_WAIT = 120.0  # how long the end of a run waits for it to come back before giving up


class CacheWriter:
    """Commits fresh responses in groups, on a thread of its own.

    The replies that arrive while a group is being written form the next group, one SQLite
    transaction each (one per reply cost more than the whole HTTP exchange), so a crash loses
    at most the group in flight. Writes run off the event loop: a write that waits for another
    process's lock never stalls sending, so no request times out (and is sent twice) because of
    it. A write that fails sets ``error`` (the dispatcher then starts no new request); its
    group, and whatever arrives after, stays in ``unsaved``.

    A team cache whose server cannot be reached (stopped, restarting, the network cut) is not a
    failed write: sending goes on, what arrives is kept in ``unsaved``, a write is tried
    again every second, and ``close`` waits up to ``OUTAGE_WAIT`` seconds for the server;
    a warning then says how many responses were written late. Beyond ``journal.MEMORY_BOUND``
    responses held, and whatever is left when ``close`` stops waiting, they go to the local
    journal in ``journal_dir`` (see ``journal``), written to the store once it is back, by
    this run or by the next one that opens the cache: a kernel that dies during an outage
    loses at most what it held in memory.
    """

    def __init__(self, cache: Store, project: str, journal_dir: str | os.PathLike[str] | None = None) -> None:
        self._cache, self._project = cache, project
        self._journal = None if journal_dir is None else Journal(journal_dir)
        self._replay_due = False  # what this run spilled, written with the first write that succeeds
        self.unsaved: list[NewResponse] = []  # removed from only once committed
        self.error: CacheError | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dataformer_nb-cache")
        self._writing: concurrent.futures.Future[None] | None = None
        self._writing_count = 0
        self._outage: float | None = None  # when the team cache's server was first found unreachable
        self._retry_at = 0.0  # no write is tried before then, while it is
        self._late = 0  # responses written after an outage

    async def save(self, key: str, response: dict[str, Any] | bytes, usage: Any, prompt: str = "",
                   cost: float | None = None) -> None:
        """Queue a response received (its JSON bytes, or a dict), to be committed with its group."""
        import asyncio

        data = response if isinstance(response, bytes) else dumpb(response)
        self.unsaved.append(NewResponse.with_usage(key, data, usage, prompt, cost))
        # Spilled only while no write is in flight: a write's thread may be replaying the journal,
        # and the journal is used from one thread at a time.
        if self._outage is not None and self._writing is None and len(self.unsaved) > journal.MEMORY_BOUND:
            self._spill()
        if self._writing is not None or self.error is not None or time.monotonic() < self._retry_at:
            return  # the writing loop takes it with the next group
        await asyncio.sleep(0)  # the other replies ready in this turn join the group
        while self.unsaved and self.error is None and self._writing is None and time.monotonic() >= self._retry_at:
            self._writing = self._executor.submit(self._write, self.unsaved[:])
            self._writing_count = len(self.unsaved)
            # Cancelled here (an interrupt), the write goes on in its thread and close() settles it.
            with contextlib.suppress(CacheError):
                await asyncio.wrap_future(self._writing)
            self._settle()

    def _write(self, items: list[NewResponse]) -> None:
        """On the writer's thread: ``items``, then what the journal holds, once the store answers."""
        self._cache.put_many(items, self._project)
        if self._replay_due and self._journal is not None:
            self._late += self._journal.replay(self._cache)
            self._replay_due = False

    def _spill(self) -> None:
        """Move what is held to the journal (durably first; no write is in flight); if the disk
        refuses, it stays in memory."""
        if self._journal is None:
            return
        try:
            self._journal.append(self.unsaved, self._project)
        except CacheError:
            return
        self.unsaved.clear()
        self._replay_due = True

    def _settle(self) -> None:
        """Account for the finished write in flight: drop its group from unsaved, or keep its error."""
        assert self._writing is not None
        try:
            self._writing.result()
        except StoreUnavailable:
            self._unreachable()  # the group stays unsaved, tried again later
        except CacheError as exc:
            self.error = exc
        except concurrent.futures.CancelledError:
            pass  # never started: its group is still unsaved
        else:
            if self._outage is not None:
                self._late += self._writing_count
            del self.unsaved[:self._writing_count]
        self._writing = None

    def _unreachable(self) -> None:
        now = time.monotonic()
        self._outage = self._outage if self._outage is not None else now
        self._retry_at = now + RETRY_SECONDS

    def close(self) -> None:
        """Wait for the write in flight, write what is left here (unless writing failed), stop the thread."""
        if self._writing is not None:
            concurrent.futures.wait([self._writing])
            self._settle()
        deadline = time.monotonic() + OUTAGE_WAIT
        journaled = False
        while (self.unsaved or self._replay_due) and self.error is None:
            try:
                self._write(self.unsaved)
            except StoreUnavailable as exc:
                self._unreachable()
                if time.monotonic() < deadline:
                    time.sleep(RETRY_SECONDS)  # the run is over: waiting for the server is all there is to do
                    continue
                self._spill()
                if self.unsaved:  # the journal could not take them either
                    self.error = CacheError(f"{exc}: for {OUTAGE_WAIT:.0f} s after the run, "
                                            f"{len(self.unsaved)} responses could not be written")
                journaled = True
                break
            except CacheError as exc:
                self.error = exc
                break
            if self._outage is not None:
                self._late += len(self.unsaved)
            self.unsaved.clear()
        if self._journal is not None:
            self._journal.close()  # its file is free: the next run that opens the cache writes it
        if journaled and self.error is None and self._journal is not None:
            warnings.warn(f"the team cache's server could not be reached for {OUTAGE_WAIT:.0f} s after this run: "
                          f"the responses not written are kept in the journal {self._journal.directory} and written "
                          "by the next run that opens this cache", DataformerWarning, stacklevel=2)
        elif self._late and self.error is None:
            warnings.warn(f"the team cache's server could not be reached during this run: {self._late} responses "
                          "were kept and written when it was back; every response received is stored",
                          DataformerWarning, stacklevel=2)
        self._late = 0
        self._executor.shutdown(wait=True)
