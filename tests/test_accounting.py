"""Token accounting and cost: the run's summary, each project's record, the tables (issue 16, part)."""

from __future__ import annotations

import pytest
from IPython.utils.capture import capture_output

from dataformer_nb import ConfigurationError
from dataformer_nb.testing import FakeLLMServer

from .conftest import BOTH_STORES, chat

pytestmark = BOTH_STORES


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


# A plan before spending


def test_plan_counts_what_would_be_sent_and_sends_and_writes_nothing(server: FakeLLMServer, make_llm,
                                                                      cache_dir) -> None:
    llm = make_llm(model="m1", prices={"m1": (1.0, 2.0)}, max_requests_per_minute=60)
    fresh = llm.plan([chat("a", max_tokens=100), chat("b", max_tokens=100)])
    assert (fresh.requests, fresh.cached, fresh.to_send) == (2, 0, 2)
    assert not cache_dir.exists() and server.count == 0  # nothing written, nothing sent
    assert fresh.prompt_tokens == 2 * (4 + 1) and fresh.completion_budget == 200
    assert fresh.cost == pytest.approx((10 * 1.0 + 200 * 2.0) / 1e6)
    assert fresh.seconds == 0.0  # two requests fit the minute's quota
    llm.generate([chat("a", max_tokens=100)], project_name="p")
    sent = server.count
    plan = llm.plan([chat("a", max_tokens=100), chat("b", max_tokens=100)], project_name="q")
    assert (plan.cached, plan.to_send) == (1, 1) and server.count == sent
    assert [p.name for p in llm.cache.projects()] == ["p"]  # q is not recorded by a plan
    assert llm.plan([chat("a", max_tokens=100)], clear_project_cache="p").to_send == 1  # p's alone: cleared
    assert llm.plan([chat("a", max_tokens=100)], clear_project_cache="other").to_send == 0
    assert llm.plan([chat("a", max_tokens=100)], clear_project_cache="full").to_send == 1
    busy = llm.plan([chat(f"x{i}") for i in range(180)])
    assert busy.seconds == pytest.approx(120, abs=2)  # 60 at once, the other 120 one a second


def test_plan_without_prices_or_limits_says_so(make_llm) -> None:
    plan = make_llm().plan([chat("a")])
    assert plan.cost is None and plan.seconds is None
    assert "no price for a model" in str(plan) and "no limit known" in str(plan)


def test_the_dry_run_magic_shows_the_plan_as_a_table(ip, server: FakeLLMServer) -> None:
    ip.user_ns["topics"] = ["a", "b", "c"]
    with capture_output() as shown:
        ip.run_cell("%%generate --over topics --dry-run -o plan\nTell me about {item}.")
    assert server.count == 0 and ip.user_ns["plan"].to_send == 3
    assert "to send" in shown.stdout and "3" in shown.stdout  # the cell's value, shown as text in a terminal
    assert "nothing sent, nothing written" in ip.user_ns["plan"]._repr_mimebundle_()["text/html"]


def test_a_projects_cost_is_kept_when_its_models_are_priced(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm(model="m1", prices={"m1": (1000.0, 2000.0)})
    llm.generate([chat("a"), chat("b")], project_name="priced")
    make_llm(model="m1").generate([chat("c")], project_name="mixed")
    llm.generate([chat("d")], project_name="mixed")
    projects = {p.name: p for p in llm.cache.projects()}
    assert projects["priced"].cost == pytest.approx(2 * (3 * 1000 + 5 * 2000) / 1e6)
    assert projects["mixed"].cost is None  # one of its responses had no price: no figure rather than a wrong one
    table = llm.cache_panel()._repr_mimebundle_()["text/plain"]
    assert "cost" in table and "$0.0260" in table


@pytest.mark.local_store
def test_a_project_record_written_before_costs_reads_without_one(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm()
    llm.generate([chat("a")], project_name="old")
    raw = llm.cache._cache
    record = raw.get("project:old")
    raw.set("project:old", {k: v for k, v in record.items() if k not in ("cost", "unpriced")})
    old, = llm.cache.projects()
    assert old.cost is None and old.prompt_tokens == 3
    llm.generate([chat("b")], project_name="old")  # and it is written on top of without loss
    assert llm.cache.projects()[0].prompt_tokens == 6
