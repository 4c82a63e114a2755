"""Running a batch synchronously: on a private loop in a worker thread when the caller's
loop is running (Jupyter), and with the cyclic GC paused while 10^5 requests are prepared."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

# asyncio is imported where it runs, here and in dispatch: it is 10 ms of the 85 ms that
# importing dataformer_nb takes (python -X importtime), past the benchmark's import target.

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, whether or not a loop is running here."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    # Outside the except block: an error of the batch must not read as raised "during handling of
    # RuntimeError: no running event loop".
    return run_in_worker_thread(coro) if running else asyncio.run(coro)


def run_in_worker_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private loop in a worker thread, blocking the caller.

    Re-entering the caller's running loop (nest-asyncio) lets a kernel start the next
    queued cells inside this one (JupyterLab's Run All); a private loop shares nothing.
    Ctrl+C in the caller cancels the batch and waits until what finished is saved.
    """
    import asyncio

    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    outcome: dict[str, Any] = {}

    def work() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["value"] = loop.run_until_complete(task)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    worker = threading.Thread(target=work, name="dataformer_nb-generate", daemon=True)
    worker.start()
    try:
        worker.join()
    except BaseException:
        # is_alive() cannot be trusted after an interrupted join(); a closed loop raises instead.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(task.cancel)
        worker.join()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: preparing and looking up 10^5 requests allocates millions of
    acyclic objects, and the GC would rescan the growing heap again and again (measured:
    a sixth of a warm re-run)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
