"""The offline ``echo`` provider: an httpx transport that answers in-process.

It speaks the OpenAI chat/completions format and replies deterministically from the last
user message, so demos, dry runs and tests need no key and no network and still pass
through limits, retries and the cache.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from .images import content_text
from .limits import content_tokens, estimate_tokens


class EchoTransport(httpx.AsyncBaseTransport):
    """The echo provider's transport: answers every request in-process, never over the network."""
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The echo reply to ``request`` (HTTP 400 if its body is not JSON)."""
        try:
            body = json.loads(await request.aread())
        except ValueError:
            return httpx.Response(400, json={"error": {"message": "the body is not JSON"}})
        return httpx.Response(200, json=echo_reply(body))


def _schema_asked(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def example_of(schema: Any, root: dict[str, Any], text: str, depth: int = 0) -> Any:
    """A small instance of the JSON Schema ``schema`` (``root`` holds its ``$defs``): required
    properties only, the first of an enum or of ``anyOf``/``oneOf``, ``text`` for strings, the
    minimum for numbers, ``minItems`` examples in arrays."""
    if not isinstance(schema, dict) or depth > 20:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return example_of(target, root, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_of(schema[key][0], root, text, depth + 1)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or (kind is None and "properties" in schema):
        found = schema.get("properties")
        properties: dict[str, Any] = found if isinstance(found, dict) else {}
        names = schema.get("required")
        required = [name for name in names if name in properties] if isinstance(names, list) else []
        return {name: example_of(properties[name], root, text, depth + 1) for name in required}
    if kind == "array":
        count = schema.get("minItems", 0)
        count = count if isinstance(count, int) and 0 <= count <= 100 else 0
        return [example_of(schema.get("items"), root, text, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        low = low if isinstance(low, (int, float)) and not isinstance(low, bool) else 0
        value = low + (1 if "exclusiveMinimum" in schema else 0)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if kind == "string":
        least = schema.get("minLength", 0)
        return text if not isinstance(least, int) or len(text) >= least else text.ljust(least, ".")
    return text


def echo_reply(body: dict[str, Any]) -> dict[str, Any]:
    """The echo provider's deterministic reply to ``body``."""
    if "messages" in body:
        users = [m.get("content") for m in body["messages"] if m.get("role") == "user"]
        prompt = users[-1] if users else ""
        kind = "chat"
    else:
        prompt, kind = body.get("prompt", ""), "text"
    prompt_tokens = content_tokens(prompt)  # images as billed, not their base64
    if isinstance(prompt, list):  # text and image parts: their text, images as [image WxH]
        prompt = content_text(prompt)
    elif not isinstance(prompt, str):
        prompt = json.dumps(prompt, sort_keys=True)
    schema = _schema_asked(body)
    # With a schema asked for (response_format json_schema), a small instance of it, so that
    # structured outputs can be tried offline; every string in it echoes the prompt.
    text = f"Echo: {prompt}" if schema is None else json.dumps(example_of(schema, schema, f"Echo: {prompt}"))
    completion_tokens = estimate_tokens(text)
    choice: dict[str, Any] = (
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if kind == "chat" else {"index": 0, "text": text, "finish_reason": "stop"}
    )
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"echo-{digest}",
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": 0,
        "model": body.get("model", "echo"),
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
