"""What the cache promises, as a model in plain Python, and a check of the stored records
against each other that reads the database without dataformer_nb.

The model knows which prompts have a cached response, which projects use each, and each
project's tokens; it predicts what a ``generate`` sends and serves from the cache. It uses the
echo provider, whose replies (and so sizes and token counts) are deterministic.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dataformer_nb.echo import echo_reply
from dataformer_nb.limits import estimate_tokens


def request(prompt: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}]}


def items(prompts: list[str]) -> list[str]:
    """The response each slot of a batch asks for: its prompt, or ``prompt#k`` for the k-th
    repeat of a prompt in the batch (each repeat is a sample of its own)."""
    seen: Counter[str] = Counter()
    named = []
    for prompt in prompts:
        named.append(f"{prompt}#{seen[prompt]}" if seen[prompt] else prompt)
        seen[prompt] += 1
    return named


def prompt_of(item: str) -> str:
    return item.partition("#")[0]


def key_of(llm: Any, item: str) -> str:
    prompt, _, sample = item.partition("#")
    return llm.cache_key(request(prompt), sample=int(sample or 0))


def size_of(item: str) -> int:
    """The bytes the echo transport replies with, as the cache stores them."""
    return len(httpx.Response(200, json=echo_reply({**request(prompt_of(item)), "model": "echo"})).content)


def tokens_of(item: str) -> tuple[int, int]:
    prompt = prompt_of(item)
    return estimate_tokens(prompt), estimate_tokens(f"Echo: {prompt}")


@dataclass
class Tokens:
    prompt: int = 0
    completion: int = 0
    saved: int = 0


@dataclass
class CacheModel:
    users: dict[str, set[str]] = field(default_factory=dict)  # item -> projects using its response
    tokens: dict[str, Tokens] = field(default_factory=dict)  # project -> its token counts

    def generate(self, project: str, prompts: list[str]) -> tuple[int, int]:
        """Record a generate; return (slots sent, slots served from the cache) it must report."""
        asked = items(prompts)
        new = {i for i in asked if i not in self.users}
        if prompts:
            totals = self.tokens.setdefault(project, Tokens())
            for i in asked:
                prompt_tokens, completion_tokens = tokens_of(i)
                if i in new:
                    totals.prompt += prompt_tokens
                    totals.completion += completion_tokens
                else:
                    totals.saved += prompt_tokens + completion_tokens
                self.users.setdefault(i, set()).add(project)
        return len(new), len(prompts) - len(new)

    def clear(self, names: set[str]) -> tuple[int, int, int]:
        """Clear projects; return (responses deleted, bytes freed, kept because shared)."""
        deleted = freed = kept = 0
        for prompt, users in list(self.users.items()):
            if users & names:
                users -= names
                if users:
                    kept += 1
                else:
                    del self.users[prompt]
                    deleted, freed = deleted + 1, freed + size_of(prompt)
        for name in names:
            self.tokens.pop(name, None)
        return deleted, freed, kept

    def projects(self) -> dict[str, tuple[int, int, int, int, int]]:
        """name -> (responses, bytes, prompt tokens, completion tokens, saved tokens)."""
        held: dict[str, list[str]] = defaultdict(list)
        for prompt, users in self.users.items():
            for user in users:
                held[user].append(prompt)
        return {name: (len(held[name]), sum(map(size_of, held[name])), t.prompt, t.completion, t.saved)
                for name, t in self.tokens.items()}

    def held_by(self, project: str) -> list[str]:
        """The prompts of the responses ``project`` uses, a prompt once per sample held."""
        return sorted(prompt_of(i) for i, users in self.users.items() if project in users)

    def to_json(self) -> dict[str, Any]:
        return {"users": {p: sorted(u) for p, u in self.users.items()},
                "tokens": {n: [t.prompt, t.completion, t.saved] for n, t in self.tokens.items()}}


def check_consistency(directory: Path) -> dict[str, set[str]]:
    """Check the stored records agree with each other (read with sqlite3 alone); return
    response key -> projects using it."""
    with sqlite3.connect(directory / "cache.db") as db:
        rows = db.execute("SELECT key, value, tag FROM Cache").fetchall()
    values = {key: (value, tag) for key, value, tag in rows}
    meta = json.loads(values["meta"][0])
    users: dict[str, set[str]] = {}
    entries: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    total = 0
    for key, (value, tag) in values.items():
        if key.startswith("response:"):
            record = json.loads(tag)
            assert record["size"] == len(value), key
            json.loads(value)  # the response is whole JSON
            users[key[len("response:"):]] = set(record["projects"])
            assert record["projects"] and len(set(record["projects"])) == len(record["projects"]), record
            total += len(value)
            for project in record["projects"]:
                entries[project][0] += 1
                entries[project][1] += len(value)
    project_keys = {key[len("project:"):] for key in values if key.startswith("project:")}
    assert set(meta["projects"]) == project_keys, (meta["projects"], project_keys)
    assert set(entries) <= project_keys, (set(entries), project_keys)  # every user has a record
    for name in project_keys:
        record = json.loads(values["project:" + name][0])
        assert [record["entries"], record["bytes"]] == entries[name], (name, record, entries[name])
    assert (meta["responses"], meta["bytes"]) == (len(users), total), (meta, len(users), total)
    assert set(values) == {"meta"} | {"response:" + k for k in users} | {"project:" + n for n in project_keys}
    return users


def check_team_consistency(url: str, schema: str) -> dict[str, set[str]]:
    """The team store's counterpart of :func:`check_consistency`, read with psycopg alone."""
    import psycopg

    with psycopg.connect(url) as db:
        rows = db.execute(f'SELECT key, body, projects, size FROM "{schema}".responses').fetchall()
        projects = {name: (entries, size) for name, entries, size
                    in db.execute(f'SELECT name, entries, bytes FROM "{schema}".projects').fetchall()}
    users: dict[str, set[str]] = {}
    entries: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, body, names, size in rows:
        assert size == len(body), key
        json.loads(bytes(body))  # the response is whole JSON
        assert names and len(set(names)) == len(names), names
        users[key] = set(names)
        for name in names:
            entries[name][0] += 1
            entries[name][1] += len(body)
    assert set(entries) <= set(projects), (set(entries), set(projects))  # every user has a record
    for name, (count, size) in projects.items():
        assert [count, size] == entries[name], (name, count, size, entries[name])
    return users
