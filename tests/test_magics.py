"""%%generate and %dataformer in a real IPython InteractiveShell, against the loopback server."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from dataformer_nb import AsyncLLM, CachePanel, UnknownProjectWarning
from dataformer_nb.testing import FakeLLMServer

from .conftest import BOTH_STORES, TOGETHER_KEY, the_store

pytestmark = BOTH_STORES


def cell(ip: InteractiveShell, line: str, body: str):
    result = ip.run_cell(f"%%generate {line}\n{body}")
    return result


def prompts(server: FakeLLMServer) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in server.requests]


def test_single_prompt_interpolates_and_shows_markdown(ip, server, capsys, cache_dir) -> None:
    ip.user_ns["topic"] = "books"
    result = cell(ip, "together:some/model --project Questions -o answers", "Why should people read {topic}?")
    assert result.success
    assert prompts(server) == ["Why should people read books?"]
    assert server.requests[0]["body"]["model"] == "some/model"
    answers = ip.user_ns["answers"]
    assert answers.texts == ["Answer: Why should people read books?"]
    assert ip.user_ns["_"] is answers  # the cell's value is the results
    assert "Answer: Why should people read books?" in capsys.readouterr().out
    assert [p.name for p in the_store(cache_dir).projects()] == ["questions"]


def test_over_a_list_and_rerun_is_all_cached(ip, server, capsys) -> None:
    ip.user_ns["topics"] = ["books", "clouds", "books"]
    assert cell(ip, "--over topics -o out", "Tell me about {item}.").success
    assert sorted(prompts(server)) == ["Tell me about books.", "Tell me about books.", "Tell me about clouds."]
    out = capsys.readouterr().out
    assert "Tell me about clouds." in out and "3 requests: 3 sent, 0 cached" in out
    assert cell(ip, "--over topics -o again", "Tell me about {item}.").success
    assert server.count == 3
    assert all(r.cached for r in ip.user_ns["again"])


def test_over_a_dataframe_fills_columns(ip, server) -> None:
    ip.user_ns["df"] = pd.DataFrame({"city": ["Paris", "Lima"], "country": ["France", "Peru"]})
    assert cell(ip, "--over df -o out", "Is {city} in {country}?").success
    assert ip.user_ns["out"].texts == ["Answer: Is Paris in France?", "Answer: Is Lima in Peru?"]


def test_over_a_series_and_dicts(ip, server) -> None:
    ip.user_ns["s"] = pd.Series(["a", "b"])
    ip.user_ns["rows"] = [{"name": "x"}, {"name": "y"}]
    assert cell(ip, "--over s -o out", "{item}!").success
    assert cell(ip, "--over rows -o out2", "{name}?").success
    assert sorted(prompts(server)) == ["a!", "b!", "x?", "y?"]
    assert ip.user_ns["out2"].texts == ["Answer: x?", "Answer: y?"]


def test_lines_makes_one_prompt_per_line_with_options(ip, server) -> None:
    body = "First question\n\n  Second question  \n"
    line = "--lines --system 'Be brief.' --temperature 0.3 --max-tokens 40 --params '{\"top_p\": 0.9}' -o out"
    assert cell(ip, line, body).success
    sent = server.requests[0]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (sent["temperature"], sent["max_tokens"], sent["top_p"]) == (0.3, 40, 0.9)
    assert ip.user_ns["out"].texts == ["Answer: First question", "Answer: Second question"]


def test_undefined_name_is_a_clear_error_and_nothing_is_sent(ip, server, capsys) -> None:
    result = cell(ip, "", "Why {nothing_here}?")
    assert not result.success
    assert "{nothing_here} in the prompt is not defined" in str(result.error_in_exec)
    assert server.count == 0


def test_escaped_braces_stay_literal(ip, server) -> None:
    assert cell(ip, "-o out", "Return {{\"a\": 1}} as JSON").success
    assert prompts(server) == ['Return {"a": 1} as JSON']


def test_bad_option_prints_usage_and_sends_nothing(ip, server, capsys) -> None:
    result = cell(ip, "--no-such-option", "hi")
    assert not result.success and server.count == 0
    assert "unrecognized arguments" in str(result.error_in_exec)
    result = cell(ip, "--format fancy", "hi")
    assert "invalid choice" in str(result.error_in_exec) and server.count == 0


def test_no_cache_and_clear_cache(ip, server, cache_dir) -> None:
    assert cell(ip, "--project a -o x", "q").success
    assert cell(ip, "--project a --no-cache -o x", "q").success
    assert server.count == 2 and not ip.user_ns["x"][0].cached
    with pytest.warns(UnknownProjectWarning, match="no project named 'b'"):
        assert cell(ip, "--project b --clear-cache a --clear-cache b -o x", "q").success
    assert server.count == 3
    assert [p.name for p in the_store(cache_dir).projects()] == ["b"]


def test_failures_are_shown_not_swallowed(ip, server, capsys) -> None:
    server.script("bad", "400")
    assert cell(ip, "-o out", "bad").success
    assert "**failed**" in capsys.readouterr().out and ip.user_ns["out"][0].error is not None


def test_llm_option_uses_an_existing_client(ip, server, cache_dir) -> None:
    ip.user_ns["mine"] = AsyncLLM(api_provider="together", model="mine/model", cache_dir=cache_dir,
                                  progress=False, verbose=False)
    assert cell(ip, "--llm mine -o out", "hi").success
    assert server.requests[0]["body"]["model"] == "mine/model"
    assert "no AsyncLLM" in str(cell(ip, "--llm missing", "hi").error_in_exec)


def test_formats_json_and_none(ip, server, capsys) -> None:
    assert cell(ip, "-f json -o out", "j").success
    assert '"text": "Answer: j"' in capsys.readouterr().out
    assert cell(ip, "-f none -o out", "j").success
    assert "Answer: j" not in capsys.readouterr().out


def test_config_traits_and_use(ip, server, capsys) -> None:
    ip.run_line_magic("config", "Dataformer.sampling_params = {'seed': 7}")
    ip.run_line_magic("dataformer", "use together:cfg/model")
    assert cell(ip, "-o out", "c").success
    assert server.requests[0]["body"]["seed"] == 7 and server.requests[0]["body"]["model"] == "cfg/model"
    ip.run_line_magic("dataformer", "config")
    out = capsys.readouterr().out
    assert "cfg/model" in out and "TOGETHER_API_KEY set" in out and TOGETHER_KEY not in out


def test_subcommands(ip, server, capsys, cache_dir) -> None:
    cell(ip, "--project alpha -o x", "one")
    cell(ip, "--project beta -o x", "two")
    capsys.readouterr()
    ip.run_line_magic("dataformer", "projects")
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "responses" in out
    ip.run_line_magic("dataformer", "clear alpha")
    assert "Cleared alpha: 1 response deleted" in capsys.readouterr().out
    ip.run_line_magic("dataformer", "providers")
    out = capsys.readouterr().out
    assert "TOGETHER_API_KEY" in out and "set" in out and TOGETHER_KEY not in out
    ip.run_line_magic("dataformer", "help")
    assert "%dataformer projects" in capsys.readouterr().out
    panel = ip.run_line_magic("dataformer", "cache")
    assert isinstance(panel, CachePanel) and set(panel.project_rows) == {"beta"}
    ip.run_line_magic("dataformer", "clear full")
    assert panel.project_rows == {}  # the panel heard the clear
    assert the_store(cache_dir).projects() == []
    result = ip.run_cell("%dataformer frobnicate")
    assert "unknown subcommand" in str(result.error_in_exec)


def test_an_llm_given_with_llm_keeps_its_own_project(ip, server) -> None:
    from dataformer_nb import AsyncLLM

    ip.user_ns["mine"] = AsyncLLM(api_provider="together", project_name="Mine", cache_dir=".cache/mine",
                                  progress=False, verbose=False)  # in the test's own working directory
    ip.run_cell("%%generate --llm mine -o out\nHello")
    assert ip.user_ns["out"].summary.project == "mine"
    ip.run_cell("%%generate --llm mine --project Other -o out\nHello")
    assert ip.user_ns["out"].summary.project == "other"
