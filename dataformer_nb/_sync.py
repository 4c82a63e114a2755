"""Running a batch synchronously: on a private loop in a worker thread when the caller's
loop is running (Jupyter), and with the cyclic GC paused while 10^5 requests are prepared."""

from __future__ import annotations

import contextlib
import contextvars
import gc
import inspect
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

from .errors import GenerationInterrupted

# asyncio is imported where it runs, here and in dispatch: it is 10 ms of the 85 ms that
# importing dataformer_nb takes (python -X importtime), past the benchmark's import target.

T = TypeVar("T")
# Where the user called generate (file, line, module, its globals): warnings raised while the run
# goes on, on a private loop or a worker thread, have no frame of the user's on their stack.
# A task copies the context it is created in, so the run sees what the caller's thread set.
_CALLER: contextvars.ContextVar[FrameType | None] = contextvars.ContextVar("dataformer_nb_caller", default=None)


def warn(message: str, category: type[Warning]) -> None:
    """Warn, attributed to the user's line: the caller of the synchronous call under way (its
    line, whatever thread or loop the run is on), else the caller of the function calling this."""
    frame = _CALLER.get()
    if frame is None:
        warnings.warn(message, category, stacklevel=4)  # past this function and its caller
        return
    module_globals = frame.f_globals
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=module_globals.get("__name__", "__main__"),
                           registry=module_globals.setdefault("__warningregistry__", {}),
                           module_globals=module_globals)


def _user_frame() -> FrameType | None:
    """The innermost frame that is not dataformer_nb's own."""
    frame = inspect.currentframe()
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("dataformer_nb"):
        frame = frame.f_back
    return frame


def run_sync(coro: Coroutine[Any, Any, T], interrupted: Callable[[], str] | None = None) -> T:
    """Run ``coro`` to completion from synchronous code, whether or not a loop is running here.

    An interrupt (Ctrl+C) cancels it, waits until what finished is saved, and raises
    GenerationInterrupted with ``interrupted()`` as its message, without the chain of our
    internals (the worker thread's join, the event loop's cancellation).
    """
    token = _CALLER.set(_user_frame())
    try:
        return _run(coro)
    except KeyboardInterrupt as exc:
        if interrupted is None or isinstance(exc, GenerationInterrupted):
            raise
        error = GenerationInterrupted(interrupted())
    finally:
        _CALLER.reset(token)
    raise error from None  # outside the except block: no "during handling of" chain


def _run(coro: Coroutine[Any, Any, T]) -> T:
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
    # An Event, not Thread.join(): a join that an interrupt broke can return at once the next
    # time, before the worker has saved anything (measured in a kernel: the interrupt's message
    # was built before the run's results existed).
    done = threading.Event()

    def work() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["value"] = loop.run_until_complete(task)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            done.set()

    threading.Thread(target=work, name="dataformer_nb-generate", daemon=True).start()
    try:
        done.wait()
    except BaseException:
        with contextlib.suppress(RuntimeError):  # the run ended meanwhile and closed its loop
            loop.call_soon_threadsafe(task.cancel)
        _wait_through_interrupts(done)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _wait_through_interrupts(done: threading.Event) -> None:
    """Wait for ``done``; more Ctrl+C meanwhile do not cut short the saving of what arrived."""
    while True:
        try:
            done.wait()
            return
        except KeyboardInterrupt:
            continue


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
