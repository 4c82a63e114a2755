"""Preparing requests: validate each one, route it, build its body and compute its cache key.

Nothing here sends or stores anything. A ``Route`` says where the requests with one
(provider, url, key, model) go; a ``Unit`` is one distinct request and the result
slots it fills.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import httpx

from .cachekey import KeyMaker
from .errors import ConfigurationError, InvalidRequestError, MissingAPIKeyError
from .limits import RateBucket, RateLimiter
from .providers import (
    GenType,
    Provider,
    Style,
    ask_for_schema,
    auth_headers,
    build_body,
    check_url,
    endpoint_url,
    get_provider,
    own_transport,
    resolve_api_key,
    split_credentials,
    wire_style,
)
from .schema import OutputSchema
from .settings import Secret, SecretHeaders, check_secret, environment

ROUTING_KEYS = frozenset({"api_provider", "url", "api_key", "model", "metadata"})
_MISSING = object()


@dataclass(frozen=True)
class Target:
    """The instance's defaults for routing: a request's own fields override them."""

    api_provider: str
    url: str | None
    api_key: Secret | None
    model: str | None


@dataclass(eq=False)
class Route:
    """Where requests with one (provider, url, key, model) go, and the key's fate."""

    provider: Provider
    style: Style  # the wire format: the endpoint's, which may differ from the provider's (Ollama's /v1)
    endpoint: str
    model: str
    name: str  # what messages call the server: the provider, or the host of a url= server
    headers: dict[str, str] = field(repr=False)  # holds the key
    key: Secret | None
    key_source: str
    key_error: MissingAPIKeyError | None
    bucket: RateBucket
    keys: KeyMaker = field(repr=False)
    password: Secret | None = None  # of a user:password@ in the URL, sent as Basic auth
    url: httpx.URL = field(init=False, repr=False)
    # The provider's own in-process transport (the echo provider's), or None: the network's.
    transport: httpx.AsyncBaseTransport | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = httpx.URL(self.endpoint)
        self.transport = own_transport(self.url)


@dataclass(slots=True)
class Unit:
    """One distinct request to send, and the result slot it fills (a repeated request is a unit
    of its own, under a sample key: see ``by_key``)."""

    route: Route
    request: Mapping[str, Any]
    cache_key: str
    index: int  # its place in the request list (an int, not a list: 10^5 one-item lists weighed ~9 MB)


class Preparer:
    """Prepares the requests of one ``generate`` call; routes are computed once per target."""

    def __init__(self, target: Target, gen_type: GenType, sampling_params: Mapping[str, Any],
                 limiter: RateLimiter, cache_vars: Mapping[str, Any] | None,
                 schema: OutputSchema | None = None) -> None:
        self._target, self._gen_type, self._sampling_params = target, gen_type, sampling_params
        self._schema = schema
        self._limiter = limiter
        self._cache_vars = check_cache_vars(cache_vars)
        self._routes: dict[tuple[Any, ...], Route] = {}
        self._env = environment()

    def prepare(self, index: int, request: Any) -> Unit:
        """Validate one request and compute its cache key (its body is rebuilt when sent)."""
        if type(request) is not dict and not isinstance(request, Mapping):
            raise InvalidRequestError(
                f"request_list[{index}] is a {type(request).__name__}, not a dict: each request is a dict such as "
                "{'messages': [{'role': 'user', 'content': 'Hi'}]}"
            )
        route = self._route_of(index, request)
        body = self.body(request, route, index)  # keyed in place: it is rebuilt when sent
        try:
            key = route.keys.key_of_own(body)
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(
                f"request_list[{index}] holds text that is not valid Unicode ({exc.object[exc.start:exc.end]!r}, "
                "a lone surrogate, often from bytes decoded with errors='surrogateescape'): "
                "decode the source text with errors='replace'"
            ) from None
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidRequestError(
                f"request_list[{index}] holds a value that is not JSON-serialisable ({exc}): "
                "use strings, numbers, booleans, None, lists and dicts"
            ) from None
        return Unit(route, request, key, index)

    def sample_key(self, unit: Unit, sample: int) -> str:
        """The cache key of the ``sample``-th copy of ``unit``'s request (see cachekey)."""
        return unit.route.keys.key(self.body(unit.request, unit.route, unit.index), sample)

    def body(self, request: Mapping[str, Any], route: Route, index: int) -> dict[str, Any]:
        """The JSON body ``request`` is sent as."""
        payload = {k: v for k, v in request.items() if k not in ROUTING_KEYS}
        for k, v in self._sampling_params.items():
            payload.setdefault(k, v)
        check_prompt(payload, self._gen_type, index)
        body = build_body(route.style, self._gen_type, payload, route.model)
        if self._schema is not None:  # in the body, so in the cache key: another schema, another key
            ask_for_schema(route.style, body, self._schema.name, self._schema.json_schema)
        return body

    def route_of_target(self) -> Route:
        """The route of a request that names no provider, url, key or model of its own."""
        return self._route_of(0, {})

    def _route_of(self, index: int, request: Mapping[str, Any]) -> Route:
        get = request.get
        target = (get("api_provider"), get("url"), get("api_key"), get("model"))
        try:
            route = self._routes.get(target)
        except TypeError:  # an unhashable url or key: _route says what is wrong with it
            route = None
        if route is None:
            route = self._route(index, request)
            with contextlib.suppress(TypeError):
                self._routes[target] = route
        return route

    def _route(self, index: int, request: Mapping[str, Any]) -> Route:
        where = f"request_list[{index}]"
        defaults = self._target
        provider = get_provider(request.get("api_provider", defaults.api_provider))
        own = provider.name == defaults.api_provider
        url = request.get("url", defaults.url if own else None)
        if url is not None:
            url = check_url(url, f"{where}['url']")
        if "api_key" in request:
            explicit = check_key(request["api_key"], f"{where}['api_key']")
        else:
            explicit = defaults.api_key.reveal() if own and defaults.api_key is not None else None
        model = optional_str(request.get("model", defaults.model if own else None), f"{where}['model']")
        model = model or provider.default_model
        given = endpoint_url(provider, self._gen_type, url, self._env)
        # A user:password@ in the URL goes into the Authorization header; the URL sent, shown in
        # errors and used for limits has none. The cache key hashes the URL as given (0.1.0 keys).
        endpoint, credentials = split_credentials(given)
        try:
            key, source = resolve_api_key(provider, explicit, endpoint, self._env)
            error = None
        except MissingAPIKeyError as exc:
            key, source, error = None, provider.key_env or "api_key=", exc
        style = wire_style(provider, endpoint)
        headers = SecretHeaders({"Content-Type": "application/json", **auth_headers(provider, style, key)})
        if credentials is not None:
            if key:
                raise ConfigurationError(
                    f"{where}['url'] or url= holds a user and password, and an API key is set too: pass one "
                    "of them (the key goes as a Bearer token)"
                )
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        secret = key or credentials
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else ""
        bucket = self._limiter.bucket(endpoint, fingerprint)
        name = provider.name if url is None else urlsplit(endpoint).netloc
        password = credentials.partition(":")[2] if credentials else ""
        return Route(provider, style, endpoint, model, name, headers, Secret(key) if key else None, source, error,
                     bucket, KeyMaker(given, model, self._cache_vars), Secret(password) if password else None)


def by_key(units: list[Unit], preparer: Preparer) -> dict[str, Unit]:
    """The units by cache key, the k-th copy (k >= 1) of an identical request under a key of its
    own: repeating a request is how a batch asks for several samples. The first copy keeps the
    key it always had."""
    distinct: dict[str, Unit] = {}
    repeats: dict[str, int] = {}  # only the keys seen more than once: a second dict of 10^5 keys weighs ~5 MB
    for unit in units:
        key = unit.cache_key
        if key in distinct:
            k = repeats.get(key, 1)
            repeats[key] = k + 1
            unit.cache_key = preparer.sample_key(unit, k)
        distinct[unit.cache_key] = unit
    return distinct


def check_prompt(payload: Mapping[str, Any], gen_type: GenType, index: int) -> None:
    """InvalidRequestError naming ``request_list[index]`` unless ``payload`` holds what ``gen_type``
    needs (messages, a prompt, an input)."""
    if gen_type == "embedding":
        text = payload.get("input")
        if not isinstance(text, str) and not (isinstance(text, list) and text and
                                              all(isinstance(p, (str, int, list)) for p in text)):
            raise InvalidRequestError(
                f"request_list[{index}] needs an 'input' (a string or a list of strings) for embeddings, "
                "such as {'input': 'some text'}"
            )
        return
    if gen_type == "text":
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) and not (isinstance(prompt, list) and prompt and
                                                all(isinstance(p, str) for p in prompt)):
            raise InvalidRequestError(f"request_list[{index}] needs a 'prompt' string for gen_type='text'")
        return
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            f"request_list[{index}] needs 'messages', a non-empty list such as [{{'role': 'user', 'content': 'Hi'}}]"
        )
    for j, message in enumerate(messages):
        if not _is_message(message):
            raise InvalidRequestError(
                f"request_list[{index}]['messages'][{j}] = {message!r} is not a message: each is a dict with a "
                "'role' string and a 'content' string (or list of content parts)"
            )


def _is_message(message: Any) -> bool:
    if type(message) is not dict and not isinstance(message, Mapping):
        return False
    content = message.get("content", _MISSING)
    return isinstance(message.get("role"), str) and (content is None or isinstance(content, (str, list)))


def check_cache_vars(cache_vars: Any) -> Mapping[str, Any] | None:
    """``cache_vars`` if it is a dict JSON can hold, else a ConfigurationError."""
    if cache_vars is None:
        return None
    if not isinstance(cache_vars, Mapping):
        raise ConfigurationError(f"cache_vars={cache_vars!r} must be a dict")
    try:
        KeyMaker("", "", cache_vars)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigurationError(
            f"cache_vars holds a value that is not JSON-serialisable ({exc}): "
            "use strings, numbers, booleans, None, lists and dicts"
        ) from None
    return cache_vars


def check_key(value: Any, name: str) -> str | None:
    """An API key as given, or a ConfigurationError that does not show it."""
    key = optional_str(value, name)
    return None if key is None else check_secret(key, name)


def optional_str(value: Any, name: str) -> str | None:
    """``value`` if it is None or a non-empty string, else a ConfigurationError naming ``name``."""
    if value is None or isinstance(value, str):
        return value
    raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}")


def hide_key(message: str, route: Route) -> str:
    """``message`` with the route's key and URL password as ``***``, wherever a server may have
    echoed them: as sent, URL-encoded (``%20``, ``+``) or inside a longer token (``{key}_x``). A
    secret shorter than 8 characters (a test key) is hidden only where it stands as a word, so
    a one-letter key leaves "Expecting" alone."""
    for secret in (route.key, route.password):
        if secret is not None:
            message = _hide(message, secret.reveal())
    return message


def _hide(message: str, secret: str) -> str:
    for form in {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}:
        if len(form) >= 8:
            message = message.replace(form, "***")
        else:
            message = re.sub(rf"(?<![\w-]){re.escape(form)}(?![\w-])", "***", message)
    return message


def holds_a_secret(content: bytes, route: Route) -> bool:
    """Whether a reply holds the route's key or URL password verbatim (8 characters or more)."""
    return any(secret is not None and len(value := secret.reveal()) >= 8 and value.encode() in content
               for secret in (route.key, route.password))
