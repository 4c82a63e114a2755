"""dataformer_nb: generate LLM data from notebooks, concurrently, under rate limits, with a cache."""

__version__ = "0.3.0"

from .cache import ClearReport, PostgresCache, ProjectInfo, ResponseCache
from .errors import (
    AuthenticationError,
    BatchError,
    BatchPending,
    CacheError,
    ConfigurationError,
    DataformerError,
    DataformerWarning,
    GenerationInterrupted,
    InvalidRequestError,
    MissingAPIKeyError,
    RequestFailedError,
    StoreUnavailable,
    UnknownProjectWarning,
    UnknownProviderError,
)
from .images import image_part
from .llms import AsyncLLM, get_messages, get_request_list
from .providers import Provider, register_provider
from .results import GenerationResult, GenerationSummary, Plan, Results
from .wire import WireFormat, register_wire_format


def __getattr__(name: str) -> object:
    # ipywidgets is imported only when the panel is asked for: import stays fast.
    if name == "CachePanel":
        from .widget import CachePanel

        return CachePanel
    if name == "BatchJob":  # imported with batch mode, not with the package
        from .batchledger import BatchJob

        return BatchJob
    raise AttributeError(f"module 'dataformer_nb' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext dataformer_nb``: register ``%%generate`` and ``%dataformer``."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext dataformer_nb``: give back the warnings' display the extension set."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "AsyncLLM",
    "AuthenticationError",
    "BatchError",
    "BatchJob",
    "BatchPending",
    "CacheError",
    "CachePanel",
    "ClearReport",
    "ConfigurationError",
    "DataformerError",
    "DataformerWarning",
    "GenerationInterrupted",
    "GenerationResult",
    "GenerationSummary",
    "InvalidRequestError",
    "MissingAPIKeyError",
    "Plan",
    "PostgresCache",
    "ProjectInfo",
    "Provider",
    "RequestFailedError",
    "ResponseCache",
    "Results",
    "StoreUnavailable",
    "UnknownProjectWarning",
    "UnknownProviderError",
    "WireFormat",
    "get_messages",
    "get_request_list",
    "image_part",
    "load_ipython_extension",
    "register_provider",
    "register_wire_format",
    "unload_ipython_extension",
]
