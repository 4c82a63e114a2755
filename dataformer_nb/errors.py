"""The exceptions and warnings dataformer_nb raises: one base class, specific subclasses.

Every message names the input at fault and says what to do about it.
"""

from __future__ import annotations

from typing import Any


class DataformerError(Exception):
    """Base class of every error raised by dataformer_nb."""

    def _render_traceback_(self) -> list[str]:
        """How IPython and Jupyter show it (the hook IPython asks exceptions for): its message as
        one block, without the frames of the library, its worker thread and asyncio, which say
        nothing a user can act on; ``%xmode Verbose`` shows them all. Plain Python is unchanged."""
        from IPython import get_ipython  # called by IPython only: it is there

        shell = get_ipython()
        handler = getattr(shell, "InteractiveTB", None)
        if handler is not None and getattr(handler, "mode", "") == "Verbose":
            return list(handler.structured_traceback(type(self), self, self.__traceback__))
        return [f"{type(self).__name__}: {self}"]


class ConfigurationError(DataformerError, ValueError):
    """A constructor argument, environment variable or option is invalid."""


class UnknownProviderError(ConfigurationError):
    """``api_provider`` names no known provider."""


class MissingAPIKeyError(ConfigurationError):
    """A provider needs a key and none was found."""


class InvalidRequestError(DataformerError, ValueError):
    """An item of ``request_list`` cannot be sent; raised before anything is sent."""


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl+C (or a notebook's interrupt) stopped ``generate``. Every response that arrived is
    in the cache and in ``llm.last_results`` (the requests not sent marked); a re-run sends the rest.

    A KeyboardInterrupt, so ``except KeyboardInterrupt`` still catches it. IPython (notebooks and
    its terminal) shows it as its one line: the traceback would be the internals of a worker
    thread, not the user's code.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for an exception's own display
        return [f"KeyboardInterrupt: {self}"]


class CacheError(DataformerError):
    """The response cache cannot be opened, read or written.

    Raised by ``generate`` when writing fails mid-run, ``results`` holds every result of the
    run (responses received included, the requests not sent failed); otherwise None.
    """

    def __init__(self, message: str, *, results: Any = None) -> None:
        super().__init__(message)
        self.results = results


class StoreUnavailable(CacheError):
    """The team cache's server cannot be reached (stopped, restarting, the network cut): a run
    keeps what arrives and writes it when the server is back."""


class BatchError(DataformerError):
    """A provider's batch API cannot be used, or refused or failed an operation (upload, create,
    status, download, cancel). A batch already submitted stays recorded in the cache directory:
    re-running the same call resumes it. ``transient`` says whether trying again may succeed."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class RequestFailedError(DataformerError):
    """One request failed for good; set as ``result.error``, never raised by ``generate``.

    ``cause`` is a short category for summaries (``"http 500"``, ``"timeout"``, ...),
    ``status`` the last HTTP status if there was one.
    """

    def __init__(self, message: str, *, cause: str, status: int | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.status = status


class BatchPending(RequestFailedError):
    """Not failed: the request waits in a provider batch (``generate(..., batch=True, wait=False)``);
    the same call with ``batch=True`` collects it. ``result.pending`` tells it from a failure."""

    def __init__(self, message: str, *, batch_id: str) -> None:
        super().__init__(message, cause="batch pending")
        self.batch_id = batch_id


class AuthenticationError(RequestFailedError):
    """The provider rejected the key (HTTP 401 or 403); the rest of its requests are not sent."""


class DataformerWarning(UserWarning):
    """Base class of dataformer_nb's warnings."""


class UnknownProjectWarning(DataformerWarning):
    """``clear_project_cache`` named a project the cache does not hold."""
