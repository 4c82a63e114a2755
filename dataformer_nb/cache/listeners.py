"""Who hears a cache change: the panel refreshes itself when a generate or a clear changes the
cache it shows, whichever object in this process made the change."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable

# Listeners by location (a directory, or a team cache's host, database and schema): every store
# object on one location in this process shares them, so a panel hears the generate of any
# AsyncLLM that writes there. A bound method (a panel's refresh) is held weakly: a panel nobody
# shows any more is not kept alive by the cache.
_LISTENERS: dict[str, list[Callable[[], Callable[[], None] | None]]] = {}


class Observed:
    """``subscribe``, ``unsubscribe`` and ``notify`` for a store with a ``location``."""

    @property
    def location(self) -> str:
        raise NotImplementedError

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each change to this cache made in this process, through any
        object on the same cache (a bound method is held weakly: it goes with its object).
        Changes by other processes show on the panel's Refresh."""
        _LISTENERS.setdefault(self.location, []).append(_reference(listener))

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        listeners = _LISTENERS.get(self.location, [])
        listeners[:] = [ref for ref in listeners if ref() not in (None, listener)]

    def notify(self) -> None:
        """Call the listeners of this cache (those still alive)."""
        listeners = _LISTENERS.get(self.location, [])
        listeners[:] = [ref for ref in listeners if ref() is not None]
        for ref in list(listeners):
            listener = ref()
            if listener is not None:
                listener()


def _reference(listener: Callable[[], None]) -> Callable[[], Callable[[], None] | None]:
    """A weak reference to a bound method; a strong one (as a weakref is called) to anything else."""
    if inspect.ismethod(listener):
        return weakref.WeakMethod(listener)
    return lambda: listener
