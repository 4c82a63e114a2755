"""How the requests of a run are sent: validated once, passed down as one object."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import ConfigurationError
from .transport import DEFAULT_MAX_REPLY_BYTES, TransportChoice
from .wire import GenType

DEFAULT_MAX_WAIT = 600.0  # seconds one request may spend waiting out rate limits
DEFAULT_MAX_CONCURRENT_REQUESTS = 64
MIN_RPM = 1 / 60  # one request an hour
MIN_TPM = 1.0
DEFAULT_BATCH_POLL_INTERVAL = 30.0  # seconds between two reads of a batch's status


@dataclass(frozen=True)
class SendOptions:
    """The options of ``dataformer_nb.AsyncLLM`` that say how requests are sent, online
    (``dataformer_nb.dispatch.Dispatcher``) and in batch mode
    (``dataformer_nb.batchrun.BatchRunner``). Each is checked when the object is made:
    a ConfigurationError names the argument at fault and what it takes."""

    gen_type: GenType = "chat"
    max_attempts: int = 5
    timeout: float = 120.0  # seconds for one reply
    retry_base_delay: float = 0.5  # the first backoff, doubling per failed attempt
    transport: TransportChoice = "aiohttp"
    progress: bool = True
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    max_wait: float = DEFAULT_MAX_WAIT  # how long one request may wait out rate limits before it fails
    # generate(batch=True): how often a batch's status is read, and the most requests one batch holds
    # (the service's own limit when None; smaller batches finish, and are cached, sooner).
    batch_poll_interval: float = DEFAULT_BATCH_POLL_INTERVAL
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.gen_type not in ("chat", "text", "embedding"):
            raise ConfigurationError(f"gen_type={self.gen_type!r} must be 'chat', 'text' or 'embedding'")
        _normalise(self, "max_attempts", positive(self.max_attempts, "max_attempts", integer=True, none_means=None))
        _normalise(self, "timeout", positive(self.timeout, "timeout", none_means=None))
        if not is_number(self.retry_base_delay) or not 0 <= self.retry_base_delay <= 60:
            raise ConfigurationError(
                f"retry_base_delay={self.retry_base_delay!r} must be a number of seconds from 0 to 60 (default 0.5)"
            )
        _normalise(self, "retry_base_delay", float(self.retry_base_delay))
        if not (self.transport in ("aiohttp", "httpx") or isinstance(self.transport, httpx.AsyncBaseTransport)):
            raise ConfigurationError(f"transport={self.transport!r} must be 'aiohttp', 'httpx' or an httpx transport")
        size = positive(self.max_reply_bytes, "max_reply_bytes", integer=True, none_means="the default, 64 MiB")
        _normalise(self, "max_reply_bytes", DEFAULT_MAX_REPLY_BYTES if size is None else int(size))
        _normalise(self, "max_wait", positive(self.max_wait, "max_wait", none_means=None))
        interval = positive(self.batch_poll_interval, "batch_poll_interval", none_means=None)
        _normalise(self, "batch_poll_interval", interval)
        batch_size = positive(self.batch_size, "batch_size", integer=True, none_means="the service's own limit")
        _normalise(self, "batch_size", None if batch_size is None else int(batch_size))



@dataclass(frozen=True)
class LimitOptions:
    """The limits you set on an ``dataformer_nb.AsyncLLM`` (each provider's own come from
    its headers or its 429s): requests and tokens a minute (None: no limit of yours), requests
    in flight, and ``max_rps`` (pace per second, with no burst). Checked when made, like
    ``SendOptions``."""

    max_requests_per_minute: float | None = None
    max_tokens_per_minute: float | None = None
    max_concurrent_requests: int | None = DEFAULT_MAX_CONCURRENT_REQUESTS  # None: the default, 64
    max_rps: bool = False

    def __post_init__(self) -> None:
        rpm = _rate(self.max_requests_per_minute, "max_requests_per_minute", MIN_RPM)
        _normalise(self, "max_requests_per_minute", rpm)
        _normalise(self, "max_tokens_per_minute", _rate(self.max_tokens_per_minute, "max_tokens_per_minute", MIN_TPM))
        concurrency = positive(self.max_concurrent_requests, "max_concurrent_requests", integer=True)
        _normalise(self, "max_concurrent_requests",
                   DEFAULT_MAX_CONCURRENT_REQUESTS if concurrency is None else int(concurrency))
        if not isinstance(self.max_rps, bool):
            raise ConfigurationError(f"max_rps={self.max_rps!r} must be True (pace per second, no burst) or False")


def _normalise(options: Any, name: str, value: Any) -> None:
    object.__setattr__(options, name, value)  # frozen: only __post_init__ normalises a field


def _rate(value: Any, name: str, minimum: float) -> float | None:
    rate = positive(value, name)
    if rate is not None and rate < minimum:
        raise ConfigurationError(
            f"{name}={value!r} is less than {minimum:g} a minute, so a batch would take days: "
            f"pass at least {minimum:g}, or None for no limit"
        )
    return rate


def is_number(value: Any) -> bool:
    """A finite real number (numpy's included), not a bool."""
    # bool registers as numbers.Real at run time, which mypy does not model (it calls this unreachable)
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)  # type: ignore[unreachable]


def positive(value: Any, name: str, integer: bool = False, *, none_means: str | None = "no limit") -> float | None:
    """``value`` as a positive number; None is allowed only where it means something (``none_means``)."""
    kind = "a positive whole number" if integer else "a positive number"
    if value is None and none_means is not None:
        return None
    if not is_number(value) or value <= 0 or (integer and value != int(value)):
        allowed = f" (or None for {none_means})" if none_means else ""
        raise ConfigurationError(f"{name}={value!r} must be {kind}{allowed}")
    return int(value) if integer else float(value)
