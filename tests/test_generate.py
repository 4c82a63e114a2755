"""AsyncLLM.generate against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest

from dataformer_nb import (
    AsyncLLM,
    AuthenticationError,
    GenerationInterrupted,
    GenerationResult,
    MissingAPIKeyError,
    get_messages,
    get_request_list,
)
from dataformer_nb.testing import FakeLLMServer

from .conftest import BOTH_STORES, TOGETHER_KEY, chat

pytestmark = BOTH_STORES

R1 = [chat("Why should people read books?"),
      chat("What is the importance of clouds?", api_provider="together")]
R2 = [chat("Why should people read books?"),
      chat("Name people who have won medals at olympics 2024.", api_provider="together")]
R3 = [chat("What is 2+10/2?"), chat("Solve 5x+2x=0", api_provider="together")]


def test_walkthrough_sends_2_1_2_1_0_2(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm(project_name="generate_Data")
    sent = []

    def run(*args, **kwargs):
        before = server.count
        results = llm.generate(*args, **kwargs)
        sent.append(server.count - before)
        assert all(r.ok for r in results)
        return results

    run(R1)
    run(R2, project_name="Questions")
    run(R3, project_name="Maths")
    run(R2, project_name="NewProject", clear_project_cache="Questions")
    run(R2, project_name="New", clear_project_cache=["Maths", "Generate_data"])
    results = run(R2, project_name="New", clear_project_cache="full")

    assert sent == [2, 1, 2, 1, 0, 2]
    assert [r.text for r in results] == [f"Answer: {m['messages'][0]['content']}" for m in R2]
    assert llm.project_name == "generate_data"  # per-call project names do not change the default
    assert {p.name for p in llm.cache.projects()} == {"new"}


def test_results_keep_request_order_with_cached_new_and_failed(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm(max_attempts=2)
    llm.generate([chat("p1"), chat("p3")])
    server.script("p2", "400")
    prompts = ["p0", "p1", "p2", "p3", "p4"]
    results = llm.generate([chat(p) for p in prompts])

    assert [r.text for r in results] == ["Answer: p0", "Answer: p1", None, "Answer: p3", "Answer: p4"]
    assert [r.cached for r in results] == [False, True, False, True, False]
    assert results[2].error is not None and results[2].error.status == 400
    assert "scripted 400" in str(results[2].error)
    assert (results.summary.sent, results.summary.cached, results.summary.failed) == (2, 2, 1)
    assert dict(results.summary.failures) == {"http 400": 1}
    assert server.completed["p2"] == 0 and server.statuses[400] == 1  # a 400 is not retried
    assert llm.cache_key(chat("p2")) not in llm.cache  # failures are never cached


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("fault", ["429", "500", "503", "drop", "malformed"])
def test_retryable_faults_are_retried_until_success(server: FakeLLMServer, make_llm, fault, transport) -> None:
    llm = make_llm(transport=transport)
    server.script("flaky", fault, fault)
    results = llm.generate([chat("flaky"), chat("steady")])

    assert [r.text for r in results] == ["Answer: flaky", "Answer: steady"]
    assert [r["body"]["messages"][0]["content"] for r in server.requests].count("flaky") == 3
    assert server.completed["flaky"] == 1


def test_a_429_waits_as_long_as_its_retry_after_asks(server: FakeLLMServer, make_llm, monkeypatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float, *args: object) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    server.retry_after = "7"
    server.script("limited", "429")
    llm = make_llm()
    assert llm.generate([chat("limited"), chat("free")]).texts == ["Answer: limited", "Answer: free"]
    assert any(7.0 <= seconds <= 7.7 for seconds in slept)  # as asked, and up to a tenth more (jitter)
    assert "1 said to wait (429, 503)" in str(llm.limits())


def test_429s_do_not_spend_attempts(server: FakeLLMServer, make_llm) -> None:
    server.script("busy", *["429"] * 8)
    results = make_llm(max_attempts=2).generate([chat("busy")])
    assert results[0].text == "Answer: busy" and server.statuses[429] == 8
    assert "8 replies said to wait (429, 503)" in str(results.summary)


def test_a_server_that_refuses_for_longer_than_max_wait_fails_saying_so(server: FakeLLMServer, make_llm) -> None:
    server.retry_after = "5"
    server.script("never", *["429"] * 10)
    results = make_llm(max_wait=3).generate([chat("never"), chat("fine")])
    error = results[0].error
    assert error is not None and error.cause == "rate limited" and error.status == 429
    assert "asked to wait 5 s" in str(error) and "max_wait=3" in str(error)
    assert results[1].text == "Answer: fine" and server.statuses[429] == 1  # not asked again in vain


def test_a_429_for_a_spent_quota_stops_that_key_at_once(server: FakeLLMServer, make_llm) -> None:
    server.raw["spent"] = (429, {}, b'{"error": {"message": "You exceeded your current quota", '
                                    b'"type": "insufficient_quota", "code": "insufficient_quota"}}')
    for i in range(10):
        server.script(f"q{i}", "raw:spent")
    results = make_llm(max_concurrent_requests=1).generate([chat(f"q{i}") for i in range(10)])
    assert server.count == 1 and all(r.error is not None and r.error.cause == "quota spent" for r in results)
    assert "waiting will not help" in str(results[0].error)


def test_a_request_that_always_fails_ends_failed_with_its_cause(server: FakeLLMServer, make_llm) -> None:
    server.script("doomed", *["500"] * 3)
    results = make_llm(max_attempts=3).generate([chat("doomed"), chat("fine")])
    error = results[0].error
    assert error is not None and error.cause == "http 500" and "after 3 attempts" in str(error)
    assert results[1].text == "Answer: fine"
    assert server.statuses[500] == 3
    assert dict(results.summary.failures) == {"http 500": 1}


def test_a_rejected_key_stops_that_keys_requests_and_names_the_variable(server: FakeLLMServer, make_llm) -> None:
    server.required_key = "Bearer some-other-key"
    results = make_llm(max_concurrent_requests=1).generate([chat(f"q{i}") for i in range(6)])

    assert server.count == 1
    assert all(isinstance(r.error, AuthenticationError) for r in results)
    assert "TOGETHER_API_KEY" in str(results[0].error)
    assert TOGETHER_KEY not in str(results[0].error)


def test_identical_requests_in_one_batch_are_each_a_sample_of_their_own(server: FakeLLMServer, make_llm) -> None:
    results = make_llm().generate([chat("same"), chat("other"), chat("same")])
    assert server.count == 3  # as dataformer: repeating a request is how a batch asks for samples
    assert [r.text for r in results] == ["Answer: same", "Answer: other", "Answer: same"]


def test_use_cache_false_neither_reads_nor_writes(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm()
    llm.generate([chat("a")])
    results = llm.generate([chat("a"), chat("a")], use_cache=False)
    assert server.count == 3 and not any(r.cached for r in results)
    llm.generate([chat("b")], use_cache=False)
    assert llm.cache_key(chat("b")) not in llm.cache


def test_cache_vars_and_sampling_params_are_part_of_the_key(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm(sampling_params={"temperature": 0.2, "max_tokens": 50})
    llm.generate([chat("a")])
    llm.generate([chat("a")], cache_vars={"run": 2})
    llm.generate([chat("a", temperature=0.9)])
    llm.generate([chat("a", temperature=0.2)])  # same as the sampling_params default: cached
    assert server.count == 3
    bodies = [r["body"] for r in server.requests]
    assert bodies[0]["temperature"] == 0.2 and bodies[0]["max_tokens"] == 50
    assert bodies[2]["temperature"] == 0.9


def test_routing_fields_and_metadata_are_never_sent(server: FakeLLMServer, make_llm, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test")
    request = chat("hi", api_provider="openai", model="gpt-x", api_key="sk-per-request",
                   metadata={"row": 7}, url=f"{server.url}/v1/chat/completions")
    result = make_llm().generate([request])[0]

    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"] == {"messages": request["messages"], "model": "gpt-x"}
    assert sent["headers"]["Authorization"] == "Bearer sk-per-request"
    assert result.metadata == {"row": 7} and result.request == request


def test_a_url_named_by_the_user_never_gets_the_providers_key(server: FakeLLMServer, make_llm) -> None:
    other_host = server.url.replace("127.0.0.1", "localhost")  # not TOGETHER_BASE_URL's host
    llm = make_llm(url=f"{other_host}/custom/v1")  # a base URL: the endpoint is appended
    assert llm.generate([chat("hi")])[0].text == "Answer: hi"
    assert server.requests[0]["path"] == "/custom/v1/chat/completions"
    assert "Authorization" not in server.requests[0]["headers"]


def test_caller_dicts_are_never_mutated(server: FakeLLMServer, make_llm) -> None:
    requests = [chat("a", metadata={"i": 1}), chat("b", api_provider="together", temperature=1)]
    params = {"temperature": 0.5, "stop": ["\n"]}
    snapshot = copy.deepcopy((requests, params))
    llm = make_llm(sampling_params=params)
    llm.generate(requests)
    llm.generate(requests)
    assert (requests, params) == snapshot


def test_text_generation_posts_to_completions(server: FakeLLMServer, make_llm) -> None:
    results = make_llm(gen_type="text").generate([{"prompt": "Once upon"}])
    assert server.requests[0]["path"] == "/v1/completions"
    assert results[0].text == "Answer: Once upon"


def test_anthropic_requests_and_replies_are_converted(server: FakeLLMServer, make_llm, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    llm = make_llm(api_provider="anthropic", max_tokens_per_minute=10_000)
    request = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
               "stop": "END"}
    result = llm.generate([request])[0]

    sent = server.requests[0]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-test" and sent["headers"]["anthropic-version"]
    assert "Authorization" not in sent["headers"]
    assert sent["body"] == {"model": "claude-3-5-haiku-latest", "system": "Be brief.", "max_tokens": 1024,
                            "messages": [{"role": "user", "content": "Hi"}], "stop_sequences": ["END"]}
    assert result.response["choices"][0]["message"] == {"role": "assistant", "content": "Answer: Hi"}
    assert result.response["choices"][0]["finish_reason"] == "stop"
    assert result.usage == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


@pytest.mark.parametrize(("gen_type", "request_", "path"), [
    ("chat", chat("Hi", temperature=0.1, max_tokens=20), "/api/chat"),
    ("text", {"prompt": "Hi", "temperature": 0.1, "max_tokens": 20}, "/api/generate"),
])
def test_ollama_native_requests_and_replies_are_converted(server, make_llm, gen_type, request_, path) -> None:
    result = make_llm(api_provider="ollama", model="llama3", gen_type=gen_type).generate([request_])[0]
    sent = server.requests[0]
    assert sent["path"] == path
    assert sent["body"]["stream"] is False and sent["body"]["model"] == "llama3"
    assert sent["body"]["options"] == {"temperature": 0.1, "num_predict": 20}
    assert "temperature" not in sent["body"]
    assert result.text == "Answer: Hi" and result.usage["total_tokens"] == 8


def test_concurrency_cap_holds_together_with_rate_limits(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm(max_concurrent_requests=3, max_requests_per_minute=600_000, max_tokens_per_minute=10**8)
    results = llm.generate([chat(f"q{i}") for i in range(40)])
    assert all(r.ok for r in results)
    assert 1 <= server.peak_active <= 3


def test_results_unpack_like_dataformer_pairs(server: FakeLLMServer, make_llm) -> None:
    results = make_llm().generate(get_request_list(["a", "b"], {"temperature": 0}))
    request, response = results[0]
    assert request["temperature"] == 0 and response["choices"][0]["message"]["content"] == "Answer: a"
    assert results[1][1]["choices"][0]["message"]["content"] == "Answer: b"
    assert get_messages(results) == ["Answer: a", "Answer: b"]
    assert isinstance(results[0], GenerationResult) and "Answer: a" in repr(results[0])


def test_missing_key_is_raised_before_anything_is_sent(server: FakeLLMServer, make_llm, monkeypatch) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY")
    with pytest.raises(MissingAPIKeyError, match="TOGETHER_API_KEY is not set"):
        make_llm().generate([chat("a")])
    assert server.count == 0


def test_cached_results_need_no_key(server: FakeLLMServer, make_llm, monkeypatch) -> None:
    make_llm().generate([chat("a")])
    monkeypatch.delenv("TOGETHER_API_KEY")
    assert make_llm().generate([chat("a")])[0].cached
    with pytest.raises(MissingAPIKeyError):
        make_llm().generate([chat("a")], clear_project_cache="full")
    llm = make_llm()
    assert llm.cache_key(chat("a")) in llm.cache  # nothing was cleared


def test_summary_line_is_printed(server: FakeLLMServer, make_llm, capsys) -> None:
    make_llm(verbose=True).generate([chat("a"), chat("a")], project_name="Demo")
    assert "2 requests: 2 sent, 0 cached, 0 failed · project demo" in capsys.readouterr().out


def test_agenerate_is_the_async_twin(server: FakeLLMServer, make_llm) -> None:
    import asyncio

    results = asyncio.run(make_llm().agenerate([chat("a")]))
    assert results[0].text == "Answer: a"


def test_echo_provider_works_offline(cache_dir: Path) -> None:
    llm = AsyncLLM(api_provider="echo", cache_dir=cache_dir, progress=False, verbose=False,
                   max_requests_per_minute=10**6)
    results = llm.generate([chat("hello"), {"messages": [{"role": "user", "content": "hello"}]}])
    assert results.texts == ["Echo: hello", "Echo: hello"]
    assert llm.generate([chat("hello")])[0].cached


def test_generate_works_inside_a_running_event_loop(server: FakeLLMServer, make_llm) -> None:
    import asyncio

    llm = make_llm()

    async def cell() -> list[str | None]:  # as in a Jupyter kernel, where a loop is running
        return llm.generate([chat("nested")]).texts

    assert asyncio.run(cell()) == ["Answer: nested"]


def test_keyboard_interrupt_keeps_finished_work(server: FakeLLMServer, make_llm) -> None:
    prompts = [f"q{i}" for i in range(12)]
    server.script("q6", "sigint")
    llm = make_llm(max_concurrent_requests=1)
    with pytest.raises(GenerationInterrupted) as interrupted:
        llm.generate([chat(p) for p in prompts])
    server.release()
    assert str(interrupted.value) == ("interrupted: 6 new responses saved (cache, llm.last_results); a re-run "
                                      "sends the other 6")
    assert interrupted.value.__suppress_context__ and interrupted.value.__cause__ is None  # no chain of internals
    assert isinstance(interrupted.value, KeyboardInterrupt)
    kept = [p for p in prompts if llm.cache_key(chat(p)) in llm.cache]
    assert kept == prompts[:6]

    before = server.count
    results = llm.generate([chat(p) for p in prompts])
    assert server.count - before == len(prompts) - len(kept)
    assert results.texts == [f"Answer: {p}" for p in prompts]


@pytest.mark.local_store
def test_the_api_key_is_in_no_byte_under_the_cache_dir(server: FakeLLMServer, make_llm, cache_dir) -> None:
    llm = make_llm(api_key=TOGETHER_KEY)
    llm.generate([chat(f"q{i}", api_key=TOGETHER_KEY) for i in range(5)], project_name="a")
    llm.generate([chat("q1")], project_name="b")
    llm.clear_cache("a")
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert TOGETHER_KEY.encode() not in path.read_bytes(), path
    assert TOGETHER_KEY not in repr(llm) + repr(llm.generate([chat("q1")]))
    assert json.dumps(llm.generate([chat("q1", api_key=TOGETHER_KEY)]).to_records()).count(TOGETHER_KEY) == 0


def test_a_long_results_list_shows_its_ends_and_summary(server: FakeLLMServer, make_llm) -> None:
    results = make_llm().generate([chat(f"q{i}") for i in range(12)])
    shown = repr(results)
    assert "Answer: q0" in shown and "Answer: q11" in shown and "2 more" in shown and "Answer: q6" not in shown
    assert "12 sent" in shown
    assert results[3].response["choices"][0]["message"]["content"] == "Answer: q3"  # decoded on first use
    assert results[3].response is results[3].response


def test_the_progress_bar_says_when_the_run_waits_on_a_rate_limit(server: FakeLLMServer, make_llm, capsys) -> None:
    server.retry_after = "1.5"
    server.script("limited", "429")
    make_llm(progress=True).generate([chat("limited")], progress_label="questions")
    assert "questions (waiting 2 s: rate limit)" in capsys.readouterr().err


def test_a_warning_from_the_run_points_at_the_users_line(make_llm) -> None:
    # The run goes on on a private loop (here) or a worker thread (under a running loop, as in
    # Jupyter): neither has the user's frame on its stack, so the warning names the call's line.
    import asyncio

    from dataformer_nb import UnknownProjectWarning

    llm = make_llm(api_provider="echo")
    with pytest.warns(UnknownProjectWarning) as caught:
        llm.generate([chat("a")], clear_project_cache="nope")
    assert caught[0].filename == __file__

    async def in_a_notebook() -> None:
        llm.generate([chat("b")], clear_project_cache="nope either")

    with pytest.warns(UnknownProjectWarning) as caught:
        asyncio.run(in_a_notebook())
    assert caught[0].filename == __file__ and "nope either" in str(caught[0].message)
