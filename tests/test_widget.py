"""CachePanel driven through its widget model, no browser."""

from __future__ import annotations

import shutil

from dataformer_nb import CachePanel, ResponseCache

from .conftest import TOGETHER_KEY, chat


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


def test_refresh_sees_changes_from_elsewhere(server, make_llm) -> None:
    llm = fill(make_llm)
    panel = CachePanel(llm)
    ResponseCache(llm.cache_dir).put("k", {"choices": []}, "outside")
    assert "outside" not in panel.project_rows
    panel.refresh_button.click()
    assert "outside" in panel.project_rows


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
