"""The provider registry: where each provider is, its key, its default model, its wire format.

A provider is a base URL, the variable holding its key, a default model, and the name of its
wire format (``dataformer_nb.wire``): ``openai`` (chat/completions, which most servers speak),
``anthropic`` (Messages API) or ``ollama`` (native /api/chat), or one registered from outside.
Requests are written in OpenAI's shape; ``build_body`` turns one into what the provider
expects and ``to_openai`` turns the reply back, each through the format.

Providers are added with ``register_provider``, or by a package that declares an entry
point in the group ``dataformer_nb.providers`` naming a function that registers them (called
once, the first time a provider is looked up by a name not known yet, or all are listed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx

from ._shape import response_text
from .echo import EchoTransport
from .errors import BatchError, ConfigurationError, DataformerWarning, MissingAPIKeyError, UnknownProviderError
from .settings import bad_secret, valid_secret
from .wire import (
    ANTHROPIC_VERSION,
    UNREADABLE_REPLY,
    GenType,
    WireFormat,
    endpoint_suffixes,
    openai_shape,
    register_wire_format,
    wire_format,
)

if TYPE_CHECKING:
    from .batchapi import BatchAPI

__all__ = ["ANTHROPIC_VERSION", "PROVIDERS", "UNREADABLE_REPLY", "GenType", "Provider", "Style", "get_provider",
           "openai_shape", "register_provider", "response_text"]

Style = str  # the name of a registered wire format (dataformer_nb.wire)

ECHO_BASE_URL = "http://echo.dataformer.invalid/v1"
ENTRY_POINT_GROUP = "dataformer_nb.providers"
EMBEDDING_SUFFIXES = ("/embeddings", "/api/embed")


@dataclass(frozen=True)
class Provider:
    """A provider: its ``name`` (what ``api_provider=`` takes), ``base_url``, the variable holding
    its key (``key_env``; None if it takes none), its ``default_model``, the name of its wire
    format (``style``), whether a key is required, whether it serves its format's batch API,
    and headers it wants on every request."""

    name: str
    base_url: str
    key_env: str | None
    default_model: str
    style: Style = "openai"  # the name of its wire format
    key_required: bool = True
    batch_api: bool = False  # serves its wire format's batch API (see WireFormat.batch_api)
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # A transport of its own, in-process (the echo provider's): requests to its host never reach
    # the network, whichever provider names that host.
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False, compare=False)

    @property
    def base_url_env(self) -> str:
        """The variable that overrides its base URL: ``<NAME>_BASE_URL``."""
        return f"{self.name.upper()}_BASE_URL"

    def base(self, env: Mapping[str, str]) -> str:
        """Its base URL: ``<NAME>_BASE_URL`` in ``env`` if set, else ``base_url``."""
        return env.get(self.base_url_env) or self.base_url


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "gpt-4o-mini", batch_api=True),
        Provider("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY",
                 "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", batch_api=True),
        Provider("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "llama-3.1-8b-instant", batch_api=True),
        Provider("deepinfra", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY",
                 "meta-llama/Meta-Llama-3.1-8B-Instruct"),
        Provider("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "openai/gpt-4o-mini"),
        Provider("monsterapi", "https://llm.monsterapi.ai/v1", "MONSTER_API_KEY", "google/gemma-2-9b-it"),
        Provider("anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY", "claude-3-5-haiku-latest",
                 style="anthropic", batch_api=True, extra_headers={"anthropic-version": ANTHROPIC_VERSION}),
        Provider("ollama", "http://localhost:11434", "OLLAMA_API_KEY", "llama3.1", style="ollama",
                 key_required=False),
        Provider("echo", ECHO_BASE_URL, None, "echo", key_required=False, transport=EchoTransport()),
    )
}


def register_provider(provider: Provider, *, wire: WireFormat | None = None, replace: bool = False) -> None:
    """Make ``provider`` known by its name (lower case), with ``wire`` registered as its format if
    given: ``AsyncLLM(api_provider=provider.name)`` then works online, and with ``batch=True`` if
    ``provider.batch_api`` and the format has a batch API. ConfigurationError if the name is taken
    (unless ``replace``) or its format is unknown."""
    if not isinstance(provider, Provider):
        raise ConfigurationError(f"provider={provider!r} is not a Provider: pass dataformer_nb.Provider(...)")
    name = provider.name.strip().lower() if isinstance(provider.name, str) else ""
    if not name or name != provider.name:
        raise ConfigurationError(f"Provider name {provider.name!r}: use a lower-case name without spaces around it")
    if name in PROVIDERS and PROVIDERS[name] != provider and not replace:
        raise ConfigurationError(f"a provider called {name!r} is registered already: pick another name, "
                                 "or pass replace=True")
    if wire is not None:
        register_wire_format(wire, replace=replace)
        if wire.name != provider.style:
            raise ConfigurationError(f"Provider {name!r} has style={provider.style!r} but its wire format is "
                                     f"called {wire.name!r}: make them the same")
    wire_format(provider.style)  # raises, naming the formats known
    check_url(provider.base_url, f"Provider {name!r} base_url")
    PROVIDERS[name] = provider


_plugins_loaded = False


def _load_plugins() -> None:
    """Call, once, each function named by an entry point of ``dataformer_nb.providers``; one that
    fails is skipped with a warning naming it."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register: Callable[[], Any] = point.load()
            register()
        except Exception as exc:  # a third party's code: it fails itself, not the library
            warnings.warn(f"the provider plugin {point.name!r} ({point.value}) failed to register: "
                          f"{type(exc).__name__}: {exc}; its providers are not available",
                          DataformerWarning, stacklevel=2)


def known_providers() -> dict[str, Provider]:
    """Every registered provider, plugins' included, by name."""
    _load_plugins()
    return dict(PROVIDERS)


def get_provider(name: object) -> Provider:
    """The registered provider called ``name`` (case-insensitive)."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key is not None and key not in PROVIDERS:
        _load_plugins()
    if key is None or key not in PROVIDERS:
        raise UnknownProviderError(
            f"api_provider={name!r} is not a known provider: use one of {', '.join(PROVIDERS)}, "
            "or pass url= for any OpenAI-compatible server"
        )
    return PROVIDERS[key]


def own_transport(url: httpx.URL) -> httpx.AsyncBaseTransport | None:
    """The in-process transport of the provider whose host ``url`` names, if it brings one."""
    for provider in PROVIDERS.values():
        if provider.transport is not None and httpx.URL(provider.base_url).host == url.host:
            return provider.transport
    return None


def provider_for_url(url: str | None, default: str) -> str:
    """The provider whose host ``url`` names (``api.groq.com`` is groq), else ``default``: any
    other server is taken as OpenAI-compatible (vLLM, llama.cpp, LM Studio)."""
    if url:
        host = urlsplit(url).netloc.rpartition("@")[2]
        for provider in PROVIDERS.values():
            if urlsplit(provider.base_url).netloc == host:
                return provider.name
    return default


def check_url(url: object, source: str = "url") -> str:
    """``url`` if it is an http(s) URL with a host, else a ConfigurationError naming ``source``."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if not isinstance(url, str) or parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{source}={url!r} is not an http(s) URL: pass e.g. url='http://localhost:8000/v1'"
        )
    if any(not c.isprintable() or c.isspace() for c in url):
        raise ConfigurationError(f"{source}={url!r} contains a space or control character: remove it")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise ConfigurationError(f"{source}={url!r} has an invalid port ({exc}): use a port from 1 to 65535") \
            from None
    return url


def split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@`` part, and that part decoded (None if there is none)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=host).geturl(), f"{unquote(user)}:{unquote(password)}"


def hide_credentials(url: str) -> str:
    """``url`` for display: a password in it shown as ``***``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return parts._replace(netloc=f"{user}{':***' if colon else ''}@{host}").geturl()


def wire_style(provider: Provider, url: str | None) -> Style:
    """The wire format spoken at ``url``: the URL decides, then the provider. An endpoint's path
    names its format (``/v1/chat/completions`` is OpenAI's, ``/api/chat`` Ollama's own), and a
    ``/v1`` base URL is OpenAI-compatible whatever the provider (Ollama's, vLLM's, LM Studio's)."""
    if url is None:
        return provider.style
    path = urlsplit(url).path.rstrip("/")
    for suffix, style in endpoint_suffixes().items():
        if path.endswith(suffix):
            return style
    if provider.style == "ollama" and "/v1" in path:
        return "openai"
    return provider.style


def endpoint_url(provider: Provider, gen_type: GenType, url: str | None, env: Mapping[str, str]) -> str:
    """The URL a request is POSTed to.

    ``url`` may be a full endpoint (``.../v1/chat/completions``), kept as is, or a base
    URL (``.../v1``), to which the endpoint for ``gen_type`` is appended.
    """
    if url is None:
        url = check_url(provider.base(env), provider.base_url_env)
    style = wire_style(provider, url)
    if "?" in url or "#" in url:  # the path goes before the query (api-version=...), not after it
        parts = urlsplit(url)
        return parts._replace(path=_endpoint_path(parts.path, style, gen_type)).geturl()
    return _endpoint_path(url, style, gen_type)  # as 0.1.0 did: the URL is part of every cache key


def _endpoint_path(base: str, style: Style, gen_type: GenType) -> str:
    stripped = base.rstrip("/")
    if stripped.endswith(tuple(endpoint_suffixes())):
        return stripped
    paths = wire_format(style).paths
    if gen_type not in paths:
        raise ConfigurationError(f"gen_type={gen_type!r} is not offered by {style}-style servers: "
                                 "use an OpenAI-compatible url= (.../v1) for embeddings")
    return stripped + paths[gen_type]


def resolve_api_key(
    provider: Provider, explicit: str | None, endpoint: str, env: Mapping[str, str]
) -> tuple[str | None, str]:
    """The key to send to ``endpoint``, and where it came from (for error messages).

    The key variable is only read for the provider's own hosts (its default base URL or
    ``<PROVIDER>_BASE_URL``): a server named with ``url=`` gets a key only through
    ``api_key=``, so a provider's key never leaks to a server it was not meant for.
    """
    if explicit is not None:
        return explicit, "the api_key argument"
    source = provider.key_env or "api_key="
    own_hosts = {urlsplit(provider.base_url).netloc, urlsplit(provider.base(env)).netloc}
    if urlsplit(endpoint).netloc not in own_hosts:
        return None, source
    # Checked as api_key= is (a newline in a header fails deep in the transport, showing it), and
    # before it is bound to a local: a verbose traceback shows the locals of this frame.
    if provider.key_env and env.get(provider.key_env) and not valid_secret(env[provider.key_env]):
        raise bad_secret(f"{provider.key_env} (in .env or the environment)")
    key = env.get(provider.key_env) if provider.key_env else None
    if not key and provider.key_required:
        raise MissingAPIKeyError(
            f"{provider.key_env} is not set: put it in .env (or the environment) or pass api_key="
        )
    return key or None, source


def auth_headers(provider: Provider, style: Style, key: str | None) -> dict[str, str]:
    """The provider's own headers, and those carrying ``key`` as its wire format sends it."""
    headers = dict(provider.extra_headers)
    if key:
        headers.update(wire_format(style).auth_headers(key))
    return headers


def build_body(style: Style, gen_type: GenType, payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The JSON body the provider expects, from an OpenAI-shaped ``payload`` (a fresh dict,
    which becomes the body itself for OpenAI-style providers)."""
    return wire_format(style).build_body(gen_type, payload, model)


def ask_for_schema(style: Style, body: dict[str, Any], name: str, json_schema: dict[str, Any]) -> None:
    """Add to ``body`` what the provider understands as "reply following this JSON Schema"
    (``WireFormat.ask_for_schema``); what the request sets itself is kept."""
    wire_format(style).ask_for_schema(body, name, json_schema)


def embedding_gen_type(url: str | None) -> bool:
    """Whether ``url`` is an embeddings endpoint (``/embeddings``, Ollama's ``/api/embed``)."""
    return url is not None and urlsplit(url).path.rstrip("/").endswith(EMBEDDING_SUFFIXES)


def to_openai(style: Style, gen_type: GenType, data: Any) -> dict[str, Any]:
    """The reply in OpenAI's chat.completion (or text_completion) shape.

    Raises ValueError when the reply is not of the shape the provider promises, which
    the caller treats like malformed JSON.
    """
    return wire_format(style).to_openai(gen_type, data)


def open_batch_api(provider: Provider, style: Style, endpoint: str, gen_type: GenType, client: httpx.AsyncClient,
                   headers: Mapping[str, str], name: str, redact: Callable[[str], str]) -> BatchAPI:
    """The batch service behind ``endpoint``, or a BatchError naming the providers that have one."""
    wire = wire_format(style)
    suffix = wire.paths.get(gen_type, "")
    path = endpoint.split("?")[0].rstrip("/")
    if not provider.batch_api or wire.batch_protocol is None or not suffix or not path.endswith(suffix):
        raise BatchError(
            f"{name} has no batch API that dataformer_nb speaks (endpoint {endpoint}): batch=True works with "
            f"{', '.join(p.name for p in PROVIDERS.values() if p.batch_api)}, and with OpenAI-compatible servers "
            "(url=) that serve /v1/files and /v1/batches; leave batch=True out to send the requests now"
        )
    return wire.batch_api(provider.name, path[:-len(suffix)], gen_type, client, headers, name, redact)


def wire_for_batch_protocol(protocol: str) -> Style:
    """The wire format whose batch API speaks ``protocol`` (a batch record's), OpenAI's if none."""
    from .wire import WIRE_FORMATS

    return next((w.name for w in WIRE_FORMATS.values() if w.batch_protocol == protocol), "openai")


def check_reply(gen_type: GenType, response: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``response`` has the shape its endpoint promises: a reply
    cached with another shape would break ``.text`` and every re-run that hits it."""
    if gen_type == "embedding":
        _check_embeddings(response)
        return
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("the reply has no 'choices'")
    for choice in choices:
        if not isinstance(choice, dict):
            raise ValueError(f"a choice is {type(choice).__name__}, not an object")
        if gen_type == "chat":
            message = choice.get("message")
            if not isinstance(message, dict) or not isinstance(message.get("content"), (str, type(None))):
                raise ValueError("a choice has no 'message' whose 'content' is text or null")
        elif not isinstance(choice.get("text"), str):
            raise ValueError("a choice has no 'text'")
    usage = response.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise ValueError(f"'usage' is {type(usage).__name__}, not an object")
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if name in usage and not (type(usage[name]) is int and usage[name] >= 0):
                raise ValueError(f"usage.{name} = {usage[name]!r} is not a whole number")


def _check_embeddings(response: Mapping[str, Any]) -> None:
    data = response.get("data")
    if not isinstance(data, list) or not data:
        raise ValueError("the reply has no 'data'")
    for item in data:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vector, (list, str)):  # a list of floats, or base64 (encoding_format="base64")
            raise ValueError("an item of 'data' has no 'embedding'")
