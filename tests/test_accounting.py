"""Token accounting and cost: the run's summary, each project's record, the tables (issue 16, part)."""

from __future__ import annotations

import pytest

from dataformer_nb import ConfigurationError

from .conftest import chat
from .fake_llm_server import FakeLLMServer


def test_the_summary_counts_the_runs_tokens_and_what_the_cache_saved(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm(model="m1", prices={"m1": (1.0, 2.0)})
    first = llm.generate([chat("a"), chat("b")], project_name="p")
    s = first.summary
    assert (s.prompt_tokens, s.completion_tokens, s.saved_tokens) == (6, 10, 0)  # the server's usage: 3 + 5 each
    assert s.cost == pytest.approx((6 * 1.0 + 10 * 2.0) / 1e6)
    assert "tokens 6 / 10, $0.000026" in str(s)
    again = llm.generate([chat("a"), chat("c")], project_name="q").summary
    assert (again.prompt_tokens, again.completion_tokens, again.saved_tokens) == (3, 5, 8)
    assert "tokens 3 / 5 (8 saved)" in str(again)
    projects = {p.name: p for p in llm.cache.projects()}
    assert (projects["p"].prompt_tokens, projects["p"].completion_tokens, projects["p"].saved_tokens) == (6, 10, 0)
    assert (projects["q"].prompt_tokens, projects["q"].completion_tokens, projects["q"].saved_tokens) == (3, 5, 8)
    llm.clear_cache("p")  # the shared response stays for q, with q's counts unchanged
    assert {p.name: p.saved_tokens for p in llm.cache.projects()} == {"q": 8}


def test_no_cost_is_shown_when_a_model_has_no_price(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm(model="m1", prices={"m1": (1.0, 2.0)})
    results = llm.generate([chat("a"), chat("b", model="unpriced")])
    assert results.summary.cost is None and "$" not in str(results.summary)


@pytest.mark.parametrize("prices", [{"m": 1.0}, {"m": (1, -2)}, {"m": ("a", "b")}, ["m"], {3: (1, 2)}])
def test_bad_prices_are_refused_with_the_shape_expected(make_llm, prices) -> None:
    with pytest.raises(ConfigurationError, match=r"prices"):
        make_llm(prices=prices)


def test_the_projects_table_shows_tokens(ip, server: FakeLLMServer, capsys) -> None:
    ip.run_cell("%%generate --project Tokens\nHello")
    capsys.readouterr()
    ip.run_line_magic("dataformer", "projects")
    out = capsys.readouterr().out
    assert "tokens in / out" in out and "tokens saved" in out
    assert any(line.startswith("tokens") and "3 / 5" in line for line in out.splitlines())


def test_prices_set_with_config_reach_the_cells_summary(ip, server: FakeLLMServer, capsys) -> None:
    ip.run_line_magic("config", "Dataformer.prices = {'meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo': (1.0, 1.0)}")
    try:
        ip.run_cell("%%generate\nPriced")
    finally:
        ip.run_line_magic("config", "Dataformer.prices = {}")
    assert "tokens 3 / 5, $0.000008" in capsys.readouterr().out
