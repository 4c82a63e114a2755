"""The provider registry, and how each wire format is spoken.

A provider is a base URL, the variable holding its key, a default model, and a wire
``style``: ``openai`` (chat/completions), ``anthropic`` (Messages API) or ``ollama``
(native /api/chat). Requests are written in OpenAI's shape; :func:`build_body` turns
one into what the provider expects and :func:`to_openai` turns the reply back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from .errors import ConfigurationError, MissingAPIKeyError, UnknownProviderError
from .settings import bad_secret, valid_secret

GenType = Literal["chat", "text", "embedding"]
Style = Literal["openai", "anthropic", "ollama"]

ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024
ECHO_BASE_URL = "http://echo.dataformer.invalid/v1"

_PATHS: dict[Style, dict[str, str]] = {
    "openai": {"chat": "/chat/completions", "text": "/completions", "embedding": "/embeddings"},
    "anthropic": {"chat": "/messages", "text": "/messages"},
    "ollama": {"chat": "/api/chat", "text": "/api/generate", "embedding": "/api/embed"},
}
# What an endpoint's path ends with says which wire format it speaks, whatever the provider.
_SUFFIX_STYLES: dict[str, Style] = {
    "/chat/completions": "openai", "/completions": "openai", "/embeddings": "openai",
    "/messages": "anthropic", "/api/chat": "ollama", "/api/generate": "ollama", "/api/embed": "ollama",
}
_ENDPOINT_SUFFIXES = tuple(_SUFFIX_STYLES)
EMBEDDING_SUFFIXES = ("/embeddings", "/api/embed")


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    key_env: str | None
    default_model: str
    style: Style = "openai"
    key_required: bool = True
    batch_api: bool = False  # serves a batch API dataformer_nb speaks (batchapi)
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def base_url_env(self) -> str:
        return f"{self.name.upper()}_BASE_URL"

    def base(self, env: Mapping[str, str]) -> str:
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
        Provider("echo", ECHO_BASE_URL, None, "echo", key_required=False),
    )
}


def get_provider(name: object) -> Provider:
    """The registered provider called ``name`` (case-insensitive)."""
    if not isinstance(name, str) or name.strip().lower() not in PROVIDERS:
        raise UnknownProviderError(
            f"api_provider={name!r} is not a known provider: use one of {', '.join(PROVIDERS)}, "
            "or pass url= for any OpenAI-compatible server"
        )
    return PROVIDERS[name.strip().lower()]


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
    for suffix, style in _SUFFIX_STYLES.items():
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
    if stripped.endswith(_ENDPOINT_SUFFIXES):
        return stripped
    if gen_type not in _PATHS[style]:
        raise ConfigurationError(f"gen_type={gen_type!r} is not offered by {style}-style servers: "
                                 "use an OpenAI-compatible url= (.../v1) for embeddings")
    return stripped + _PATHS[style][gen_type]


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
    headers = dict(provider.extra_headers)
    if key:
        if style == "anthropic":
            headers["x-api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
    return headers


def build_body(style: Style, gen_type: GenType, payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The JSON body the provider expects, from an OpenAI-shaped ``payload`` (a fresh dict,
    which becomes the body itself for OpenAI-style providers)."""
    if style == "anthropic":
        return _anthropic_body(gen_type, payload, model)
    if style == "ollama":
        return _ollama_body(gen_type, payload, model)
    payload["model"] = model
    return payload


def ask_for_schema(style: Style, body: dict[str, Any], name: str, json_schema: dict[str, Any]) -> None:
    """Add to ``body`` what the provider understands as "reply following this JSON Schema"
    (what the request sets itself is kept). OpenAI-compatible servers: ``response_format``
    json_schema (https://platform.openai.com/docs/guides/structured-outputs); Anthropic: a tool
    whose input is the schema, which it must call
    (https://docs.anthropic.com/en/docs/build-with-claude/tool-use, "JSON mode"); Ollama: ``format``
    set to the schema (https://ollama.com/blog/structured-outputs)."""
    if style == "anthropic":
        body.setdefault("tools", [{"name": name, "description": "Reply by calling this tool: its input is the answer.",
                                   "input_schema": json_schema}])
        body.setdefault("tool_choice", {"type": "tool", "name": name})
    elif style == "ollama":
        body.setdefault("format", json_schema)
    else:
        body.setdefault("response_format",
                        {"type": "json_schema", "json_schema": {"name": name, "schema": json_schema}})


def embedding_gen_type(url: str | None) -> bool:
    """Whether ``url`` is an embeddings endpoint (``/embeddings``, Ollama's ``/api/embed``)."""
    return url is not None and urlsplit(url).path.rstrip("/").endswith(EMBEDDING_SUFFIXES)


def _anthropic_body(gen_type: GenType, payload: Mapping[str, Any], model: str) -> dict[str, Any]:
    body = {k: v for k, v in payload.items() if k not in ("messages", "prompt", "stop")}
    if gen_type == "text":
        messages = [{"role": "user", "content": payload["prompt"]}]
    else:
        messages = [m for m in payload["messages"] if m.get("role") != "system"]
        system = [m["content"] for m in payload["messages"] if m.get("role") == "system"]
        if system and "system" not in body:
            body["system"] = "\n\n".join(system) if all(isinstance(s, str) for s in system) else system[0]
    if "stop" in payload and "stop_sequences" not in body:
        stop = payload["stop"]
        body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    body.setdefault("max_tokens", ANTHROPIC_DEFAULT_MAX_TOKENS)
    return {**body, "model": model, "messages": messages}


_OLLAMA_OPTIONS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed", "stop": "stop",
    "max_tokens": "num_predict", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def _ollama_body(gen_type: GenType, payload: Mapping[str, Any], model: str) -> dict[str, Any]:
    options = dict(payload.get("options") or {})
    body: dict[str, Any] = {}
    for key, value in payload.items():
        if key in _OLLAMA_OPTIONS:
            options.setdefault(_OLLAMA_OPTIONS[key], value)
        elif key != "options":
            body[key] = value
    if options:
        body["options"] = options
    return {**body, "model": model, "stream": False}


# What reading a reply that is not of its promised shape raises (to_openai, check_reply, the JSON
# decoder on deep nesting): such a reply is a malformed one, online or in a batch's results.
UNREADABLE_REPLY = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)


def to_openai(style: Style, gen_type: GenType, data: Any) -> dict[str, Any]:
    """The reply in OpenAI's chat.completion (or text_completion) shape.

    Raises ValueError when the reply is not of the shape the provider promises, which
    the caller treats like malformed JSON.
    """
    if not isinstance(data, dict):
        raise ValueError("the reply is not a JSON object")
    if style == "anthropic":
        text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
        tool_inputs = [b.get("input") for b in data["content"] if b.get("type") == "tool_use"]
        if not text and tool_inputs:  # a structured output, given as the input of the tool it was asked to call
            text = json.dumps(tool_inputs[0], ensure_ascii=False)
        usage = data.get("usage") or {}
        finish = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
        stop_reason = data.get("stop_reason")
        return _openai_shape(gen_type, data.get("id", ""), data.get("model", ""), text,
                             finish.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else stop_reason,
                             usage.get("input_tokens", 0), usage.get("output_tokens", 0))
    if style == "ollama" and gen_type == "embedding":
        vectors = data["embeddings"]
        tokens = data.get("prompt_eval_count", 0)
        return {"object": "list", "model": data.get("model", ""),
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    if style == "ollama":
        text = data["message"]["content"] if gen_type == "chat" else data["response"]
        return _openai_shape(gen_type, "", data.get("model", ""), text, data.get("done_reason", "stop"),
                             data.get("prompt_eval_count", 0), data.get("eval_count", 0))
    return data  # OpenAI's shape already: check_reply checks it


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


def _openai_shape(gen_type: GenType, id_: str, model: str, text: str, finish: str | None,
                  prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ValueError("the reply holds no text")
    choice: dict[str, Any] = (
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        if gen_type == "chat" else {"index": 0, "text": text, "finish_reason": finish}
    )
    return {
        "id": id_,
        "object": "chat.completion" if gen_type == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def response_text(response: Mapping[str, Any] | None) -> str | None:
    """The text of the first choice of an OpenAI-shaped response."""
    if not response or "choices" not in response:  # failed, or an embedding
        return None
    choice = response["choices"][0]
    if "message" in choice:
        return choice["message"].get("content")
    return choice.get("text")
