"""The local journal of responses received while the team cache's server is away (issue 27):
spilled beyond a bound, durable, read back as untrusted input, written once the server is back.
The end-to-end kill test is in tests/test_team_cache.py."""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataformer_nb import DataformerWarning, StoreUnavailable
from dataformer_nb.cache import journal
from dataformer_nb.cache.journal import Journal, _response
from dataformer_nb.cache.records import NewResponse
from dataformer_nb.cache.writer import CacheWriter

KEY = "ab" * 32


class FlakyStore:
    """A store whose server can be away: put_many raises StoreUnavailable while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.rows: dict[str, tuple[str, NewResponse]] = {}

    def put_many(self, items: list[NewResponse], project: str) -> None:
        if self.down:
            raise StoreUnavailable("the team cache at db:5432/x cannot be written: its server went away")
        self.rows.update({item.key: (project, item) for item in items})


def key(i: int) -> str:
    return f"{i:064x}"


def response(i: int) -> bytes:
    return json.dumps({"choices": [{"message": {"content": f"answer {i}"}}], "usage": {"prompt_tokens": 3}}).encode()


def test_beyond_the_bound_replies_go_to_the_journal_and_reach_the_store_when_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "MEMORY_BOUND", 5)
    store = FlakyStore()
    writer = CacheWriter(store, "p", tmp_path)  # type: ignore[arg-type]

    async def receive(n: int) -> None:
        for i in range(n):
            await writer.save(key(i), response(i), {"prompt_tokens": 3}, prompt=f"q{i}")

    store.down = True
    asyncio.run(receive(23))
    assert len(writer.unsaved) <= 5 and not store.rows
    [spilled] = (tmp_path / "journal").glob("*.jsonl")
    assert len(spilled.read_bytes().splitlines()) + len(writer.unsaved) == 23  # durable before leaving memory
    store.down = False
    with pytest.warns(DataformerWarning, match="23 responses were kept and written when it was back"):
        writer.close()
    assert sorted(store.rows) == [key(i) for i in range(23)] and writer.error is None
    assert store.rows[key(7)][0] == "p" and store.rows[key(7)][1].data == response(7)
    assert store.rows[key(7)][1].prompt == "q7" and store.rows[key(7)][1].prompt_tokens == 3
    assert not list((tmp_path / "journal").glob("*.jsonl"))


def test_a_server_that_stays_away_leaves_everything_in_the_journal_for_the_next_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataformer_nb.cache import writer as writer_module

    monkeypatch.setattr(writer_module, "OUTAGE_WAIT", 0.0)
    store = FlakyStore()
    writer = CacheWriter(store, "p", tmp_path)  # type: ignore[arg-type]

    async def receive() -> None:
        for i in range(3):
            await writer.save(key(i), response(i), None)

    store.down = True
    asyncio.run(receive())
    with pytest.warns(DataformerWarning, match="kept in the journal .* written by the next run"):
        writer.close()
    assert writer.error is None and not store.rows  # not an error: nothing received is lost
    store.down = False
    assert Journal(tmp_path).replay(store) == 3 and sorted(store.rows) == [key(i) for i in range(3)]


def test_a_journal_another_live_writer_holds_is_left_alone_until_it_lets_go(tmp_path: Path) -> None:
    store = FlakyStore()
    other = Journal(tmp_path)
    other.append([NewResponse(KEY, b'{"a": 1}')], "p")
    assert Journal(tmp_path).replay(store) == 0 and not store.rows  # its writer is alive and holds it
    other.close()
    assert Journal(tmp_path).replay(store) == 1 and KEY in store.rows


def test_hostile_and_torn_journal_lines_are_skipped_with_one_warning(tmp_path: Path) -> None:
    good = {"key": KEY, "project": "p", "body": '{"a": 1}', "prompt_tokens": 1, "completion_tokens": 2,
            "prompt": "q", "cost": 0.5}
    bad = [{**good, "key": "../../x"}, {**good, "key": KEY.upper()}, {**good, "project": "../up"},
           {**good, "body": "[1]"}, {**good, "body": "{not json"}, {**good, "prompt_tokens": -1},
           {**good, "completion_tokens": True}, {**good, "cost": float("inf")}, {**good, "cost": "x"},
           {**good, "prompt": 5}, [good], "x"]
    lines = [json.dumps(good).encode()] + [json.dumps(b).encode() for b in bad] + [b'{"key": "ab', b"\xff\xfe"]
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "old.jsonl").write_bytes(b"\n".join(lines))  # a killed writer's, torn last line
    store = FlakyStore()
    with pytest.warns(DataformerWarning, match=f"{len(bad) + 2} lines of the journal") as warned:
        assert Journal(tmp_path).replay(store) == 1
    assert len(warned) == 1 and list(store.rows) == [KEY]


def test_a_link_or_a_fifo_in_the_journal_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "journal").mkdir()
    target = tmp_path / "victim.jsonl"
    target.write_text(json.dumps({"key": KEY, "project": "p", "body": "{}", "prompt_tokens": 0,
                                  "completion_tokens": 0, "prompt": "", "cost": None}) + "\n")
    (tmp_path / "journal" / "link.jsonl").symlink_to(target)
    os.mkfifo(tmp_path / "journal" / "fifo.jsonl")
    store = FlakyStore()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Journal(tmp_path).replay(store) == 0
    assert target.exists() and not store.rows


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.dictionaries(
    st.sampled_from(["key", "project", "body", "prompt_tokens", "completion_tokens", "prompt", "cost"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=80), st.just(KEY),
              st.just('{"a": 1}'), st.just("p"))).map(lambda d: json.dumps(d).encode())))
def test_the_line_reader_takes_any_bytes_and_gives_a_valid_response_or_none(line: bytes) -> None:
    read: Any = _response(line)
    if read is not None:
        project, item = read
        assert isinstance(project, str) and len(item.key) == 64 and isinstance(json.loads(item.data), dict)
        assert item.prompt_tokens >= 0 and item.completion_tokens >= 0
