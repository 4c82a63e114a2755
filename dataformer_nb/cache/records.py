"""What the cache stores besides responses, and the checks of what it reads back.

A response's record (its projects, tokens, size, prompt) is its diskcache tag, JSON text; a
project's record and the meta record are JSON rows. Anything read back is checked here: a
damaged record makes its response a miss (sent again), never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .._format import human_size, plural
from .._json import dumpb, is_count, is_time, loads_or_none
from .._usage import usage_tokens
from ..errors import ConfigurationError
from ..names import FULL, normalize_project

PROMPT_KEPT = 1000  # characters of a prompt kept in its response's record, for browsing


@dataclass(frozen=True, slots=True)
class NewResponse:
    """A response to store: its key, its JSON bytes, and the tokens it cost."""

    key: str
    data: bytes
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt: str = ""
    cost: float | None = None  # dollars, when its model has a price

    @classmethod
    def with_usage(cls, key: str, data: bytes, usage: Any, prompt: str = "", cost: float | None = None
                   ) -> NewResponse:
        """From a reply's ``usage`` (OpenAI's shape); counts that are not whole numbers count 0."""
        return cls(key, data, *usage_tokens(usage), prompt[:PROMPT_KEPT], cost)


@dataclass(frozen=True)
class ProjectInfo:
    """What one project holds: ``responses`` it used, their ``bytes``, when it was last used,
    the tokens of the responses it generated, and the tokens it was served from the cache."""

    name: str
    responses: int
    bytes: int
    last_used: datetime
    prompt_tokens: int = 0
    completion_tokens: int = 0
    saved_tokens: int = 0
    cost: float | None = None  # of the responses it generated, when every one had a price
    users: tuple[str, ...] = ()  # who used it (team cache: DATAFORMER_USER or the OS user; local: none kept)


class Hits(dict[str, bytes]):
    """Cached responses by key (their JSON), and the tokens they saved: what they cost when generated."""

    saved_tokens = 0


@dataclass(frozen=True)
class Entry:
    """One response a project uses: its key, the prompt that asked for it (if recorded), the
    response, its tokens, when it was stored, and every project that uses it."""

    key: str
    prompt: str
    response: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    created: datetime
    projects: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The entry as a plain dict (for export and pandas)."""
        return {"key": self.key, "prompt": self.prompt, "response": self.response,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "created": self.created.isoformat(), "projects": list(self.projects)}


@dataclass(frozen=True)
class ClearReport:
    """What a clear removed: project names, memberships, entries deleted and bytes freed.

    ``kept_shared`` counts responses the cleared projects used that stay because another
    project still uses them.
    """

    projects: tuple[str, ...]
    responses_deleted: int
    bytes_freed: int
    kept_shared: int

    def __str__(self) -> str:
        names = ", ".join(self.projects) or "nothing"
        text = f"cleared {names}: {plural(self.responses_deleted, 'response')} deleted ({human_size(self.bytes_freed)})"
        if self.kept_shared:
            text += f", {self.kept_shared} kept because other projects use them"
        return text


def _new_response(item: NewResponse | tuple[str, Mapping[str, Any] | bytes]) -> NewResponse:
    if isinstance(item, NewResponse):
        return item
    key, response = item
    data = response if isinstance(response, bytes) else dumpb(response)
    decoded = json.loads(data) if isinstance(response, bytes) else response
    return NewResponse.with_usage(key, data, decoded.get("usage"))


def _entry(key: str, value: bytes, record: dict[str, Any]) -> Entry | None:
    """A browsed response, or None if its bytes are not a JSON object."""
    response = loads_or_none(value)
    if not isinstance(response, dict):
        return None
    return Entry(key, record.get("prompt", ""), response, record["prompt_tokens"], record["completion_tokens"],
                 datetime.fromtimestamp(record["created"], timezone.utc), tuple(record["projects"]))


def _text_or_none(response_text: Callable[[Any], str | None], response: Any) -> str | None:
    try:
        return response_text(response)
    except (KeyError, IndexError, TypeError, AttributeError):  # an embedding, or another shape
        return None


def _decode_records(texts: list[str]) -> list[Any]:
    """JSON records, decoded as one array: one json.loads per record costs three times as much.
    If that fails, or a tag held more than one record, each is decoded alone (None if it is not JSON)."""
    if not texts:
        return []
    try:
        records = json.loads("[" + ",".join(texts) + "]")
        if len(records) == len(texts):
            return records
    except (ValueError, RecursionError):
        pass
    return [loads_or_none(text) for text in texts]


def _entry_record(record: Any) -> dict[str, Any] | None:
    """A response's record as it was written (projects, size, tokens, created, prompt), or None:
    checked on every read, warm re-runs included, so only type tests."""
    if type(record) is not dict:
        return None
    projects, created, prompt = record.get("projects"), record.get("created", 0), record.get("prompt", "")
    if (type(projects) is not list or not all(type(p) is str for p in projects)
            or type(record.get("by", "")) is not str or not _finite(record.get("cost", 0.0))
            or not (is_count(record.get("size")) and is_count(record.get("prompt_tokens", 0))
                    and is_count(record.get("completion_tokens", 0)))
            or not is_time(created) or type(prompt) is not str):
        return None
    if "prompt_tokens" not in record or "completion_tokens" not in record or "created" not in record:
        return {"prompt_tokens": 0, "completion_tokens": 0, "created": 0, **record}
    return record


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and -1e15 < value < 1e15


def clear_names(projects: object) -> list[str]:
    """The canonical names ``clear_project_cache`` names (``full`` among them for everything)."""
    if isinstance(projects, str):
        items: list[object] = [projects]
    elif isinstance(projects, (list, tuple, set, frozenset)):
        items = list(projects)
    else:
        raise ConfigurationError(
            f"clear_project_cache={projects!r} must be a project name, a list of names, or 'full'"
        )
    names = []
    for item in items:
        if isinstance(item, str) and item.strip().lower() == FULL:
            names.append(FULL)
        else:
            names.append(normalize_project(item, "clear_project_cache"))
    return names


def without_entry(own: dict[str, Any], record: dict[str, Any], project: str) -> dict[str, Any]:
    """A project's record once one of its responses is removed from it: one entry and its bytes
    fewer and, if the project paid for it, its tokens and cost too (the panel follows deletes)."""
    own = {**own, "entries": max(own["entries"] - 1, 0), "bytes": max(own["bytes"] - record["size"], 0)}
    if record.get("by", record["projects"][0]) != project:
        return own  # served to this project from the cache: it paid nothing for it
    own["prompt_tokens"] = max(own["prompt_tokens"] - record["prompt_tokens"], 0)
    own["completion_tokens"] = max(own["completion_tokens"] - record["completion_tokens"], 0)
    if "cost" in record:
        own["cost"] = max(own["cost"] - record["cost"], 0.0)
    elif "by" in record:  # written since costs are kept, without one: its model had no price
        own["unpriced"] = max(own["unpriced"] - 1, 0)
    return own
