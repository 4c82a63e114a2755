"""Sending requests now (online): workers per rate bucket, retries, and what each reply means.

``Dispatcher`` sends the units that were not cached, and fills their slots
(``dataformer_nb.slots.Slots``) as replies come; the responses go to the cache through a
``dataformer_nb.cache.writer.CacheWriter``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx

from ._format import server_message
from ._json import dumpb
from ._progress import progress_bar
from ._usage import token_count
from .cache.writer import CacheWriter
from .errors import AuthenticationError, CacheError, RequestFailedError
from .limits import WAIT_SHOWN_SECONDS, RateBucket, Ticket, estimate_request_tokens
from .options import SendOptions
from .prepare import Route, Unit, hide_key, holds_a_secret
from .providers import UNREADABLE_REPLY
from .replies import ReplyProblem, read_reply
from .results import GenerationSummary
from .schema import OutputSchema
from .serverlimits import read as read_server_limits
from .slots import Slots, prompt_text
from .transport import (
    Reply,
    ReplyTooLargeError,
    open_transport,
    post,
    retryable_status,
)

if TYPE_CHECKING:  # imported where it runs: see _sync
    import asyncio

_log = logging.getLogger("dataformer_nb")
MAX_BACKOFF_SECONDS = 30.0
MIN_FAILURES_TO_STOP = 50
MAX_RETRY_AFTER_SECONDS = 24 * 3600.0  # larger is garbled; max_wait decides what is worth waiting for
# OpenAI's (and compatible servers') 429 for an account out of credit: no wait ends it.
_QUOTA_SPENT_CODES = {"insufficient_quota", "billing_hard_limit_reached"}


class Retry(NamedTuple):
    """A failure worth another try: a real one (it counts against ``max_attempts``), or the
    server asking to come back later (``told_to_wait``; in ``seconds`` if it said)."""

    error: RequestFailedError
    told_to_wait: bool = False
    seconds: float | None = None
    invalid_output: str | None = None  # the reply's text, when it failed the schema (for a re-ask)


class Fresh(NamedTuple):
    """A successful reply: the response (its JSON bytes when already in OpenAI's shape), its usage,
    and its text validated against the schema asked for (None without one)."""

    response: dict[str, Any] | bytes
    usage: Any
    parsed: Any = None


class Dispatcher:
    """Sends units under their buckets' limits, retrying what can be retried."""

    def __init__(self, options: SendOptions, *, body_of: Callable[[Unit], dict[str, Any]],
                 progress_label: str = "generate", schema: OutputSchema | None = None, reask: int = 0) -> None:
        self._options = options
        self._body_of = body_of
        self._progress_label = progress_label
        self._schema = schema
        self._reask = reask  # replies that failed the schema shown back to the model, per request, at most
        self._waiting: Callable[[float], None] | None = None  # set by run: shows a wait on the progress bar
        self._slots = Slots([], "")  # set by run: the call whose requests go over the wire
        self._breakers: defaultdict[int, _Breaker] = defaultdict(_Breaker)  # by id of a route of this run

    def _breaker(self, route: Route) -> _Breaker:
        return self._breakers[id(route)]

    async def run(self, units: list[Unit], slots: Slots, writer: CacheWriter | None) -> None:
        """Send ``units`` (the requests not cached), each route under its bucket's limits, filling
        ``slots`` as replies come and giving the responses to ``writer`` (None: not cached)."""
        import asyncio

        buckets = {id(u.route.bucket): u.route.bucket for u in units}
        concurrency = {key: asyncio.Semaphore(b.max_concurrent_requests) for key, b in buckets.items()}
        self._slots = slots
        summary = slots.summary
        bar = progress_bar(total=slots.size, initial=summary.cached, desc=self._progress_label, unit="req",
                   disable=not self._options.progress or not units, dynamic_ncols=True)
        _show_counts(bar, summary)  # a re-run's cached count shows from the start
        waiting_shown = [False]

        def show_wait(seconds: float) -> None:
            waiting_shown[0] = True
            bar.set_description_str(f"{self._progress_label} (waiting {seconds:.0f} s: rate limit)")

        self._waiting = show_wait

        async def run_one(transport: httpx.AsyncBaseTransport, unit: Unit) -> None:
            outcome = await self._send(transport, unit, concurrency[id(unit.route.bucket)])
            cost = None
            if isinstance(outcome, RequestFailedError):
                slots.failed(unit, outcome)
                _show_counts(bar, summary)
            else:
                cost = slots.fresh(unit, outcome.response, outcome.usage, outcome.parsed)
            if waiting_shown[0]:
                waiting_shown[0] = False
                bar.set_description_str(self._progress_label, refresh=False)
            bar.update(1)  # before the save below: an interrupt there must not leave it behind
            if writer is not None and not isinstance(outcome, RequestFailedError):
                await writer.save(unit.cache_key, outcome.response, outcome.usage, prompt_text(unit.request), cost)

        async def worker(queue: Iterator[Unit]) -> None:
            for unit in queue:
                if writer is not None and writer.error is not None:
                    return  # the cache cannot take more: send nothing new; requests in flight finish
                await run_one(unit.route.transport or network, unit)  # type: ignore[arg-type]

        network = self._network_transport(units, buckets.values())
        workers: list[asyncio.Future[None]] = []
        try:
            # A few workers per bucket, not a task per request: 10^5 tasks cost ~300 MB.
            # Twice the concurrency keeps every slot busy while some workers wait to retry.
            for key, bucket in buckets.items():
                own = [u for u in units if id(u.route.bucket) == key]
                queue = iter(own)
                workers += [asyncio.ensure_future(worker(queue))
                            for _ in range(min(len(own), 2 * bucket.max_concurrent_requests))]
            try:
                await asyncio.gather(*workers)
            except Exception:
                # One worker failed: gather does not stop the others.
                for task in workers:
                    task.cancel()
                await asyncio.wait(workers)
                raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            if writer is not None:
                writer.close()
            _log.info("interrupted after %d new responses", summary.sent)
            raise
        finally:
            slots.limits_seen(_learned_limits(buckets.values()))
            if writer is not None:
                writer.close()
            _show_counts(bar, summary)
            if summary.failed and not summary.sent:
                bar.colour = "red"  # a run where nothing arrived must not end in a green bar
            bar.close()
            if network is not None and network is not self._options.transport:
                await network.aclose()
        if writer is not None and writer.error is not None:
            raise _write_failed(writer, slots)

    def _network_transport(self, units: list[Unit], buckets: Iterable[RateBucket]) -> httpx.AsyncBaseTransport | None:
        """The transport for what goes over the network (None if every route has its own)."""
        if all(u.route.transport is not None for u in units):
            return None
        return open_transport(self._options.transport, sum(b.max_concurrent_requests for b in buckets))

    async def _send(self, transport: httpx.AsyncBaseTransport, unit: Unit, slot: asyncio.Semaphore
                    ) -> Fresh | RequestFailedError:
        """Send until a reply comes, ``max_attempts`` real failures pass, or waiting as the server
        asked passes ``max_wait``: being told to come back later is not a failure."""
        import asyncio

        route, bucket = unit.route, unit.route.bucket
        body = self._body_of(unit)  # rebuilt: 10^5 kept bodies weigh ~25 MB
        content = dumpb(body)
        tokens = estimate_request_tokens(body)
        failures = waits = reasked = 0
        deadline = None
        slots = self._slots
        while True:
            async with slot:
                breaker = self._breaker(route)
                if breaker.stopped is not None:
                    return breaker.stopped
                now = time.monotonic()
                ticket = await bucket.wait_turn(tokens, self._waiting, (deadline or now + self._options.max_wait) - now)
                if ticket is None:  # the limits known now would hold it past max_wait
                    return _held_too_long(route, self._options.max_wait)
                slots.attempted(first=not (failures or waits))
                outcome: Fresh | RequestFailedError | Retry
                try:
                    reply = await post(transport, route.url, content, route.headers, self._options.timeout,
                                       self._options.max_reply_bytes)
                except ReplyTooLargeError as exc:  # asking again would bring the same reply
                    return _failure(route, "reply too large", f"{exc}: raise max_reply_bytes= if it is expected")
                except httpx.TimeoutException:
                    outcome = Retry(_failure(route, "timeout", f"no reply within {self._options.timeout:g} s"))
                except httpx.TransportError as exc:
                    outcome = Retry(_failure(route, "connection", f"connection failed ({exc!r})"))
                else:
                    bucket.observe(ticket, read_server_limits(reply.headers, route.provider.name))
                    outcome = self._interpret(reply, route, ticket)
                    if isinstance(outcome, Fresh):
                        breaker.failures_in_a_row = 0
                        bucket.succeeded(ticket)
                    if not isinstance(outcome, Retry):
                        return outcome
            if outcome.told_to_wait:
                waits += 1
                # No wait stated. While refusals are sparse (random, a busy server) a request retries
                # after retry_base_delay, or as soon as a request sent after it succeeds: waiting
                # longer and longer would only stretch the run, and a limit that depends on our pace
                # is the bucket's to learn and pace. Once refusals are most of the bucket's replies,
                # the backoff grows as for any failure.
                steps = min(waits, 6) if bucket.refusing() else 1
                # A stated wait is kept, and up to a tenth more: the requests one burst of 429s refused
                # would otherwise all come back at the same instant, into the same trouble.
                seconds = (outcome.seconds * random.uniform(1.0, 1.1) if outcome.seconds is not None
                           else self._backoff(steps))
                now = time.monotonic()
                deadline = deadline or now + self._options.max_wait
                if now + seconds > deadline:
                    return _waited_too_long(route, outcome, seconds, self._options.max_wait)
                if self._waiting is not None and seconds >= WAIT_SHOWN_SECONDS:
                    self._waiting(seconds)
                _log.info("%s; waiting %.1f s as the server asked", outcome.error, seconds)
                if outcome.seconds is None and steps == 1:  # sooner if the server serves again
                    await bucket.retry_after(seconds, ticket)
                else:
                    await asyncio.sleep(seconds)
                continue
            breaker.failed(route, outcome.error)
            failures += 1
            if (outcome.invalid_output is not None and reasked < self._reask and "messages" in body
                    and failures < self._options.max_attempts):
                # Asked again with the failed answer and what was wrong with it, as instructor does; the
                # response is still cached under the request's own key (the conversation that led to
                # it is how it was obtained, not what was asked).
                reasked += 1
                body = reasked_body(body, outcome.invalid_output, outcome.error)
                content, tokens = dumpb(body), estimate_request_tokens(body)
                continue
            if failures >= self._options.max_attempts:
                outcome.error.args = (f"{outcome.error.args[0]} (gave up after {self._options.max_attempts} attempts)",)
                _log.info("%s", outcome.error)
                return outcome.error
            delay = self._backoff(failures)
            _log.info("%s; retrying in %.1f s (attempt %d of %d)", outcome.error, delay, failures + 1,
                      self._options.max_attempts)
            await asyncio.sleep(delay)

    def _interpret(self, reply: Reply, route: Route, ticket: Ticket) -> Fresh | RequestFailedError | Retry:
        """A response, a final error, or one worth retrying (perhaps after the wait the server asked)."""
        status = reply.status
        if 200 <= status < 300:
            if holds_a_secret(reply.content, route):
                return _failure(route, "key in reply", "the reply holds the request's API key or password, so it is "
                                "not cached nor shown: ask the server's operator why it echoes credentials")
            try:
                data = _STRICT_JSON.decode(reply.content.decode())
            except UNREADABLE_REPLY as exc:
                return Retry(_failure(route, "malformed json", f"unreadable reply ({type(exc).__name__}: {exc})"))
            read = read_reply(route.style, self._options.gen_type, data, self._schema)
            # What the reply cost counts against the limits, whether it is used or failed the schema.
            usage = read.usage if isinstance(read, ReplyProblem) else read.response.get("usage") or {}
            route.bucket.settle(ticket.tokens, token_count(usage.get("total_tokens"), "total_tokens")
                                if isinstance(usage, dict) else None)
            if isinstance(read, ReplyProblem):  # retried like any malformed reply, and never cached
                if read.cause == "invalid output":
                    self._slots.invalid_reply(route.model, read.usage)
                return Retry(_failure(route, read.cause, read.message), invalid_output=read.output)
            response = read.response
            return Fresh(reply.content if response is data else response, usage, read.parsed)
        if 300 <= status < 400:
            where = reply.headers.get("location")
            what = f"redirected to {where}: pass that URL as url=" if where else "redirected without a Location"
            return _failure(route, f"http {status}", f"HTTP {status}: {what}", status)
        if status in (401, 403):
            return self._breaker(route).stop(AuthenticationError(
                hide_key(f"{route.name} at {route.endpoint} refused the request (HTTP {status}: "
                         f"{server_message(reply.content)}): {_key_advice(route)}; the rest of its requests were "
                         "not sent", route),
                cause=f"http {status}", status=status,
            ))
        if status == 429 and _error_code(reply) in _QUOTA_SPENT_CODES:
            return self._breaker(route).stop(_failure(
                route, "quota spent", f"HTTP 429: {server_message(reply.content)}: the account's quota or credit is "
                "spent, so waiting will not help: top it up, then re-run (the rest of its requests were not sent)",
                status))
        error = _failure(route, f"http {status}", f"HTTP {status}: {server_message(reply.content)}", status)
        if not retryable_status(status):
            return error
        retry_after = _retry_after(reply.headers)
        if status == 429 or (status == 503 and retry_after is not None):
            route.bucket.told_to_wait(rate_limited=status == 429, ticket=ticket, stated_wait=retry_after is not None)
            return Retry(error, told_to_wait=True, seconds=retry_after)
        return Retry(error)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(MAX_BACKOFF_SECONDS, self._options.retry_base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


REASK = ("That answer does not follow the required format: {problem}. Reply again with only the corrected "
         "JSON.")


def reasked_body(body: dict[str, Any], answer: str, error: RequestFailedError) -> dict[str, Any]:
    """``body`` with the model's failed ``answer`` and what was wrong with it (``error``) appended
    to its messages: the next attempt of a re-ask."""
    problem = str(error.args[0]) if error.args else str(error)
    problem = problem.partition(": ")[2] or problem  # without the route's name
    messages = [*body.get("messages", []), {"role": "assistant", "content": answer},
                {"role": "user", "content": REASK.format(problem=problem)}]
    return {**body, "messages": messages}


def _write_failed(writer: CacheWriter, slots: Slots) -> CacheError:
    """The writer's error, holding every result received (the unsent slots marked), so that no
    paid response is lost when the cache cannot take it."""
    received = slots.summary.sent
    slots.not_sent(RequestFailedError("not sent: the cache could not be written, so sending stopped",
                                      cause="not sent"))
    assert writer.error is not None
    return CacheError(f"{writer.error}; sending stopped. The {received} responses received in this run are in "
                      "this error's .results and in llm.last_results (the ones not saved are not in the cache): "
                      "free disk space or pass another cache_dir=, then re-run", results=slots.results())


def _show_counts(bar: Any, summary: GenerationSummary) -> None:
    """The bar's cached and failed counts, when there are any (the summary line says the rest)."""
    counts = {name: n for name, n in (("cached", summary.cached), ("failed", summary.failed)) if n}
    bar.set_postfix(counts, refresh=False)


def _learned_limits(buckets: Iterable[RateBucket]) -> str:
    """What the servers of a run said (or 429s taught) of their limits, for the summary."""
    learned = {b.describe().learned() for b in buckets}
    waited = sum(b.rate_limited for b in buckets)
    parts = sorted(x for x in learned if x)
    if waited:
        parts.append(f"{waited} {'reply' if waited == 1 else 'replies'} said to wait (429, 503)")
    return "; ".join(parts)


def _held_too_long(route: Route, max_wait: float) -> RequestFailedError:
    return _failure(route, "rate limited", f"the rate limits known now would hold this request past max_wait="
                    f"{max_wait:g} s ({route.bucket.describe()}); re-run later (what was received is cached), or pass "
                    "a larger max_wait=")


def _waited_too_long(route: Route, retry: Retry, seconds: float, max_wait: float) -> RequestFailedError:
    detail = retry.error.args[0].removeprefix(f"{route.name} at {route.endpoint}: ")
    asked = (f"the server asked to wait {seconds:.0f} s more" if retry.seconds is not None
             else "the server kept answering that it is busy")
    return _failure(route, "rate limited", f"{detail}: {asked}, past max_wait={max_wait:g} s for one request; "
                    "re-run later (what was received is cached), or pass a larger max_wait=", retry.error.status)


class _Breaker:
    """Whether a route of this run still sends: not after its key was refused or its quota spent,
    nor after a long run of failed attempts with no success in between (the circuit breaker).
    Only real failures count (5xx, timeouts, drops, malformed replies), not being told to wait,
    and the run is longer than a burst of them at full concurrency can make; an endpoint that is
    down ends the call in seconds instead of hours."""

    __slots__ = ("failures_in_a_row", "stopped")

    def __init__(self) -> None:
        self.stopped: RequestFailedError | None = None  # why nothing more is sent on the route
        self.failures_in_a_row = 0

    def stop(self, error: RequestFailedError) -> RequestFailedError:
        """Stop the route for ``error``, which the request and every later one on it get."""
        self.stopped = error
        return error

    def failed(self, route: Route, error: RequestFailedError) -> None:
        """Count a failed attempt on ``route``; stop it after too many in a row."""
        self.failures_in_a_row += 1
        if self.stopped is None and self.failures_in_a_row >= max(MIN_FAILURES_TO_STOP,
                                                                  4 * route.bucket.max_concurrent_requests):
            self.stopped = RequestFailedError(
                f"{route.name} at {route.endpoint}: stopped sending after {self.failures_in_a_row} "
                f"failed attempts in a row with no success (the last: {error.args[0]}); the requests not sent are "
                "failed; re-run later, when the server answers again (what was received is cached)",
                cause="stopped", status=error.status,
            )


def _not_json(constant: str) -> Any:
    raise ValueError(f"the reply holds {constant}, which is not JSON")


# Built once: json.loads with an option builds a decoder (and its C scanner) per call.
_STRICT_JSON = json.JSONDecoder(parse_constant=_not_json)


def _failure(route: Route, cause: str, what: str, status: int | None = None) -> RequestFailedError:
    return RequestFailedError(hide_key(f"{route.name} at {route.endpoint}: {what}", route), cause=cause,
                              status=status)


def _key_advice(route: Route) -> str:
    if route.key is None:
        if route.password is not None:
            return "check the user and password in url="
        return "it sent no key; pass api_key= if the server needs one"
    if route.key_source == "the api_key argument":
        return "check the api_key passed to AsyncLLM (or in the request)"
    return f"check {route.key_source} in .env or the environment, or pass api_key="


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a 429/503 asked for (``retry-after-ms`` or ``Retry-After``), capped; None if it
    stated none (absent, garbled, zero or negative)."""
    try:
        if "retry-after-ms" in headers:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            value = headers["retry-after"]
            try:
                seconds = float(value)
            except ValueError:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        else:
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        # "nan" parses as a float; zero or less states no wait: the request backs off as for any
        # retry, so no reply can make the client send faster than its backoff schedule.
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _error_code(reply: Reply) -> str | None:
    """The ``error.code`` (or ``error.type``) of an OpenAI-style error body, if it has one."""
    try:
        error = json.loads(reply.content).get("error")
        return str(error.get("code") or error.get("type")) if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        return None
