"""The one reader of a provider's reply, online and in a batch's results alike.

A reply is the server's word, whatever its shape: it becomes a response in OpenAI's shape (and,
with a schema, the validated output), or a ``ReplyProblem`` that fails only its own request
and is never cached. The online sender retries a problem; a batch's line fails its request, and a
re-run submits it again; a cached reply that no longer validates fails its request.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._format import one_line
from .providers import UNREADABLE_REPLY, GenType, Style, check_reply, response_text, to_openai
from .schema import OutputSchema


class ReadReply(NamedTuple):
    """A reply read: the response in OpenAI's shape, and its validated output (with a schema)."""

    response: dict[str, Any]
    parsed: Any = None


class ReplyProblem(NamedTuple):
    """Why a reply cannot be used: ``cause`` for the summaries (``malformed json``, ``invalid
    output``), ``message`` for the user."""

    cause: str
    message: str
    output: str | None = None  # "invalid output": the text that failed (what a re-ask shows the model)
    usage: Any = None  # "invalid output": what that reply cost


def read_reply(style: Style, gen_type: GenType, data: Any, schema: OutputSchema | None) -> ReadReply | ReplyProblem:
    """``data`` (the decoded JSON of a reply in its provider's ``style``) read and checked."""
    try:
        response = to_openai(style, gen_type, data)
        check_reply(gen_type, response)
    except UNREADABLE_REPLY as exc:
        return ReplyProblem("malformed json", f"unreadable reply ({type(exc).__name__}: {exc})")
    if schema is None:
        return ReadReply(response)
    parsed = parse_output(schema, response)
    return parsed if isinstance(parsed, ReplyProblem) else ReadReply(response, parsed)


def parse_output(schema: OutputSchema, response: dict[str, Any]) -> Any:
    """The output of an OpenAI-shaped ``response`` validated by ``schema``, or the ReplyProblem
    saying why it does not follow it."""
    text = response_text(response)
    try:
        return schema.parse(text)
    except ValueError as exc:
        return ReplyProblem("invalid output", f"the reply does not follow schema {schema.name}: {one_line(exc)}",
                            text if isinstance(text, str) else None, response.get("usage"))
