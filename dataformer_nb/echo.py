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

from .limits import estimate_tokens


class EchoTransport(httpx.AsyncBaseTransport):
    """The echo provider's transport: answers every request in-process, never over the network."""
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The echo reply to ``request`` (HTTP 400 if its body is not JSON)."""
        try:
            body = json.loads(await request.aread())
        except ValueError:
            return httpx.Response(400, json={"error": {"message": "the body is not JSON"}})
        return httpx.Response(200, json=echo_reply(body))


def echo_reply(body: dict[str, Any]) -> dict[str, Any]:
    """The echo provider's deterministic reply to ``body``."""
    if "messages" in body:
        users = [m.get("content") for m in body["messages"] if m.get("role") == "user"]
        prompt = users[-1] if users else ""
        kind = "chat"
    else:
        prompt, kind = body.get("prompt", ""), "text"
    if not isinstance(prompt, str):
        prompt = json.dumps(prompt, sort_keys=True)
    text = f"Echo: {prompt}"
    prompt_tokens, completion_tokens = estimate_tokens(prompt), estimate_tokens(text)
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
