"""Issue 14: an untrusted cache file, hostile replies and bad input lose nothing and leak nothing.

One test per item, named after what it guards. Items 1 (rows naming files) are in test_rows.py.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import sqlite3
import stat
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest

from dataformer_nb import AsyncLLM, CacheError, ConfigurationError, InvalidRequestError, ResponseCache
from dataformer_nb.dispatch import _retry_after
from dataformer_nb.testing import FakeLLMServer

from .conftest import chat

OK_USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def reply(**fields: object) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "model": "m", **fields}).encode()


def choice(content: object = "fine") -> dict[str, object]:
    return {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}


# Security


def test_keys_never_show_in_a_traceback_with_locals(server: FakeLLMServer, make_llm) -> None:
    llm = make_llm(api_key="sk-traceback-secret-123")
    with pytest.raises(InvalidRequestError) as info:
        llm.generate([chat("a"), chat("b", temperature=float("nan"))])
    shown = "".join(traceback.TracebackException.from_exception(info.value, capture_locals=True).format())
    assert "temperature" in shown or "JSON" in shown
    assert "sk-traceback-secret-123" not in shown


def test_a_short_key_is_redacted_only_where_it_stands_whole(server: FakeLLMServer, make_llm) -> None:
    server.raw["echo"] = (500, {}, json.dumps({"error": {"message": "Expecting value; key x rejected"}}).encode())
    server.script("p", "raw:echo")
    error = make_llm(api_key="x", max_attempts=1).generate([chat("p")])[0].error
    assert "Expecting value; key *** rejected" in str(error)


def test_an_existing_cache_readable_by_others_is_made_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    ResponseCache(directory).close()
    directory.chmod(0o755)
    (directory / "cache.db").chmod(0o644)
    ResponseCache(directory).close()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "cache.db").stat().st_mode) == 0o600


# One reply never sinks a batch, or sticks in the cache


@pytest.mark.parametrize("payload", [
    reply(choices=[choice()], usage="n/a"),
    reply(choices=[choice()], usage={**OK_USAGE, "total_tokens": "12"}),
    b'{"choices": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
], ids=["usage-not-an-object", "tokens-as-text", "200k-deep"])
def test_a_reply_with_bad_usage_or_deep_json_fails_only_its_request(server, make_llm, payload: bytes) -> None:
    server.raw["bad"] = (200, {}, payload)
    server.script("bad", *["raw:bad"] * 3)
    llm = make_llm(max_attempts=3, max_tokens_per_minute=10**6)
    results = llm.generate([chat("bad"), chat("good")])
    assert results[0].error is not None and results[0].error.cause == "malformed json"
    assert results[1].text == "Answer: good"
    assert llm.cache_key(chat("bad")) not in llm.cache


@pytest.mark.parametrize("payload", [reply(choices=[42]), reply(choices=[{"index": 0, "message": "hello"}]),
                                     reply(choices=[choice(["not", "text"])])],
                         ids=["choice-42", "message-a-string", "content-a-list"])
def test_a_reply_of_the_wrong_shape_is_never_cached(server, make_llm, payload: bytes) -> None:
    server.raw["odd"] = (200, {}, payload)
    server.script("odd", "raw:odd")
    llm = make_llm(max_attempts=1)
    result = llm.generate([chat("odd")])[0]
    assert result.error is not None and result.error.cause == "malformed json"
    assert llm.cache_key(chat("odd")) not in llm.cache
    assert repr(result) and llm.generate([chat("odd")])[0].text == "Answer: odd"  # the next run asks again


def test_a_tool_call_reply_with_null_content_stays_valid(server, make_llm) -> None:
    tool_call = {"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}
    server.raw["tool"] = (200, {}, reply(choices=[tool_call], usage=OK_USAGE))
    server.script("tool", "raw:tool")
    llm = make_llm()
    result = llm.generate([chat("tool")])[0]
    assert result.ok and result.text is None
    assert llm.generate([chat("tool")])[0].cached


def test_a_reply_with_nan_is_never_stored(server, make_llm) -> None:
    server.raw["nan"] = (200, {}, reply(choices=[choice()], usage=OK_USAGE, score=float("nan")))
    server.script("nan", "raw:nan")
    llm = make_llm(max_attempts=1)
    assert llm.generate([chat("nan")])[0].error.cause == "malformed json"
    assert llm.cache_key(chat("nan")) not in llm.cache


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_reply_past_max_reply_bytes_fails_that_request_clearly(server, make_llm, transport: str) -> None:
    bomb = gzip.compress(b'{"choices": [{"message": {"content": "' + b"a" * 5_000_000 + b'"}}]}')
    server.raw["bomb"] = (200, {"Content-Encoding": "gzip"}, bomb)
    server.script("bomb", "raw:bomb", "raw:bomb")
    results = make_llm(max_reply_bytes=1_000_000, transport=transport).generate([chat("bomb"), chat("fine")])
    assert results[0].error.cause == "reply too large" and "max_reply_bytes" in str(results[0].error)
    assert results[1].text == "Answer: fine"
    assert [r["body"]["messages"][0]["content"] for r in server.requests].count("bomb") == 1  # not retried


# Hangs and slow ends


@pytest.mark.parametrize("header", ["nan", "inf", "-5", "0", "-100", "soon"])
def test_a_garbled_retry_after_is_ignored(header: str) -> None:
    # zero or negative states no wait: the request backs off as for any retry (issue 24, item 12)
    assert _retry_after({"retry-after": header}) is None
    assert _retry_after({"retry-after-ms": header}) is None


def test_a_negative_retry_after_cannot_make_the_client_exceed_its_backoff(server, make_llm) -> None:
    server.raw["negative"] = (429, {"Retry-After": "-100"}, b'{"error": {"message": "slow down"}}')
    server.script("a", *["raw:negative"] * 10_000)
    results = make_llm(max_wait=0.5, retry_base_delay=0.05).generate([chat("a"), chat("b")])
    assert results[0].error.cause == "rate limited" and results[1].text == "Answer: b"
    # no wait stated: retried after at least retry_base_delay / 2 = 0.025 s (then longer, once most replies
    # are 429s), so at most 0.5 / 0.025 + 1 sends fit in max_wait; the -100 s made it 13,992 in 5 s
    assert server.asked["a"] <= 21, server.asked["a"]


@pytest.mark.parametrize(("option", "value"), [
    ("retry_base_delay", float("nan")), ("retry_base_delay", "x"), ("retry_base_delay", -1),
    ("max_requests_per_minute", 1e-9), ("max_tokens_per_minute", 0.5), ("max_attempts", None), ("timeout", None),
])
def test_absurd_settings_are_refused_with_the_fix(option: str, value: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=option):
        AsyncLLM(api_provider="echo", cache_dir=tmp_path, **{option: value})


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_the_timeout_bounds_the_whole_exchange_on_every_transport(server, make_llm, transport: str) -> None:
    server.drip_seconds = 0.02  # a whole reply takes ~4 s, every byte well within a second
    server.script("drip", "drip")
    result = make_llm(timeout=1, max_attempts=1, transport=transport).generate([chat("drip")])[0]
    assert result.error is not None and result.error.cause == "timeout"


# Wrong or confusing


def test_a_url_with_a_query_keeps_it_after_the_path(server, make_llm) -> None:
    llm = make_llm(url=f"{server.url}/v1?api-version=2024-02-01", api_key="k")
    assert llm.generate([chat("q")])[0].text == "Answer: q"
    assert server.requests[0]["path"] == "/v1/chat/completions?api-version=2024-02-01"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"url": "http://host/v1\r\nX-Injected: 1"}, "control character"),
    ({"url": "http://localhost:99999/v1"}, "invalid port"),
    ({"api_key": "sk-abc\n"}, "newline"),
])
def test_bad_urls_and_keys_are_refused_when_given(kwargs: dict[str, str], match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        AsyncLLM(api_provider="openai", cache_dir=tmp_path, **kwargs)
    assert "sk-abc" not in str(info.value)


def test_surrogate_text_is_named_before_anything_is_sent(server, make_llm) -> None:
    with pytest.raises(InvalidRequestError, match=r"request_list\[1\].*surrogate"):
        make_llm().generate([chat("fine"), chat("bad \udcc3 text")])
    assert server.count == 0


def test_numpy_integers_are_numbers_too(tmp_path: Path) -> None:
    numpy = pytest.importorskip("numpy", reason="numpy comes with pandas in the test extra")
    llm = AsyncLLM(api_provider="echo", cache_dir=tmp_path, max_concurrent_requests=numpy.int64(8),
                   max_requests_per_minute=numpy.float64(600), max_attempts=numpy.int32(3))
    assert (llm.max_concurrent_requests, llm.max_attempts) == (8, 3)


def test_a_corrupt_database_says_so(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / "cache.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match="damaged or not a cache"):
        ResponseCache(directory)


def test_a_403_from_a_url_server_says_what_to_check(server, make_llm) -> None:
    server.required_key = "Bearer right"
    other_host = server.url.replace("127.0.0.1", "localhost")
    sent_none = make_llm(url=f"{other_host}/v1").generate([chat("a")])[0].error
    assert "sent no key" in str(sent_none) and "pass api_key=" in str(sent_none)
    wrong = make_llm(url=f"{other_host}/v1", api_key="wrong").generate([chat("a")])[0].error
    assert "check the api_key passed" in str(wrong) and ".env" not in str(wrong)


def test_a_redirect_names_where_it_points(server, make_llm) -> None:
    server.raw["moved"] = (301, {"Location": "https://new.example/v1/chat/completions"}, b"")
    server.script("m", "raw:moved")
    error = make_llm(max_attempts=1).generate([chat("m")])[0].error
    assert "HTTP 301: redirected to https://new.example/v1/chat/completions: pass that URL as url=" in str(error)


def test_the_generate_magic_takes_a_timeout(server: FakeLLMServer, cache_dir: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.reset()
    shell.run_line_magic("load_ext", "dataformer_nb")
    shell.run_line_magic("config", f"Dataformer.cache_dir = {str(cache_dir)!r}")
    shell.run_line_magic("config", "Dataformer.progress = False")
    server.drip_seconds = 0.02  # the first reply would take ~4 s; the retry is answered at once
    server.script("slowly", "drip")
    out = shell.run_cell_magic("generate", "together --timeout 1.5 -f none", "slowly")
    assert out[0].text == "Answer: slowly"
    sent = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert sent[:2] == ["slowly", "slowly"]  # the dripping reply was given up on at the deadline


def test_credentials_in_a_url_go_into_the_header_and_never_show(server: FakeLLMServer, make_llm) -> None:
    secret = "pa55-url-SECRET"
    url = server.url.replace("http://127.0.0.1", f"http://me:{secret}@localhost") + "/v1"  # not TOGETHER_BASE_URL
    server.script("bad", "500")
    llm = make_llm(url=url, max_attempts=1)
    results = llm.generate([chat("good"), chat("bad"), chat("own", url=url)])
    assert results[0].text == "Answer: good" and results[1].error is not None
    sent = server.requests[0]
    assert sent["headers"]["Authorization"].startswith("Basic ") and sent["path"] == "/v1/chat/completions"
    shown = "".join([repr(results), str(results[1].error), json.dumps(results.to_records()),
                     results.to_pandas().to_string(), str(llm.limits()), str(results.summary)])
    assert secret not in shown and "me:***@" in json.dumps(results.to_records())
    with pytest.raises(ConfigurationError, match="user and password, and an API key"):
        make_llm(url=url, api_key="k").generate([chat("x")])


def test_a_server_that_refuses_everything_is_stopped_early(server: FakeLLMServer, make_llm) -> None:
    for i in range(300):
        server.script(f"q{i}", *["500"] * 5)
    results = make_llm(max_concurrent_requests=4).generate([chat(f"q{i}") for i in range(300)])
    assert all(r.error is not None for r in results)
    assert server.count < 100  # not 300 x 5 attempts
    assert results.summary.failures["stopped"] > 250
    stopped = next(r.error for r in results if r.error.cause == "stopped")
    assert "stopped sending after 50 failed attempts in a row" in str(stopped) and "HTTP 500" in str(stopped)


def test_a_busy_server_with_successes_between_failures_is_not_stopped(server: FakeLLMServer, make_llm) -> None:
    for i in range(0, 120, 2):
        server.script(f"q{i}", "500")  # 60 failures in all, more than the 50 in a row that would stop it
    results = make_llm(max_concurrent_requests=4).generate([chat(f"q{i}") for i in range(120)])
    assert all(r.ok for r in results) and server.count == 180


# Data loss


def test_a_full_disk_mid_run_returns_every_response_received_and_stops_sending(server, make_llm, monkeypatch) -> None:
    llm = make_llm(max_concurrent_requests=4)
    directory = llm.cache.directory
    count = [0]
    original = diskcache.Cache.add

    def add(self: diskcache.Cache, *args: object, **kwargs: object) -> object:
        count[0] += 1
        if count[0] >= 40:
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, *args, **kwargs)

    requests = [chat(f"q{i}") for i in range(400)]
    with monkeypatch.context() as patch, pytest.raises(
            CacheError, match=rf"{re.escape(str(directory))}.*disk is full.*\.results.*free disk space") as info:
        patch.setattr(diskcache.Cache, "add", add)
        llm.generate(requests)

    results = info.value.results
    assert results is llm.last_results and len(results) == 400
    received = [r for r in results if r.ok]
    assert len(received) == sum(server.completed.values())  # every reply the server sent is returned
    assert all(r.text == f"Answer: {r.request['messages'][0]['content']}" for r in received)
    assert server.count < 100  # sending stopped soon after the first failed write
    assert {r.error.cause for r in results if not r.ok} == {"not sent"}
    cached = sum(1 for r in requests if llm.cache_key(r) in llm.cache)
    before = server.count
    assert llm.generate(requests).texts == [f"Answer: q{i}" for i in range(400)]
    assert server.count - before == 400 - cached


def test_a_write_lock_held_by_another_process_never_stalls_sending(server, make_llm) -> None:
    llm = make_llm(max_concurrent_requests=4, timeout=2)
    llm.generate([chat("first")])
    holder = sqlite3.connect(llm.cache.directory / "cache.db", timeout=0, check_same_thread=False,
                             isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as another process writing a big group would
    all_sent = []

    def release_once_everything_is_sent() -> None:
        all_sent.append(server.wait_for_requests(21, timeout=30))
        holder.execute("COMMIT")

    releaser = threading.Thread(target=release_once_everything_is_sent)
    releaser.start()
    results = llm.generate([chat(f"q{i}") for i in range(20)])
    releaser.join()
    holder.close()
    assert all_sent == [True]  # every request went out while the cache was locked
    assert results.texts == [f"Answer: q{i}" for i in range(20)]
    assert server.count == 21  # none was sent twice
    assert all(llm.cache_key(chat(f"q{i}")) in llm.cache for i in range(20))


def test_a_disk_that_fills_at_commit_is_a_cache_error_with_the_results(server, make_llm, monkeypatch) -> None:
    """Where a full disk usually shows: the COMMIT of a group (WAL pages are written then)."""
    llm = make_llm(max_concurrent_requests=4)
    llm.generate([chat("first")])
    count = [0]
    original = diskcache.Cache.transact

    @contextlib.contextmanager
    def failing_commit(self: diskcache.Cache, retry: bool = False) -> Iterator[None]:
        count[0] += 1
        with original(self, retry=retry):
            yield
            if count[0] >= 3:  # fails as its COMMIT would; the transaction rolls back
                raise sqlite3.OperationalError("database or disk is full")

    requests = [chat(f"q{i}") for i in range(60)]
    with monkeypatch.context() as patch, pytest.raises(CacheError, match=r"disk is full.*\.results") as info:
        patch.setattr(diskcache.Cache, "transact", failing_commit)
        llm.generate(requests)
    received = [r for r in info.value.results if r.ok]
    assert len(received) == sum(server.completed.values()) - 1  # every reply of this run, "first" aside
    assert llm.generate(requests).texts == [f"Answer: q{i}" for i in range(60)]
