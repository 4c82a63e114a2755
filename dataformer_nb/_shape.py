"""Reading OpenAI's response shape, the one every reply is turned into (see ``.wire``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def response_text(response: Mapping[str, Any] | None) -> str | None:
    """The text of the first choice of an OpenAI-shaped response."""
    if not response or "choices" not in response:  # failed, or an embedding
        return None
    choice = response["choices"][0]
    if "message" in choice:
        return choice["message"].get("content")
    return choice.get("text")
