"""``AsyncLLM``: concurrent generation under rate limits, with a per-project disk cache."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import gc
import hashlib
import json
import math
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, Literal

import httpx

from .cache import DEFAULT_CACHE_DIR, ClearReport, ResponseCache, normalize_project
from .echo import EchoTransport
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    MissingAPIKeyError,
    RequestFailedError,
)
from .limits import RateBucket, RateLimiter, estimate_request_tokens
from .providers import (
    ECHO_BASE_URL,
    GenType,
    Provider,
    auth_headers,
    build_body,
    check_url,
    endpoint_url,
    get_provider,
    resolve_api_key,
    response_text,
    to_openai,
)
from .results import GenerationResult, GenerationSummary, Results
from .transport import AiohttpTransport, Reply, post

if TYPE_CHECKING:  # asyncio is imported where it runs: importing it costs a tenth of importing dataformer_nb
    import asyncio

CACHE_SCHEMA_VERSION = 1
DEFAULT_PROJECT = "dataformer"
DEFAULT_MAX_CONCURRENT_REQUESTS = 64
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 60.0
_ROUTING_KEYS = ("api_provider", "url", "api_key", "model", "metadata")
_RETRYABLE_STATUSES = {408, 409, 429}

TransportChoice = Literal["aiohttp", "httpx"] | httpx.AsyncBaseTransport


def _not_serialisable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} {value!r:.60} is not JSON-serialisable")


def _json_encoder(sort_keys: bool) -> Callable[[Any], str]:
    """Compact JSON that refuses NaN, from an encoder built once: json.dumps builds one per
    call, a third of what encoding a small request costs."""
    if c_make_encoder is None:
        encoder = json.JSONEncoder(sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return encoder.encode
    make = c_make_encoder(None, _not_serialisable, encode_basestring, None, ":", ",", sort_keys, False, False)
    return lambda value: "".join(make(value, 0))


_KEY_JSON = _json_encoder(sort_keys=True)
_BODY_JSON = _json_encoder(sort_keys=False)
_ECHO = EchoTransport()
_MISSING = object()
_PLAIN = frozenset({str, int, bool, type(None)})
_ECHO_HOST = httpx.URL(ECHO_BASE_URL).host


@dataclass
class _Route:
    """Where requests with one (provider, url, key, model) go, and the key's fate."""

    provider: Provider
    endpoint: str
    model: str
    headers: dict[str, str]
    key: str | None
    key_source: str
    key_error: MissingAPIKeyError | None
    bucket: RateBucket
    key_suffix: bytes  # what the cache key hashes after the body
    url: httpx.URL = field(init=False)
    echo: bool = field(init=False)

    def __post_init__(self) -> None:
        self.url = httpx.URL(self.endpoint)
        self.echo = self.url.host == _ECHO_HOST


@dataclass(slots=True)
class _Unit:
    """One distinct request to send, and the result slots it fills."""

    route: _Route
    request: Mapping[str, Any]
    cache_key: str
    indices: list[int]


class AsyncLLM:
    """Send chat or text requests to an LLM provider, concurrently, with a disk cache.

    Configuration comes from the arguments, then the environment (``PROJECT_NAME``,
    ``DATAFORMER_CACHE_DIR``, ``<PROVIDER>_API_KEY``, ``<PROVIDER>_BASE_URL``), then
    defaults. Creating the object sends nothing and opens nothing.
    """

    def __init__(
        self,
        api_provider: str = "openai",
        model: str | None = None,
        api_key: str | None = None,
        url: str | None = None,
        sampling_params: Mapping[str, Any] | None = None,
        max_requests_per_minute: float | None = None,
        max_tokens_per_minute: float | None = None,
        max_concurrent_requests: int | None = None,
        max_attempts: int = 5,
        gen_type: GenType = "chat",
        project_name: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 120.0,
        retry_base_delay: float = 0.5,
        transport: TransportChoice = "aiohttp",
        progress: bool = True,
        verbose: bool = True,
    ) -> None:
        self.api_provider = get_provider(api_provider).name
        self.model = _optional_str(model, "model")
        self._api_key = _optional_str(api_key, "api_key")
        self.url = None if url is None else check_url(url)
        if sampling_params is not None and not isinstance(sampling_params, Mapping):
            raise ConfigurationError(
                f"sampling_params={sampling_params!r} must be a dict such as {{'temperature': 0.7}}"
            )
        self.sampling_params = dict(sampling_params or {})
        self.max_requests_per_minute = _positive(max_requests_per_minute, "max_requests_per_minute")
        self.max_tokens_per_minute = _positive(max_tokens_per_minute, "max_tokens_per_minute")
        self.max_concurrent_requests = int(_positive(max_concurrent_requests, "max_concurrent_requests", integer=True)
                                           or DEFAULT_MAX_CONCURRENT_REQUESTS)
        self.max_attempts = int(_positive(max_attempts, "max_attempts", integer=True) or 1)
        if gen_type not in ("chat", "text"):
            raise ConfigurationError(f"gen_type={gen_type!r} must be 'chat' or 'text'")
        self.gen_type: GenType = gen_type
        self.project_name = normalize_project(project_name or os.environ.get("PROJECT_NAME") or DEFAULT_PROJECT)
        self.cache_dir = os.fspath(cache_dir or os.environ.get("DATAFORMER_CACHE_DIR") or DEFAULT_CACHE_DIR)
        self.timeout = float(_positive(timeout, "timeout") or 0)
        self.retry_base_delay = float(retry_base_delay)
        if not (transport in ("aiohttp", "httpx") or isinstance(transport, httpx.AsyncBaseTransport)):
            raise ConfigurationError(f"transport={transport!r} must be 'aiohttp', 'httpx' or an httpx transport")
        self.transport = transport
        self.progress = progress
        self.verbose = verbose
        self.last_summary: GenerationSummary | None = None
        self._limiter = RateLimiter(self.max_requests_per_minute, self.max_tokens_per_minute,
                                    self.max_concurrent_requests)
        self._cache: ResponseCache | None = None

    def __repr__(self) -> str:
        return (f"AsyncLLM(api_provider={self.api_provider!r}, model={self.model!r}, "
                f"project_name={self.project_name!r}, cache_dir={self.cache_dir!r})")

    @property
    def cache(self) -> ResponseCache:
        """The response cache under ``cache_dir``, opened on first use."""
        if self._cache is None:
            self._cache = ResponseCache(self.cache_dir)
        return self._cache

    def clear_cache(self, projects: str | Sequence[str]) -> ClearReport:
        """Clear one project, a list of them, or everything (``"full"``); see ResponseCache.clear."""
        return self.cache.clear(projects)

    def cache_panel(self) -> Any:
        """The cache panel (ipywidgets) for this client's cache directory."""
        from .widget import CachePanel

        return CachePanel(self)

    def cache_key(self, request: Mapping[str, Any], cache_vars: Mapping[str, Any] | None = None) -> str:
        """The key under which ``request``'s response is (or would be) cached."""
        return self._prepare(0, request, _cache_vars_json(cache_vars), {}).cache_key

    # Generating

    def generate(
        self,
        request_list: Sequence[Mapping[str, Any]],
        project_name: str | None = None,
        clear_project_cache: str | Sequence[str] | None = None,
        use_cache: bool = True,
        cache_vars: Mapping[str, Any] | None = None,
    ) -> Results:
        """Send every request and return one result per request, in request order.

        Synchronous everywhere: in a script, and inside a running event loop (Jupyter),
        where the batch runs on its own loop in a worker thread while the caller waits.
        """
        import asyncio

        coro = self.agenerate(request_list, project_name, clear_project_cache, use_cache, cache_vars)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        return _run_in_worker_thread(coro)

    async def agenerate(
        self,
        request_list: Sequence[Mapping[str, Any]],
        project_name: str | None = None,
        clear_project_cache: str | Sequence[str] | None = None,
        use_cache: bool = True,
        cache_vars: Mapping[str, Any] | None = None,
    ) -> Results:
        """The async twin of :meth:`generate`, for ``await`` in async code."""
        project = normalize_project(project_name) if project_name is not None else self.project_name
        if not isinstance(request_list, (list, tuple)):
            raise InvalidRequestError(
                f"request_list must be a list of request dicts, not {type(request_list).__name__}: "
                "pass e.g. [{'messages': [{'role': 'user', 'content': 'Hi'}]}]"
            )
        with _gc_paused():
            routes: dict[tuple[Any, ...], _Route] = {}
            cache_vars_json = _cache_vars_json(cache_vars)
            prepared = [self._prepare(i, r, cache_vars_json, routes) for i, r in enumerate(request_list)]
            units = _group(prepared, dedupe=use_cache)
            # A missing key is only an error for what must be sent: a cached notebook re-runs without keys.
            keyless = [u for u in units.values() if u.route.key_error is not None]
            if clear_project_cache is not None:
                if keyless:
                    raise keyless[0].route.key_error  # type: ignore[misc]
                self._say(str(self.cache.clear(clear_project_cache)))
            for unit in keyless:
                if not (use_cache and unit.cache_key in self.cache):
                    raise unit.route.key_error  # type: ignore[misc]
            hits = self.cache.lookup(list(units), project) if use_cache else {}
            to_send = [u for key, u in units.items() if key not in hits]

            results: list[GenerationResult | None] = [None] * len(request_list)
            summary = GenerationSummary(project)
            for key, response in hits.items():
                for i in units[key].indices:
                    results[i] = _result(request_list[i], response, cached=True)
                    summary.cached += 1
        await self._send_all(to_send, request_list, results, summary, project if use_cache else None)
        if use_cache and (summary.sent or summary.cached):
            self.cache.touch(project)
            self.cache.notify()
        self.last_summary = summary
        self._say(str(summary))
        return Results(results, summary)  # type: ignore[arg-type]

    # Preparing requests

    def _prepare(self, index: int, request: Any, cache_vars: str, routes: dict[tuple[Any, ...], _Route]) -> _Unit:
        """Validate one request and compute its body and cache key (its bytes wait until it is sent)."""
        if type(request) is not dict and not isinstance(request, Mapping):
            raise InvalidRequestError(
                f"request_list[{index}] is a {type(request).__name__}, not a dict: each request is a dict such as "
                "{'messages': [{'role': 'user', 'content': 'Hi'}]}"
            )
        get = request.get
        target = (get("api_provider"), get("url"), get("api_key"), get("model"))
        try:
            route = routes.get(target)
        except TypeError:  # an unhashable url or key: _route says what is wrong with it
            route = None
        if route is None:
            route = self._route(index, request, cache_vars)
            with contextlib.suppress(TypeError):
                routes[target] = route
        body = self._body(request, route, index)
        try:
            # Equal to hashing json.dumps({"v", "url", "model", "body", "cache_vars"}, sort_keys=True).
            canonical = _KEY_JSON(_canonical(body))
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidRequestError(
                f"request_list[{index}] holds a value that is not JSON-serialisable ({exc}): "
                "use strings, numbers, booleans, None, lists and dicts"
            ) from None
        key = hashlib.sha256(b'{"body":' + canonical.encode() + route.key_suffix).hexdigest()
        return _Unit(route, request, key, [index])

    def _body(self, request: Mapping[str, Any], route: _Route, index: int) -> dict[str, Any]:
        payload = {k: v for k, v in request.items() if k not in _ROUTING_KEYS}
        for k, v in self.sampling_params.items():
            payload.setdefault(k, v)
        _check_prompt(payload, self.gen_type, index)
        return build_body(route.provider.style, self.gen_type, payload, route.model)

    def _route(self, index: int, request: Mapping[str, Any], cache_vars: str) -> _Route:
        where = f"request_list[{index}]"
        provider = get_provider(request.get("api_provider", self.api_provider))
        own = provider.name == self.api_provider
        url = request.get("url", self.url if own else None)
        if url is not None:
            url = check_url(url, f"{where}['url']")
        explicit_key = _optional_str(request.get("api_key", self._api_key if own else None), f"{where}['api_key']")
        model = _optional_str(request.get("model", self.model if own else None), f"{where}['model']")
        model = model or provider.default_model
        endpoint = endpoint_url(provider, self.gen_type, url, os.environ)
        try:
            key, source = resolve_api_key(provider, explicit_key, endpoint, os.environ)
            error = None
        except MissingAPIKeyError as exc:
            key, source, error = None, provider.key_env or "api_key=", exc
        headers = {"Content-Type": "application/json", **auth_headers(provider, key)}
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16] if key else ""
        bucket = self._limiter.bucket(endpoint, fingerprint)
        suffix = (f',"cache_vars":{cache_vars},"model":{_KEY_JSON(model)},'
                  f'"url":{_KEY_JSON(endpoint)},"v":{CACHE_SCHEMA_VERSION}}}')
        return _Route(provider, endpoint, model, headers, key, source, error, bucket, suffix.encode())

    # Sending

    async def _send_all(
        self,
        units: list[_Unit],
        request_list: Sequence[Mapping[str, Any]],
        results: list[GenerationResult | None],
        summary: GenerationSummary,
        project: str | None,
    ) -> None:
        import asyncio

        from tqdm.auto import tqdm

        buckets = {id(u.route.bucket): u.route.bucket for u in units}
        for bucket in buckets.values():
            bucket.rejection = None
        slots = {key: asyncio.Semaphore(b.max_concurrent_requests) for key, b in buckets.items()}
        bar = tqdm(total=len(results), initial=summary.cached, desc="generate", unit="req",
                   disable=not self.progress or not units, dynamic_ncols=True)

        writer = _CacheWriter(self.cache, project) if project is not None else None

        async def run(transport: httpx.AsyncBaseTransport, unit: _Unit) -> None:
            outcome = await self._send(transport, unit, slots[id(unit.route.bucket)])
            if isinstance(outcome, RequestFailedError):
                for i in unit.indices:
                    results[i] = _result(request_list[i], None, error=outcome)
                    summary.failures[outcome.cause] += 1
                bar.set_postfix(cached=summary.cached, failed=summary.failed, refresh=False)
            else:
                for i in unit.indices:
                    results[i] = _result(request_list[i], outcome)
                    summary.sent += 1
                if writer is not None:
                    await writer.save(unit.cache_key, outcome)
            bar.update(len(unit.indices))

        async def worker(queue: Iterator[_Unit]) -> None:
            for unit in queue:
                await run(_ECHO if unit.route.echo else network, unit)  # type: ignore[arg-type]

        network = self._network_transport(units, buckets.values())
        try:
            # A few workers per bucket, not a task per request: 10^5 tasks cost ~300 MB.
            # Twice the concurrency keeps every slot busy while some workers wait to retry.
            workers = []
            for key, bucket in buckets.items():
                own = [u for u in units if id(u.route.bucket) == key]
                queue = iter(own)
                workers += [worker(queue) for _ in range(min(len(own), 2 * bucket.max_concurrent_requests))]
            await asyncio.gather(*workers)
        except (asyncio.CancelledError, KeyboardInterrupt):
            if writer is not None:
                writer.flush()
            pending = sum(len(u.indices) for u in units) - summary.sent - summary.failed
            self._say(f"interrupted: {summary.sent} new responses are saved in the cache; "
                      f"re-run to send the other {pending}")
            raise
        finally:
            if writer is not None:
                writer.flush()
            bar.set_postfix(cached=summary.cached, failed=summary.failed, refresh=False)
            bar.close()
            if network is not None and network is not self.transport:
                await network.aclose()

    def _network_transport(self, units: list[_Unit], buckets: Iterable[RateBucket]) -> httpx.AsyncBaseTransport | None:
        """The transport for what goes over the network (None if everything is echo).

        Requests go straight to the transport: httpx's AsyncClient layer costs more CPU
        per request than the aiohttp transport under it (benchmarks/).
        """
        if all(u.route.echo for u in units):
            return None
        if isinstance(self.transport, httpx.AsyncBaseTransport):
            return self.transport
        connections = sum(b.max_concurrent_requests for b in buckets)
        if self.transport == "aiohttp":
            return AiohttpTransport(connections, _ssl_context())
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncHTTPTransport(verify=_ssl_context(), limits=limits)

    async def _send(
        self, transport: httpx.AsyncBaseTransport, unit: _Unit, slot: asyncio.Semaphore
    ) -> dict[str, Any] | bytes | RequestFailedError:
        import asyncio

        route, bucket = unit.route, unit.route.bucket
        body = self._body(unit.request, route, unit.indices[0])  # rebuilt: 10^5 kept bodies weigh ~25 MB
        content = _BODY_JSON(body).encode()
        tokens = estimate_request_tokens(body)
        error = RequestFailedError("not sent", cause="not sent")
        for attempt in range(1, self.max_attempts + 1):
            async with slot:
                if bucket.rejection is not None:
                    return bucket.rejection  # type: ignore[return-value]
                await bucket.wait_turn(tokens)
                try:
                    reply = await post(transport, route.url, content, route.headers, self.timeout)
                except httpx.TimeoutException:
                    error, delay = self._failure(route, "timeout", f"no reply within {self.timeout:g} s"), None
                except httpx.TransportError as exc:
                    error, delay = self._failure(route, "connection", f"connection failed ({exc!r})"), None
                else:
                    outcome = self._interpret(reply, route, tokens)
                    if not isinstance(outcome, tuple):
                        return outcome
                    error, delay = outcome
            if attempt < self.max_attempts:
                await asyncio.sleep(self._backoff(attempt) if delay is None else delay)
        error.args = (f"{error.args[0]} (gave up after {self.max_attempts} attempts)",)
        return error

    def _interpret(
        self, reply: Reply, route: _Route, tokens: int
    ) -> dict[str, Any] | bytes | RequestFailedError | tuple[RequestFailedError, float | None]:
        """A response (its JSON bytes when already in OpenAI's shape), a final error, or
        (a retryable error, the delay the server asked for)."""
        status = reply.status
        if 200 <= status < 300:
            try:
                data = json.loads(reply.content.decode())
                response = to_openai(route.provider.style, self.gen_type, data)
            except (ValueError, KeyError, TypeError) as exc:
                return self._failure(route, "malformed json", f"unreadable reply ({exc})"), None
            usage = response.get("usage") or {}
            route.bucket.settle(tokens, usage.get("total_tokens"))
            return reply.content if response is data else response
        detail = self._failure(route, f"http {status}", f"HTTP {status}: {_server_message(reply)}", status)
        if status in (401, 403):
            rejection = AuthenticationError(
                f"{route.provider.name} rejected the key in {route.key_source} (HTTP {status}): "
                f"check {route.key_source} in .env or pass api_key=; the rest of its requests were not sent",
                cause=f"http {status}", status=status,
            )
            route.bucket.rejection = rejection
            return rejection
        if status not in _RETRYABLE_STATUSES and status < 500:
            return detail
        retry_after = _retry_after(reply.headers)
        if status == 429:
            route.bucket.pause(retry_after if retry_after is not None else self._backoff(1))
        return detail, retry_after

    def _failure(self, route: _Route, cause: str, what: str, status: int | None = None) -> RequestFailedError:
        message = f"{route.provider.name} at {route.endpoint}: {what}"
        if route.key:
            message = message.replace(route.key, "***")
        return RequestFailedError(message, cause=cause, status=status)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(MAX_BACKOFF_SECONDS, self.retry_base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"dataformer_nb: {text}")


class _CacheWriter:
    """Commits fresh responses in groups: the replies that arrive in one turn of the event
    loop share one SQLite transaction (one per reply cost more than the whole HTTP
    exchange), so a crash loses at most the replies of that turn."""

    def __init__(self, cache: ResponseCache, project: str) -> None:
        self._cache, self._project = cache, project
        self._pending: list[tuple[str, dict[str, Any] | bytes]] = []

    async def save(self, key: str, response: dict[str, Any] | bytes) -> None:
        import asyncio

        self._pending.append((key, response))
        if len(self._pending) == 1:
            await asyncio.sleep(0)  # the other replies ready in this turn join the group
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._cache.put_many(self._pending, self._project)
            self._pending.clear()  # only once committed: an interrupted write is tried again


def _run_in_worker_thread(coro: Any) -> Any:
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
    return outcome["value"]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
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


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA store costs ~0.1 s of CPU: once per process, not once per generate.
    return httpx.create_ssl_context()


def _result(request: Mapping[str, Any], response: dict[str, Any] | bytes | None, *, cached: bool = False,
            error: RequestFailedError | None = None) -> GenerationResult:
    return GenerationResult(request, response, cached, error, request.get("metadata"))


def _group(prepared: list[_Unit], dedupe: bool) -> dict[str, _Unit]:
    """Distinct requests by cache key (every slot its own unit when not deduplicating)."""
    units: dict[str, _Unit] = {}
    for unit in prepared:
        key = unit.cache_key if dedupe else f"{unit.cache_key}#{unit.indices[0]}"
        if key in units:
            units[key].indices.extend(unit.indices)
        else:
            units[key] = unit
    return units


def _check_prompt(payload: Mapping[str, Any], gen_type: GenType, index: int) -> None:
    where = f"request_list[{index}]"
    if gen_type == "text":
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) and not (isinstance(prompt, list) and prompt and
                                                all(isinstance(p, str) for p in prompt)):
            raise InvalidRequestError(f"{where} needs a 'prompt' string for gen_type='text'")
        return
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            f"{where} needs 'messages', a non-empty list such as [{{'role': 'user', 'content': 'Hi'}}]"
        )
    for j, message in enumerate(messages):
        if not _is_message(message):
            raise InvalidRequestError(
                f"{where}['messages'][{j}] = {message!r} is not a message: each is a dict with a 'role' "
                "string and a 'content' string (or list of content parts)"
            )


def _is_message(message: Any) -> bool:
    if type(message) is not dict and not isinstance(message, Mapping):
        return False
    content = message.get("content", _MISSING)
    return isinstance(message.get("role"), str) and (content is None or isinstance(content, (str, list)))


def _canonical(value: Any) -> Any:
    """``value`` with integral floats as ints, so 1 and 1.0 give one cache key."""
    kind = type(value)
    if kind is dict:  # the common case first: this runs over every request of every call
        return {k: v if type(v) in _PLAIN else _canonical(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else _canonical(v) for v in value]
    if kind is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return _canonical(dict(value))
    if isinstance(value, (list, tuple)):
        return _canonical(list(value))
    return value


def _cache_vars_json(cache_vars: Mapping[str, Any] | None) -> str:
    if cache_vars is not None and not isinstance(cache_vars, Mapping):
        raise ConfigurationError(f"cache_vars={cache_vars!r} must be a dict")
    try:
        return _KEY_JSON(_canonical(cache_vars or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"cache_vars holds a value that is not JSON-serialisable ({exc}): "
            "use strings, numbers, booleans, None, lists and dicts"
        ) from None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a 429/503 asked for (``retry-after-ms`` or ``Retry-After``), capped."""
    try:
        if "retry-after-ms" in headers:
            return min(float(headers["retry-after-ms"]) / 1000, MAX_RETRY_AFTER_SECONDS)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                seconds = float(value)
            except ValueError:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _server_message(reply: Reply) -> str:
    try:
        data = json.loads(reply.content)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message", error) if isinstance(error, dict) else error
    except ValueError:
        message = reply.content.decode("utf-8", errors="replace")
    text = str(message).strip()
    return text[:300] + ("..." if len(text) > 300 else "")


def _optional_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}")


def _positive(value: Any, name: str, integer: bool = False) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (integer and value != int(value)):
        kind = "a positive whole number" if integer else "a positive number"
        raise ConfigurationError(f"{name}={value!r} must be {kind} (or None for no limit)")
    return value


def get_request_list(instructions: str | Sequence[str], sampling_params: Mapping[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
    """Chat requests from one prompt or a list of prompts, each with ``sampling_params``."""
    if isinstance(instructions, str):
        instructions = [instructions]
    if not isinstance(instructions, Sequence) or not all(isinstance(p, str) for p in instructions):
        raise InvalidRequestError("instructions must be a string or a list of strings")
    return [{"messages": [{"role": "user", "content": p}], **(sampling_params or {})} for p in instructions]


def get_messages(results: Sequence[GenerationResult | Sequence[Any]]) -> list[str | None]:
    """The reply text of each result (None where a request failed)."""
    return [r.text if isinstance(r, GenerationResult) else response_text(r[1]) for r in results]
