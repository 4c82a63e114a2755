"""Browsing what a project holds: pages, a filter, one entry deleted, export (issue 16, part 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataformer_nb import AsyncLLM, CachePanel, ConfigurationError
from dataformer_nb.widget import PAGE_SIZE

from .conftest import BOTH_STORES, chat

pytestmark = BOTH_STORES


def echo_llm(cache_dir: Path) -> AsyncLLM:
    return AsyncLLM(api_provider="echo", cache_dir=cache_dir, progress=False, verbose=False)


def test_a_project_reads_a_page_at_a_time_with_a_filter(cache_dir: Path) -> None:
    llm = echo_llm(cache_dir)
    llm.generate([chat(f"question {i:02d}") for i in range(30)], project_name="p")
    first = llm.cache.entries("p", 0, 10)
    assert [e.prompt for e in first] == [f"question {i:02d}" for i in range(10)]
    assert first[0].response["choices"][0]["message"]["content"] == "Echo: question 00"
    assert first[0].projects == ("p",) and first[0].prompt_tokens > 0
    assert [e.prompt for e in llm.cache.entries("p", 25, 10)] == [f"question {i:02d}" for i in range(25, 30)]
    assert [e.prompt for e in llm.cache.entries("p", 0, 10, contains="QUESTION 1")] == [
        f"question {i:02d}" for i in range(10, 20)]
    assert [e.prompt for e in llm.cache.entries("p", 0, 10, contains="echo: question 07")] == ["question 07"]
    assert llm.cache.entries("other", 0, 10) == []


def test_no_filter_given_as_none_reads_every_response(cache_dir: Path) -> None:
    llm = echo_llm(cache_dir)
    llm.generate([chat(f"t{i}") for i in range(4)], project_name="t4")
    assert [e.prompt for e in llm.cache.entries("t4", 0, 10, None)] == ["t0", "t1", "t2", "t3"]
    assert len(list(llm.cache.iter_entries("t4", None))) == 4
    with pytest.raises(ConfigurationError, match="must be a string"):
        llm.cache.entries("t4", 0, 10, 5)  # type: ignore[arg-type]


def test_removing_one_entry_keeps_it_for_the_projects_that_share_it(cache_dir: Path) -> None:
    llm = echo_llm(cache_dir)
    llm.generate([chat("shared"), chat("mine")], project_name="p")
    llm.generate([chat("shared")], project_name="q")
    shared = llm.cache_key(chat("shared"))
    assert llm.cache.remove("p", shared) and shared in llm.cache
    assert not llm.cache.remove("p", shared)  # p no longer uses it
    assert llm.cache.remove("p", llm.cache_key(chat("mine"))) and len(llm.cache) == 1
    projects = {p.name: p.responses for p in llm.cache.projects()}
    assert projects == {"p": 0, "q": 1}
    assert llm.generate([chat("mine")], project_name="p").summary.sent == 1  # it is really gone


def test_export_and_to_pandas_give_every_entry(cache_dir: Path, tmp_path: Path) -> None:
    llm = echo_llm(cache_dir)
    llm.generate([chat(f"q{i}") for i in range(7)], project_name="p")
    assert llm.cache.export("p", tmp_path / "p.jsonl") == 7
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["prompt"] for line in lines] == [f"q{i}" for i in range(7)] and lines[0]["projects"] == ["p"]
    frame = llm.cache.to_pandas("p")
    assert list(frame["text"]) == [f"Echo: q{i}" for i in range(7)]


def test_the_panel_browses_pages_filters_deletes_and_exports(cache_dir: Path, tmp_path: Path) -> None:
    llm = echo_llm(cache_dir)
    n = PAGE_SIZE + 5
    llm.generate([chat(f"item {i:02d}") for i in range(n)], project_name="p")
    panel = CachePanel(llm)
    view = panel.browse("p")
    assert view.widget in panel.rows.children
    assert len(view.entry_rows) == PAGE_SIZE and view.previous.disabled and not view.next.disabled
    view.next.click()
    assert len(view.entry_rows) == 5 and view.position.value.startswith(f"entries {PAGE_SIZE + 1}-{n}")
    view.filter.value = "item 03"
    assert len(view.entry_rows) == 1 and view.offset == 0
    key, row = next(iter(view.entry_rows.items()))
    row.children[-1].click()  # Delete
    assert key not in llm.cache and view.entry_rows == {} and "no entries" in view.position.value
    assert panel.project_rows["p"].children[1].value == str(n - 1)  # the project's row follows
    view.export_button.click()
    assert (tmp_path / "p.jsonl").read_text().count("\n") == n - 1 and "Exported" in panel.status.value
    panel.browse("p")  # Browse again closes it
    assert view.widget not in panel.rows.children


def test_records_written_before_prompts_were_kept_browse_without_one(cache_dir: Path) -> None:
    llm = echo_llm(cache_dir)
    llm.cache.put(llm.cache_key(chat("old")), {"choices": [{"message": {"content": "x"}}]}, "p")
    entry, = llm.cache.entries("p")
    assert entry.prompt == "" and CachePanel(llm).browse("p").entry_rows
