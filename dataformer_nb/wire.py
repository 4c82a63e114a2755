"""Wire formats: how a request is written for a server, and how its reply reads back.

Requests are written in OpenAI's shape, and every reply is turned into OpenAI's shape, so the
rest of the library knows one shape. A ``WireFormat`` does both for one format, online and
in its batch API: the endpoint paths, the key's header, the body, the way to ask for a JSON
Schema, the reply, and the batch protocol. The built-in ones are OpenAI's (which most servers
speak: vLLM, llama.cpp, Together, Groq, ...), Anthropic's Messages API and Ollama's native API.

A new format is a subclass registered with ``dataformer_nb.register_provider`` (or
``register_wire_format``); nothing inside the package changes::

    class MyWire(WireFormat):
        name = "mywire"
        paths = MappingProxyType({"chat": "/generate"})
        def build_body(self, gen_type, payload, model): ...
        def to_openai(self, gen_type, data): ...
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .errors import BatchError, ConfigurationError

if TYPE_CHECKING:
    import httpx

    from .batchapi import BatchAPI

GenType = Literal["chat", "text", "embedding"]

ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024

# What reading a reply that is not of its promised shape raises (to_openai, check_reply, the JSON
# decoder on deep nesting): such a reply is a malformed one, online or in a batch's results.
UNREADABLE_REPLY = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)


class WireFormat:
    """One wire format. Subclass it, set ``name`` and ``paths``, and override what differs
    from OpenAI's format, which the base class speaks."""

    name: ClassVar[str] = "openai"
    #: The endpoint's path, after the base URL, for each kind of request the format offers.
    paths: ClassVar[Mapping[str, str]] = MappingProxyType({"chat": "/chat/completions", "text": "/completions",
                                                           "embedding": "/embeddings"})
    #: The batch protocol its batch API speaks (see ``dataformer_nb.batchapi``), if it has one.
    batch_protocol: ClassVar[str | None] = "openai"

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers that carry ``key``."""
        return {"Authorization": f"Bearer {key}"}

    def build_body(self, gen_type: GenType, payload: dict[str, Any], model: str) -> dict[str, Any]:
        """The JSON body to send, from an OpenAI-shaped ``payload`` (a fresh dict the method may
        keep as the body)."""
        payload["model"] = model
        return payload

    def ask_for_schema(self, body: dict[str, Any], name: str, json_schema: dict[str, Any]) -> None:
        """Add to ``body`` what the server understands as "reply following this JSON Schema",
        keeping what the request sets itself. OpenAI's: ``response_format`` json_schema
        (https://platform.openai.com/docs/guides/structured-outputs)."""
        body.setdefault("response_format",
                        {"type": "json_schema", "json_schema": {"name": name, "schema": json_schema}})

    def to_openai(self, gen_type: GenType, data: Any) -> dict[str, Any]:
        """The reply in OpenAI's shape; ValueError (or any of ``UNREADABLE_REPLY``) if it is
        not of the shape the format promises, which the caller treats as a malformed reply."""
        if not isinstance(data, dict):
            raise ValueError("the reply is not a JSON object")
        return data  # OpenAI's shape already: check_reply checks it

    def batch_api(self, dialect: str, base: str, gen_type: GenType, client: httpx.AsyncClient,
                  headers: Mapping[str, str], name: str, redact: Callable[[str], str]) -> BatchAPI:
        """The batch service at ``base`` (the endpoint without ``paths``' part), in the
        provider's ``dialect`` of the format's batch protocol (OpenAI's: ``openai``, ``together``,
        ``groq``)."""
        from .batchapi import GroqBatches, OpenAIBatches, TogetherBatches

        kind = {"together": TogetherBatches, "groq": GroqBatches}.get(dialect, OpenAIBatches)
        return kind(client, base, "/v1" + self.paths[gen_type], headers, name, redact)


class AnthropicWire(WireFormat):
    """Anthropic's Messages API (https://docs.anthropic.com/en/api/messages)."""

    name = "anthropic"
    paths = MappingProxyType({"chat": "/messages", "text": "/messages"})
    batch_protocol = "anthropic"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def build_body(self, gen_type: GenType, payload: dict[str, Any], model: str) -> dict[str, Any]:
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

    def ask_for_schema(self, body: dict[str, Any], name: str, json_schema: dict[str, Any]) -> None:
        """A tool whose input is the schema, which it must call
        (https://docs.anthropic.com/en/docs/build-with-claude/tool-use, "JSON mode")."""
        body.setdefault("tools", [{"name": name, "description": "Reply by calling this tool: its input is the answer.",
                                   "input_schema": json_schema}])
        body.setdefault("tool_choice", {"type": "tool", "name": name})

    def to_openai(self, gen_type: GenType, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("the reply is not a JSON object")
        text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
        tool_inputs = [b.get("input") for b in data["content"] if b.get("type") == "tool_use"]
        if not text and tool_inputs:  # a structured output, given as the input of the tool it was asked to call
            text = json.dumps(tool_inputs[0], ensure_ascii=False)
        usage = data.get("usage") or {}
        finish = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
        stop_reason = data.get("stop_reason")
        return openai_shape(gen_type, data.get("id", ""), data.get("model", ""), text,
                            finish.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else stop_reason,
                            usage.get("input_tokens", 0), usage.get("output_tokens", 0))

    def batch_api(self, dialect: str, base: str, gen_type: GenType, client: httpx.AsyncClient,
                  headers: Mapping[str, str], name: str, redact: Callable[[str], str]) -> BatchAPI:
        from .batchapi import AnthropicBatches

        return AnthropicBatches(client, base, "", headers, name, redact)


_OLLAMA_OPTIONS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed", "stop": "stop",
    "max_tokens": "num_predict", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


class OllamaWire(WireFormat):
    """Ollama's native API (https://github.com/ollama/ollama/blob/main/docs/api.md); its ``/v1``
    is OpenAI's format."""

    name = "ollama"
    paths = MappingProxyType({"chat": "/api/chat", "text": "/api/generate", "embedding": "/api/embed"})
    batch_protocol = None

    def build_body(self, gen_type: GenType, payload: dict[str, Any], model: str) -> dict[str, Any]:
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

    def ask_for_schema(self, body: dict[str, Any], name: str, json_schema: dict[str, Any]) -> None:
        """``format`` set to the schema (https://ollama.com/blog/structured-outputs)."""
        body.setdefault("format", json_schema)

    def to_openai(self, gen_type: GenType, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("the reply is not a JSON object")
        if gen_type == "embedding":
            vectors = data["embeddings"]
            tokens = data.get("prompt_eval_count", 0)
            return {"object": "list", "model": data.get("model", ""),
                    "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        text = data["message"]["content"] if gen_type == "chat" else data["response"]
        return openai_shape(gen_type, "", data.get("model", ""), text, data.get("done_reason", "stop"),
                            data.get("prompt_eval_count", 0), data.get("eval_count", 0))

    def batch_api(self, dialect: str, base: str, gen_type: GenType, client: httpx.AsyncClient,
                  headers: Mapping[str, str], name: str, redact: Callable[[str], str]) -> BatchAPI:
        raise BatchError(f"{name}: Ollama's native API has no batch API")


WIRE_FORMATS: dict[str, WireFormat] = {w.name: w for w in (WireFormat(), AnthropicWire(), OllamaWire())}


def register_wire_format(wire: WireFormat, *, replace: bool = False) -> None:
    """Make ``wire`` the format called ``wire.name``; ConfigurationError if a different one has
    that name already, unless ``replace``."""
    if not isinstance(wire, WireFormat):
        raise ConfigurationError(f"wire={wire!r} is not a WireFormat: pass an instance of a WireFormat subclass")
    if not isinstance(wire.name, str) or not wire.name:
        raise ConfigurationError(f"{type(wire).__name__}.name={wire.name!r}: give the format a name")
    known = WIRE_FORMATS.get(wire.name)
    if known is not None and type(known) is not type(wire) and not replace:
        raise ConfigurationError(f"a wire format called {wire.name!r} is registered already "
                                 f"({type(known).__name__}): pick another name, or pass replace=True")
    for gen_type in wire.paths:
        if gen_type not in ("chat", "text", "embedding"):
            raise ConfigurationError(f"{type(wire).__name__}.paths has {gen_type!r}: the kinds are chat, text, "
                                     "embedding")
    WIRE_FORMATS[wire.name] = wire


def wire_format(name: str) -> WireFormat:
    """The registered format called ``name``."""
    try:
        return WIRE_FORMATS[name]
    except KeyError:
        raise ConfigurationError(f"no wire format called {name!r}: register it first "
                                 f"(known: {', '.join(WIRE_FORMATS)})") from None


def endpoint_suffixes() -> dict[str, str]:
    """What an endpoint's path ends with, and the format it names (the longest suffixes first:
    ``/chat/completions`` before ``/completions``)."""
    suffixes = {path: wire.name for wire in WIRE_FORMATS.values() for path in wire.paths.values()}
    return dict(sorted(suffixes.items(), key=lambda item: -len(item[0])))


def openai_shape(gen_type: GenType, id_: str, model: str, text: str, finish: str | None,
                 prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A chat.completion (or text_completion) holding ``text``, for formats that reply otherwise."""
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
