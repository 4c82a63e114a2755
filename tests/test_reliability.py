"""Nothing paid for is lost, the cache is never corrupted, no secret leaks."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_client.manager import start_new_kernel

from dataformer_nb import AsyncLLM, CacheError, ResponseCache
from dataformer_nb.testing import FakeLLMServer

from .conftest import TOGETHER_KEY, chat

FAULTS = ["429"] * 10 + ["500"] * 5 + ["drop"] * 2 + ["malformed"] + ["slow"]


def test_a_fault_mix_loses_nothing_and_completes_each_request_once(server: FakeLLMServer, make_llm) -> None:
    n = 1000
    for i in range(n):
        if i % 100 < len(FAULTS):
            server.script(f"q{i}", FAULTS[i % 100])
    server.slow_seconds = 6.0
    llm = make_llm(timeout=2.0)
    results = llm.generate([chat(f"q{i}") for i in range(n)])

    assert results.texts == [f"Answer: q{i}" for i in range(n)]
    assert sum(server.completed.values()) == n and set(server.completed.values()) == {1}
    assert server.statuses[429] == 100 and server.statuses[500] == 50
    assert len(llm.cache) == n


@pytest.mark.parametrize("status", ["500", "503"])  # 429s are waits: see test_generate
def test_a_server_that_always_fails_ends_with_every_result_failed(server, make_llm, status) -> None:
    for i in range(20):
        server.script(f"q{i}", *[status] * 10)
    llm = make_llm(max_attempts=3)
    results = llm.generate([chat(f"q{i}") for i in range(20)])
    assert all(r.error is not None and r.error.cause == f"http {status}" for r in results)
    assert dict(results.summary.failures) == {f"http {status}": 20}
    assert server.count == 60 and len(llm.cache) == 0


def _client_script(cache_dir: Path, prompts: str, project: str = "dataformer", concurrency: int = 4) -> str:
    return textwrap.dedent(f"""
        from dataformer_nb import AsyncLLM
        llm = AsyncLLM(api_provider="together", cache_dir={str(cache_dir)!r}, progress=False, verbose=False,
                       max_concurrent_requests={concurrency}, retry_base_delay=0.001)
        prompts = {prompts}
        results = llm.generate([{{"messages": [{{"role": "user", "content": p}}]}} for p in prompts],
                               project_name={project!r})
        assert results.texts == ["Answer: " + p for p in prompts], results.summary
    """)


def test_sigkill_mid_run_keeps_every_response_that_arrived(server: FakeLLMServer, make_llm, cache_dir) -> None:
    prompts = [f"q{i}" for i in range(40)]
    server.script("q20", "kill")
    proc = subprocess.Popen([sys.executable, "-c", _client_script(cache_dir, repr(prompts))])
    server.kill_pid = proc.pid
    assert proc.wait(timeout=120) == -signal.SIGKILL
    server.release()

    llm = make_llm()
    kept = [p for p in prompts if llm.cache_key(chat(p)) in llm.cache]
    assert 10 <= len(kept) < len(prompts)
    assert set(kept) <= set(server.completed)
    for p in kept:
        assert llm.cache.get(llm.cache_key(chat(p)))["choices"][0]["message"]["content"] == f"Answer: {p}"
    before = server.count
    assert llm.generate([chat(p) for p in prompts]).texts == [f"Answer: {p}" for p in prompts]
    assert server.count - before == len(prompts) - len(kept)


def test_two_processes_generating_into_one_cache(server: FakeLLMServer, cache_dir) -> None:
    first, second = [f"q{i}" for i in range(0, 80)], [f"q{i}" for i in range(40, 120)]
    procs = [subprocess.Popen([sys.executable, "-c", _client_script(cache_dir, repr(ps), project, 16)],
                              stderr=subprocess.PIPE, text=True)
             for ps, project in ((first, "one"), (second, "two"))]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err

    cache = ResponseCache(cache_dir)
    assert len(cache) == 120
    assert {p.name: p.responses for p in cache.projects()} == {"one": 80, "two": 80}
    report = cache.clear("one")
    assert (report.responses_deleted, report.kept_shared) == (40, 40)  # both memberships were recorded


def test_keyboard_interrupt_in_a_notebook_kernel(server: FakeLLMServer, cache_dir) -> None:
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        def run(code: str) -> dict:
            return kc.execute_interactive(code, timeout=60)["content"]

        setup = (f"from dataformer_nb import AsyncLLM\nllm = AsyncLLM(api_provider='together', "
                 f"cache_dir={str(cache_dir)!r}, max_concurrent_requests=1, progress=False, verbose=False)\n"
                 "reqs = [{'messages': [{'role': 'user', 'content': f'q{i}'}]} for i in range(12)]")
        assert run(setup)["status"] == "ok"
        server.script("q6", "hold")
        kc.execute("r = llm.generate(reqs)")
        assert server.holding.wait(60)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=60)["content"]
        assert reply["status"] == "error" and reply["ename"] == "GenerationInterrupted"
        # One line, no traceback of the worker thread; its counts agree with what a re-run sends.
        assert reply["traceback"] == ["KeyboardInterrupt: interrupted: 6 new responses saved (cache, "
                                      "llm.last_results); a re-run sends the other 6"]
        server.release()

        assert run("assert 1 + 1 == 2")["status"] == "ok"  # the kernel is usable
        assert run("assert [r.ok for r in llm.last_results] == [True] * 6 + [False] * 6\n"
                   "assert llm.last_results[6].error.cause == 'interrupted'")["status"] == "ok"
        before = server.count
        assert run("r = llm.generate(reqs); assert r.texts == ['Answer: ' + f'q{i}' for i in range(12)]"
                   )["status"] == "ok"
        assert server.count - before == 6  # only what had not finished
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_an_unwritable_cache_dir_fails_before_sending(server: FakeLLMServer, make_llm, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CacheError, match="cache_dir="):
        make_llm(cache_dir=blocker / "cache").generate([chat("x")])
    assert server.count == 0


# The cache key

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
extra_params = st.dictionaries(st.text(min_size=1, max_size=8).filter(
    lambda k: k not in ("api_provider", "url", "api_key", "model", "metadata", "messages")), json_values, max_size=4)
KEY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@KEY_SETTINGS
@given(content=st.text(), params=extra_params)
def test_key_order_unicode_and_float_formatting_never_change_a_key(content, params, tmp_path) -> None:
    llm = AsyncLLM(api_provider="echo", cache_dir=tmp_path)
    request = {"messages": [{"role": "user", "content": content}], **params}
    reordered = dict(reversed(list(request.items())))
    reordered["messages"] = [dict(reversed(list(m.items()))) for m in request["messages"]]
    assert llm.cache_key(request) == llm.cache_key(reordered)
    assert llm.cache_key({**request, "temperature": 1}) == llm.cache_key({**request, "temperature": 1.0})
    assert llm.cache_key({**request, "top_p": 0.7}) == llm.cache_key({**request, "top_p": float("0.70")})
    assert llm.cache_key(request) == llm.cache_key({**request, "metadata": {"anything": content}})
    assert llm.cache_key(request) == llm.cache_key({**request, "api_key": "sk-never-in-the-key"})


@KEY_SETTINGS
@given(content=st.text(), params=extra_params, change=st.text(min_size=1))
def test_any_change_to_a_sent_field_changes_the_key(content, params, change, tmp_path) -> None:
    llm = AsyncLLM(api_provider="echo", cache_dir=tmp_path)
    request = {"messages": [{"role": "user", "content": content}], **params}
    key = llm.cache_key(request)
    assert key != llm.cache_key({**request, "messages": [{"role": "user", "content": content + change}]})
    assert key != llm.cache_key({**request, "model": "another-model"})
    assert key != llm.cache_key({**request, "seed_" + change: 1})
    assert key != llm.cache_key(request, cache_vars={"v": change})


# Secrets

def test_the_key_is_in_no_byte_written_anywhere(server, make_llm, cache_dir, capfd, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server.script("bad", "500", "500")
    llm = make_llm(progress=True, verbose=True, max_attempts=2)
    with pytest.warns(UserWarning):
        results = llm.generate([chat(f"q{i}") for i in range(5)] + [chat("bad")],
                               clear_project_cache="never-existed")
    server.required_key = "Bearer other"
    rejected = make_llm(progress=True, verbose=True).generate([chat("new")])

    written = b"".join(p.read_bytes() for p in cache_dir.rglob("*") if p.is_file())
    out, err = capfd.readouterr()
    shown = "".join([out, err, caplog.text, repr(llm), repr(results), str(results.to_records()),
                     str(results[-1].error), str(rejected[0].error), repr(rejected)])
    assert TOGETHER_KEY.encode() not in written
    assert TOGETHER_KEY not in shown
    assert "TOGETHER_API_KEY" in str(rejected[0].error)
