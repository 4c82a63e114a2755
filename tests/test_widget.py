"""CachePanel driven through its widget model, no browser."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3

import pytest

from dataformer_nb import CachePanel, ResponseCache
from dataformer_nb._format import human_size
from dataformer_nb.cache import NewResponse

from .conftest import BOTH_STORES, TOGETHER_KEY, chat

pytestmark = BOTH_STORES


def buttons(row) -> dict[str, object]:
    return {b.description: b for b in row.children[-1].children}


def fill(make_llm):
    llm = make_llm()
    llm.generate([chat("shared"), chat("only-a")], project_name="a")
    llm.generate([chat("shared"), chat("only-b")], project_name="b")
    return llm


def test_rows_match_the_cache(server, make_llm) -> None:
    llm = fill(make_llm)
    panel = CachePanel(llm)
    assert set(panel.project_rows) == {"a", "b"}
    cells = [c.value for c in panel.project_rows["a"].children[:3]]
    assert cells[:2] == ["a", "2"] and cells[2].endswith("B")
    assert "3 responses" in panel.header.value
    assert TOGETHER_KEY not in repr(panel.widget.get_state()) + panel.header.value


def test_delete_confirm_removes_the_project_and_keeps_shared_entries(server, make_llm) -> None:
    llm = fill(make_llm)
    panel = llm.cache_panel()
    buttons(panel.project_rows["a"])["Delete"].click()
    assert set(buttons(panel.project_rows["a"])) == {"Confirm", "Cancel"}
    buttons(panel.project_rows["a"])["Confirm"].click()

    assert set(panel.project_rows) == {"b"}
    assert [p.name for p in llm.cache.projects()] == ["b"]
    assert llm.cache_key(chat("only-a")) not in llm.cache and llm.cache_key(chat("shared")) in llm.cache
    assert "Freed 1 response (" in panel.status.value and "kept 1 still used by other projects" in panel.status.value


def test_cancel_changes_nothing(server, make_llm) -> None:
    llm = fill(make_llm)
    panel = CachePanel(llm)
    buttons(panel.project_rows["b"])["Delete"].click()
    buttons(panel.project_rows["b"])["Cancel"].click()
    assert set(buttons(panel.project_rows["b"])) == {"Browse", "Delete"}
    assert len(llm.cache) == 3 and set(panel.project_rows) == {"a", "b"}


def test_delete_all_empties_the_cache(server, make_llm) -> None:
    llm = fill(make_llm)
    panel = CachePanel(cache_dir=llm.cache_dir)
    panel.delete_all_button.click()
    {b.description: b for b in panel.header_actions.children}["Confirm"].click()
    assert len(ResponseCache(llm.cache_dir)) == 0 and panel.project_rows == {}
    assert "no projects yet" in panel.rows.children[0].value
    assert "Freed 3 responses" in panel.status.value


def test_a_generate_adds_a_row_without_refresh(server, make_llm) -> None:
    llm = fill(make_llm)
    panel = CachePanel(cache_dir=llm.cache_dir)  # a different ResponseCache on the same directory
    make_llm().generate([chat("new")], project_name="c")
    assert set(panel.project_rows) == {"a", "b", "c"}


@pytest.mark.local_store
def test_refresh_sees_changes_from_elsewhere(server, make_llm) -> None:
    llm = fill(make_llm)
    panel = CachePanel(llm)
    ResponseCache(llm.cache_dir).put("k", {"choices": []}, "outside")
    assert "outside" not in panel.project_rows
    panel.refresh_button.click()
    assert "outside" in panel.project_rows


@pytest.mark.local_store
def test_a_vanished_cache_directory_shows_an_error_line(server, make_llm) -> None:
    llm = fill(make_llm)
    panel = CachePanel(llm)
    shutil.rmtree(llm.cache.directory)
    panel.refresh_button.click()
    assert "Error" in panel.status.value and "no longer exists" in panel.status.value
    buttons(panel.project_rows["a"])["Delete"].click()
    buttons(panel.project_rows["a"])["Confirm"].click()
    assert "no longer exists" in panel.status.value
    assert not any(b.disabled for b in panel.header_actions.children)


def test_an_empty_cache_shows_a_sentence(tmp_path) -> None:
    panel = CachePanel(cache_dir=tmp_path / "empty")
    assert "no projects yet" in panel.rows.children[0].value and panel.delete_all_button.disabled


def _columns(row) -> list[str]:
    return re.findall(r"min\([^)]*\)|\S+", row.layout.grid_template_columns)


def test_the_table_fits_its_content_with_numbers_to_the_right(tmp_path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put_many([NewResponse("k1", b'{"a": 1}', 24_000, 16_000, cost=1.25)], "a-project-with-a-long-name")
    cache.put_many([NewResponse("k2", b'{"a": 2}', 5, 7, cost=0.5)], "b")
    panel = CachePanel(cache)
    header, row = panel.rows.children[0], panel.project_rows["a-project-with-a-long-name"]
    titles = [cell.value for cell in header.children]
    texts = [cell.value for cell in row.children[:-1]]
    assert titles == ["project", "responses", "size", "tokens in / out", "tokens saved", "cost", "last used", ""]
    assert texts[3] == "24,000 / 16,000" and texts[5] == "$1.25"
    columns = _columns(row)
    assert columns == _columns(header) == _columns(panel.project_rows["b"])  # one grid for every row
    for i, text in enumerate(texts[1:], start=1):  # each fits its longest text and its title (a digit is 1ch)
        least = max(sum(c.isalnum() for c in text), sum(c.isalnum() for c in titles[i]))
        assert float(columns[i].removesuffix("ch")) >= least + 1, (i, columns[i])
    name = re.fullmatch(r"min\((\d+)ch, 31ch\)", columns[0])  # a name fits, up to 30 digits' width
    assert name and int(name.group(1)) >= sum(c.isalnum() for c in texts[0]) + 1
    numbers = {i for i, cell in enumerate(row.children[:-1]) if "dfnb-number" in cell._dom_classes}
    assert numbers == {1, 2, 3, 4, 5} and all("dfnb-title" in cell._dom_classes for cell in header.children)
    assert "white-space:nowrap'>· " in panel.header.value  # the header wraps only between its parts


def test_the_row_follows_every_delete_tokens_and_cost_included(tmp_path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put_many([NewResponse("k1", b'{"a": 1}', 100, 10, cost=1.0),
                    NewResponse("k2", b'{"a": 2}', 200, 20, cost=2.0)], "a")
    cache.lookup(["k1"], "b")  # b is served k1 from the cache: it paid nothing for it
    panel = CachePanel(cache)
    cache.remove("a", "k2")
    assert [c.value for c in panel.project_rows["a"].children[1:6]][::2] == ["1", "100 / 10", "$1.00"]
    cache.remove("b", "k1")
    b = {p.name: p for p in cache.projects()}["b"]
    assert (b.responses, b.prompt_tokens, b.saved_tokens) == (0, 0, 110)  # its savings are history
    cache.remove("a", "k1")
    a = {p.name: p for p in cache.projects()}["a"]
    assert (a.responses, a.prompt_tokens, a.completion_tokens, a.cost) == (0, 0, 0, None)


def test_a_row_written_before_payers_were_kept_counts_its_first_project_as_the_payer(tmp_path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put_many([NewResponse("k1", b'{"a": 1}', 100, 10)], "a")
    cache.lookup(["k1"], "b")
    cache.close()
    with sqlite3.connect(tmp_path / "cache.db") as db:  # as 0.4 wrote it: no "by"
        (tag,) = db.execute("SELECT tag FROM Cache WHERE key = 'response:k1'").fetchone()
        old = {k: v for k, v in json.loads(tag).items() if k != "by"}
        db.execute("UPDATE Cache SET tag = ? WHERE key = 'response:k1'", (json.dumps(old),))
    cache.remove("b", "k1")
    cache.remove("a", "k1")
    assert {p.name: p.prompt_tokens for p in cache.projects()} == {"a": 0, "b": 0}


def test_compact_gives_back_what_deletes_left_and_the_header_says_so(tmp_path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put_many([NewResponse(f"k{i}", json.dumps({"text": "x" * 300}).encode()) for i in range(400)], "a")
    panel = CachePanel(cache)
    for i in range(0, 400, 2):
        cache.remove("a", f"k{i}")
    before = cache.volume()
    panel.compact_button.click()
    assert cache.volume() < before * 0.8 and len(cache) == 200
    assert panel.status.value.startswith("Compacted: freed ") and human_size(cache.volume()) in panel.header.value
    assert [cache.get(f"k{i}")["text"] for i in (1, 399)] == ["x" * 300] * 2  # nothing lost
