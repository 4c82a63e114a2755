"""Fresh responses committed to the cache in groups, on a thread of its own (see :class:`CacheWriter`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import Any

from .._json import dumpb
from ..errors import CacheError
from .postgres import PostgresCache
from .records import NewResponse
from .store import ResponseCache


class CacheWriter:
    """Commits fresh responses in groups, on a thread of its own.

    The replies that arrive while a group is being written form the next group, one SQLite
    transaction each (one per reply cost more than the whole HTTP exchange), so a crash loses
    at most the group in flight. Writes run off the event loop: a write that waits for another
    process's lock never stalls sending, so no request times out (and is sent twice) because of
    it. A write that fails sets :attr:`error` (the dispatcher then starts no new request); its
    group, and whatever arrives after, stays in :attr:`unsaved`.
    """

    def __init__(self, cache: ResponseCache | PostgresCache, project: str) -> None:
        self._cache, self._project = cache, project
        self.unsaved: list[NewResponse] = []  # removed from only once committed
        self.error: CacheError | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dataformer_nb-cache")
        self._writing: concurrent.futures.Future[None] | None = None
        self._writing_count = 0

    async def save(self, key: str, response: dict[str, Any] | bytes, usage: Any, prompt: str = "",
                   cost: float | None = None) -> None:
        """Queue a response received (its JSON bytes, or a dict), to be committed with its group."""
        import asyncio

        data = response if isinstance(response, bytes) else dumpb(response)
        self.unsaved.append(NewResponse.with_usage(key, data, usage, prompt, cost))
        if self._writing is not None or self.error is not None:
            return  # the writing loop takes it with the next group
        await asyncio.sleep(0)  # the other replies ready in this turn join the group
        while self.unsaved and self.error is None and self._writing is None:
            self._writing = self._executor.submit(self._cache.put_many, self.unsaved[:], self._project)
            self._writing_count = len(self.unsaved)
            # Cancelled here (an interrupt), the write goes on in its thread and close() settles it.
            with contextlib.suppress(CacheError):
                await asyncio.wrap_future(self._writing)
            self._settle()

    def _settle(self) -> None:
        """Account for the finished write in flight: drop its group from unsaved, or keep its error."""
        assert self._writing is not None
        try:
            self._writing.result()
        except CacheError as exc:
            self.error = exc
        except concurrent.futures.CancelledError:
            pass  # never started: its group is still unsaved
        else:
            del self.unsaved[:self._writing_count]
        self._writing = None

    def close(self) -> None:
        """Wait for the write in flight, write what is left here (unless writing failed), stop the thread."""
        if self._writing is not None:
            concurrent.futures.wait([self._writing])
            self._settle()
        if self.unsaved and self.error is None:
            try:
                self._cache.put_many(self.unsaved, self._project)
                self.unsaved.clear()
            except CacheError as exc:
                self.error = exc
        self._executor.shutdown(wait=True)
