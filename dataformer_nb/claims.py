"""One sender per request across a team: on a team cache, a run claims what it is about to send.

Two kernels (any machines) that ask for the same uncached request at the same moment would both
pay for it. Before sending, a run claims its requests' keys in the team cache (a row with a lease,
by the server's clock); keys another run holds are not sent but waited for, and read from the
cache when that run stores them. Storing a response deletes its claim in the same transaction,
so whoever finds a claim gone finds the response, or nothing if its sender failed or died: then
it claims the key and sends it itself. A run renews its leases while it sends; a killed kernel's
claims run out after the lease (``DATAFORMER_CLAIM_LEASE`` seconds, default 30), so at most the
requests it had in flight are paid twice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from ._format import plural
from .errors import CacheError, ConfigurationError
from .prepare import Unit
from .settings import resolve

CLAIM_LEASE_ENV = "DATAFORMER_CLAIM_LEASE"
DEFAULT_LEASE = 30.0
_FIRST_POLL, _LAST_POLL = 0.05, 1.0  # seconds between two looks at what another run is sending


class ClaimingStore(Protocol):
    """What ``send_once`` needs of a store (the team cache has it; the local one does not)."""

    def claim(self, keys: list[str], owner: str, lease: float) -> set[str]: ...

    def renew(self, owner: str, lease: float) -> None: ...

    def release(self, owner: str) -> None: ...

    def claimed(self, keys: list[str]) -> set[str]: ...


def lease_seconds() -> float:
    """The claim lease: ``DATAFORMER_CLAIM_LEASE`` (environment, ``.env``), else 30 seconds."""
    value = resolve(CLAIM_LEASE_ENV, None, str(DEFAULT_LEASE))
    try:
        lease = float(value)
    except ValueError:
        lease = -1.0
    if not lease > 0:
        raise ConfigurationError(f"{CLAIM_LEASE_ENV}={value!r} must be a positive number of seconds (default 30)")
    return lease


async def send_once(store: ClaimingStore, units: list[Unit], send: Callable[[list[Unit]], Awaitable[None]],
                    take_hits: Callable[[list[Unit]], list[Unit]], say: Callable[[str], None]) -> None:
    """Send ``units`` with ``send``, each by one run of the team: those another run holds are
    waited for and taken from the cache by ``take_hits`` (which fills their slots from the cache
    and returns the units still missing)."""
    import socket
    import uuid

    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    lease = lease_seconds()
    pending = units
    told = False
    try:
        while pending:
            mine_keys = store.claim([u.cache_key for u in pending], owner, lease)
            # Stored by another run between our lookup and our claim: a hit, not a send.
            mine = take_hits([u for u in pending if u.cache_key in mine_keys])
            theirs = [u for u in pending if u.cache_key not in mine_keys]
            if theirs and not told:
                say(f"{plural(len(theirs), 'request')} {'is' if len(theirs) == 1 else 'are'} being sent by another "
                    "run on this team cache: waiting for its responses instead of paying twice")
                told = True
            if mine:
                await _renewing(store, owner, lease, send(mine))
            pending = await _wait_for(store, theirs, take_hits)
    finally:
        # What this run did not store, another may now send; if the server is away, its leases run out.
        with contextlib.suppress(CacheError):
            store.release(owner)


async def _renewing(store: ClaimingStore, owner: str, lease: float, work: Awaitable[None]) -> None:
    """Await ``work`` while renewing ``owner``'s claims every third of a lease."""
    import asyncio

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(CacheError):  # the server away for a moment: the next renewal may do
                await asyncio.to_thread(store.renew, owner, lease)

    renewal = asyncio.ensure_future(renew())
    try:
        await work
    finally:
        renewal.cancel()


async def _wait_for(store: ClaimingStore, units: list[Unit], take_hits: Callable[[list[Unit]], list[Unit]]
                    ) -> list[Unit]:
    """Wait until each of ``units`` is in the cache (its slot filled) or no longer claimed by
    anyone; the latter, to claim and send."""
    import asyncio
    delay = _FIRST_POLL
    remaining: Mapping[str, Unit] = {u.cache_key: u for u in units}
    while remaining:
        remaining = {u.cache_key: u for u in take_hits(list(remaining.values()))}
        if not remaining:
            break
        if set(remaining) - store.claimed(list(remaining)):
            return list(remaining.values())  # a sender failed or died: claim them (those still held stay waited for)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _LAST_POLL)
    return []
