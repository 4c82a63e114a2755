"""Issue 24, hardening round 2: what comes from outside (a server, a file, the user's input) is
read in one place per kind, checked there, and fails only its own request or row.

One test (at least) per item of the issue, named after what it guards; each fails without its fix.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

import pytest

from dataformer_nb import AsyncLLM, ConfigurationError, DataformerWarning
from dataformer_nb.testing import FakeLLMServer

from .conftest import chat

SECRET = "sk-echoed-SECRET-7f3a9c21"

# 3. .env discovery


def _nobody() -> int:
    import pwd

    return pwd.getpwnam("nobody").pw_uid


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown to another user needs root")
def test_a_dotenv_another_user_planted_in_a_parent_is_ignored(tmp_path: Path, monkeypatch, server) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL")
    planted = tmp_path / ".env"
    planted.write_text("OPENAI_BASE_URL=http://attacker.invalid/v1\n")
    os.chown(planted, _nobody(), -1)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.warns(DataformerWarning, match="another user owns it"):
        route = AsyncLLM(api_provider="openai", cache_dir=tmp_path / "c")._preparer(None)._route(0, chat("a"))
    assert "attacker" not in route.endpoint and route.endpoint.startswith("https://api.openai.com")


def test_a_dotenv_everyone_may_write_is_ignored(tmp_path: Path, monkeypatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PROJECT_NAME=planted\n")
    dotenv.chmod(0o666)
    with pytest.warns(DataformerWarning, match="everyone may write it"):
        assert AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c").project_name != "planted"


def test_no_dotenv_is_read_above_the_project_root(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ".env").write_text("PROJECT_NAME=above\n")
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    monkeypatch.chdir(project / "notebooks")
    assert AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c").project_name != "above"
    (project / ".env").write_text("PROJECT_NAME=mine\n")  # the project's own is found
    assert AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c").project_name == "mine"


def test_a_dotenv_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"PROJECT_NAME=a\nOPENAI_API_KEY=caf\xe9\n")
    with pytest.raises(ConfigurationError, match=r"\.env is not valid UTF-8 \(line 2.*save it as UTF-8"):
        AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c")


def test_a_dotenv_that_is_a_fifo_is_ignored_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".env")
    with pytest.warns(DataformerWarning, match="not a regular file"):
        AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c")


# 4. A key from .env is checked as api_key= is, and headers never show it


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("bad", ['"sk-abc\\ndef"', "sk-caf\u00e9"])
def test_a_key_from_dotenv_with_a_newline_or_non_ascii_is_refused_up_front(tmp_path: Path, server, monkeypatch,
                                                                            transport: str, bad: str) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY")
    (tmp_path / ".env").write_text(f"TOGETHER_API_KEY={bad}\n", encoding="utf-8")
    llm = AsyncLLM(api_provider="together", cache_dir=tmp_path / "c", transport=transport, progress=False)
    with pytest.raises(ConfigurationError, match=r"TOGETHER_API_KEY .*set the key alone") as info:
        llm.generate([chat("a")])
    ours = [frame for frame, _ in traceback.walk_tb(info.tb) if "dataformer_nb" in frame.f_code.co_filename]
    shown = "".join(repr(frame.f_locals) for frame in ours)
    assert ours and "sk-abc" not in shown and "sk-caf" not in shown  # not even in a verbose traceback's locals
    assert server.count == 0


def test_request_headers_hide_the_key_in_their_repr(server, make_llm) -> None:
    llm = make_llm(api_key=SECRET)
    route = llm._preparer(None)._route(0, chat("a"))
    assert SECRET not in repr(route.headers) and "'Authorization': '***'" in repr(route.headers)
    assert route.headers["Authorization"] == f"Bearer {SECRET}"


# 5. A server echoing a key or password


@pytest.mark.parametrize("echo", ["bad key {k}_x", "Bearer%20{k}", "key={k}-", "{k}", "Bearer+{k}!"])
def test_a_key_echoed_in_any_encoding_is_redacted_everywhere(server: FakeLLMServer, make_llm, echo: str,
                                                             tmp_path: Path) -> None:
    from urllib.parse import quote

    text = echo.format(k=SECRET if "%20" not in echo else quote(SECRET, safe=""))
    server.raw["echo"] = (500, {}, json.dumps({"error": {"message": text}}).encode())
    server.script("p", "raw:echo")
    results = make_llm(api_key=SECRET, max_attempts=1).generate([chat("p")])
    assert results[0].error is not None and "***" in str(results[0].error)
    results.to_jsonl(tmp_path / "out.jsonl")
    for shown in (str(results[0].error), json.dumps(results.to_records()), (tmp_path / "out.jsonl").read_text()):
        assert SECRET not in shown and quote(SECRET, safe="") not in shown


def test_a_url_password_echoed_in_a_401_is_redacted_and_named(server: FakeLLMServer, make_llm) -> None:
    password = "hunter2-secret-pw"
    server.raw["deny"] = (401, {}, json.dumps({"error": {"message": f"wrong password {password}"}}).encode())
    server.script("p", "raw:deny")
    host = server.url.replace("http://127.0.0.1", f"http://ann:{password}@localhost")  # no provider key goes there
    error = make_llm(url=f"{host}/v1").generate([chat("p")])[0].error
    assert error is not None and error.status == 401
    assert password not in str(error) and "***" in str(error)
    assert "check the user and password in url=" in str(error) and "sent no key" not in str(error)


def test_a_reply_holding_the_key_is_neither_cached_nor_shown(server: FakeLLMServer, make_llm) -> None:
    body = json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": f"your key is {SECRET}"}, "finish_reason": "stop"}],
    }).encode()
    server.raw["leak"] = (200, {}, body)
    server.script("p", "raw:leak")
    llm = make_llm(api_key=SECRET)
    result = llm.generate([chat("p")])[0]
    assert result.error is not None and result.error.cause == "key in reply" and SECRET not in str(result.error)
    assert llm.cache_key(chat("p")) not in llm.cache


# 1. A batch result line of the wrong shape fails only its own request

from dataformer_nb.testing import FakeBatchServer  # noqa: E402

BATCH_KEY = "sk-batch-hardening-SECRET-1"


def batch_llm(server: FakeBatchServer, tmp_path: Path, protocol: str) -> AsyncLLM:
    server.dialect = "openai"
    return AsyncLLM(api_provider=protocol, url=server.url, api_key=BATCH_KEY, model="m", cache_dir=tmp_path / "c",
                    batch_poll_interval=0.01, progress=False, verbose=False)


HOSTILE_LINES = {
    "openai": [
        '{{"custom_id": "{id}", "response": {{"status_code": 500, "body": {{"error": "boom"}}}}, "error": null}}',
        '{{"custom_id": "{id}", "response": "oops", "error": "x"}}',
        '{{"custom_id": "{id}", "response": {{"status_code": 200, "body": 7}}, "error": null}}',
        '{{"custom_id": "{id}", "error": 5}}',
        "[" * 100_000 + "]" * 100_000,
        '{{"custom_id": "{id}", "response": {{"status_code": 500, "body": {{"error": {{"message": '
        '"\\u001b]52;c;ZXZpbA==\\u0007\\u001b[31mred"}}}}}}, "error": null}}',
    ],
    "anthropic": [
        '{{"custom_id": "{id}", "result": {{"type": "errored", "error": "x"}}}}',
        '{{"custom_id": "{id}", "result": {{"type": "succeeded", "message": [1]}}}}',
        '{{"custom_id": "{id}", "result": {{"type": 7}}}}',
        '{{"custom_id": {{"a": 1}}, "result": {{}}}}',
        "[" * 100_000 + "]" * 100_000,
    ],
}


@pytest.mark.parametrize(("protocol", "hostile"), [(p, line) for p, lines in HOSTILE_LINES.items() for line in lines])
def test_one_hostile_result_line_fails_only_its_request(tmp_path: Path, protocol: str, hostile: str) -> None:
    with FakeBatchServer(process_seconds=0, key=BATCH_KEY) as server:
        llm = batch_llm(server, tmp_path, protocol)
        requests = [chat(f"question {i}") for i in range(4)]
        victim = llm.cache_key(requests[1])
        server.rewrite_line = lambda custom_id, line: hostile.format(id=custom_id) if custom_id == victim else line
        results = llm.generate(requests, batch=True)
        assert [r.text for r in results if r.error is None] == [f"Answer: question {i}" for i in (0, 2, 3)]
        if results[1].error is not None:  # a line it cannot read, or an error the service reported
            assert "\x1b" not in str(results[1].error) and "\x07" not in str(results[1].error)
            assert "None" not in str(results[1].error).replace("null", "")
        assert all(llm.cache_key(requests[i]) in llm.cache for i in (0, 2, 3))  # the paid lines are kept
        server.rewrite_line = None
        again = llm.generate(requests, batch=True)
        assert all(r.error is None for r in again) and again.summary.cached == 3


# 13, 14. Batch service replies: capped whatever the transport, any shape a BatchError

@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_gzip_bomb_status_reply_is_capped(tmp_path: Path, transport: str) -> None:
    import gzip

    from dataformer_nb import BatchError

    bomb = gzip.compress(b" " * 80 * 2**20)  # 80 MiB of spaces, ~80 KB on the wire
    with FakeBatchServer(process_seconds=0, key=BATCH_KEY, hold=True) as server:
        server.rewrite_reply = lambda method, path, status, reply: (
            (200, {"Content-Encoding": "gzip"}, bomb) if method == "GET" and "/batches/" in path else None)
        llm = batch_llm(server, tmp_path, "openai")
        llm.transport = transport
        with pytest.raises(BatchError, match="passed"):
            llm.generate([chat("a")], batch=True)
        assert len(llm.batches()) == 1  # the batch stays recorded: a re-run collects it


STATUS_REPLIES = [
    {"id": "batch_1", "status": "completed", "errors": {"data": {"x": 1}}, "request_counts": {"total": 1}},
    {"id": "batch_1", "status": "completed", "errors": 5, "request_counts": [1]},
    {"id": "batch_1", "status": ["x"], "request_counts": {"total": "many", "completed": 1e300}, "progress": "x"},
    {"id": "batch_1", "status": "in_progress", "progress": float("inf")},
]


@pytest.mark.parametrize("reply", STATUS_REPLIES)
def test_a_status_reply_of_any_shape_is_read_or_refused_with_a_batch_error(reply: dict) -> None:
    from dataformer_nb.batchapi import AnthropicBatches, BatchStatus, OpenAIBatches

    for kind in (OpenAIBatches, AnthropicBatches):
        status = kind(None, "", "", {}, "", str)._status(reply)  # type: ignore[arg-type]
        assert isinstance(status, BatchStatus) and status.total >= 0 and 0 <= (status.fraction or 0) <= 1


def test_a_deep_status_reply_is_not_json_we_read(tmp_path: Path) -> None:
    from dataformer_nb import BatchError

    deep = b"[" * 100_000 + b"]" * 100_000
    with FakeBatchServer(process_seconds=0, key=BATCH_KEY) as server:
        server.rewrite_reply = lambda method, path, status, reply: (
            (200, {}, deep) if method == "GET" and "/batches/" in path else None)
        with pytest.raises(BatchError, match=r"ended the wait|not a JSON object"):
            batch_llm(server, tmp_path, "openai").generate([chat("a")], batch=True)


def test_a_batch_list_with_garbled_metadata_does_not_stop_the_look_up(tmp_path: Path) -> None:
    with FakeBatchServer(process_seconds=0, key=BATCH_KEY) as server:
        llm = batch_llm(server, tmp_path, "openai")
        server.lose_create_reply = True  # created, but the reply is lost: the next run looks it up
        with pytest.raises(Exception):  # noqa: B017 - the lost reply's error, whatever it is
            llm.generate([chat("a")], batch=True)

        def garble(method: str, path: str, status: int, reply: object):
            if method == "GET" and path.split("?")[0].rstrip("/").endswith("/batches") and isinstance(reply, dict):
                items = [{**b, "metadata": "oops"} for b in reply.get("data", [])]
                return 200, {}, json.dumps({**reply, "data": [{"metadata": "oops", "id": 5}, *items]}).encode()
            return None

        server.rewrite_reply = garble
        results = llm.generate([chat("a")], batch=True)  # found by its input file, not created again
        assert results[0].text == "Answer: a" and server.creations == 1


# Property tests: every reader of a batch service's words gives a result or the library's error

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["custom_id", "response", "error", "status_code", "body", "result", "type", "message",
                         "code", "status", "request_counts", "total", "completed", "failed", "errors", "data",
                         "progress", "output_file_id", "processing_status", "succeeded", "x"]) | st.text(max_size=8),
        children, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON, st.sampled_from(["openai", "anthropic"]))
def test_any_json_result_line_gives_a_line_result(value: object, protocol: str) -> None:
    from dataformer_nb.batchapi import LineResult, _anthropic_line, _openai_line

    try:
        line = json.dumps(value).encode()
    except ValueError:
        return
    read = (_openai_line if protocol == "openai" else _anthropic_line)(line)
    assert isinstance(read, LineResult) and isinstance(read.custom_id, str)
    assert (read.body is None) != (read.error is None) or read.error is not None
    if read.error is not None:
        assert read.error.isprintable() or "\n" in read.error


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["status", "request_counts", "errors", "error", "progress", "output_file_id",
                                        "error_file_id", "processing_status", "id"]), JSON, max_size=6))
def test_any_json_status_gives_a_status(reply: dict) -> None:
    from dataformer_nb.batchapi import AnthropicBatches, OpenAIBatches

    for kind in (OpenAIBatches, AnthropicBatches):
        status = kind(None, "", "", {}, "", str)._status(reply)  # type: ignore[arg-type]
        assert status.total >= 0 and status.done >= 0 and status.failed >= 0 and isinstance(status.state, str)


# 11. Rate-limit headers that lie never hold a request past max_wait

def _ok_reply(text: str = "fine", usage: object = None) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        **({"usage": usage} if usage is not None else {})}).encode()


def _within(seconds: float, call):
    """``call()`` on a thread, which must end within ``seconds`` (a hang guard, not a speed claim)."""
    import threading

    out: dict[str, object] = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "still waiting: a lying header held the request"
    return out["value"]


# No limit stated, so no refill rate: the quota is whole again only at the (absurd) reset.
LYING_HEADERS = [
    ("openai", {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1000000000s"}),
    ("together", {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "999999999"}),
]


@pytest.mark.parametrize(("provider", "headers"), LYING_HEADERS)
def test_lying_rate_limit_headers_never_hold_a_request_past_max_wait(server, make_llm, provider: str,
                                                                     headers: dict) -> None:
    server.raw["liar"] = (200, headers, _ok_reply())
    server.script("first", "raw:liar")
    llm = make_llm(api_provider=provider, api_key="sk-test-lying-headers", max_wait=5, max_concurrent_requests=1)
    results = _within(60, lambda: llm.generate([chat("first"), chat("second")]))
    assert results[0].text == "fine"
    error = results[1].error
    assert error is not None and error.cause == "rate limited" and "max_wait=5" in str(error)
    assert "0 left" in str(error)  # the absurd limit is named
    later = _within(60, lambda: llm.generate([chat("third")]))  # the same AsyncLLM fails fast, never hangs
    assert later[0].error is not None and later[0].error.cause == "rate limited"
    plan = llm.plan([chat("fourth")])
    assert plan.seconds is not None and 0 < plan.seconds <= 86400  # clamped to a day, and said


def test_an_absurd_usage_neither_overflows_the_cost_nor_holds_the_tpm_bucket(server, make_llm) -> None:
    server.raw["huge"] = (200, {}, _ok_reply(usage={"prompt_tokens": 10**400, "completion_tokens": 5,
                                                    "total_tokens": 10**31}))
    server.script("first", "raw:huge")
    llm = make_llm(max_tokens_per_minute=6000, prices={"m": (1.0, 2.0)}, model="m", max_wait=5)
    with pytest.warns(DataformerWarning, match="usage says"):
        results = _within(60, lambda: llm.generate([chat("first"), chat("second")]))
    assert [r.error for r in results] == [None, None]
    assert results.summary.prompt_tokens < 10**9 and results.summary.cost is not None
    assert llm.cache_key(chat("first")) in llm.cache  # the response itself is kept


# 2. Export never overwrites, truncates or follows a link

def _cache_with_project(tmp_path: Path):
    from dataformer_nb import ResponseCache
    from dataformer_nb.cache import NewResponse

    cache = ResponseCache(tmp_path / "cache")
    cache.put_many([NewResponse.with_usage("k" * 64, b'{"choices": []}', None, "a prompt")], "questions")
    return cache


def test_export_never_overwrites_or_truncates_unless_asked(tmp_path: Path) -> None:
    from dataformer_nb import CacheError

    cache = _cache_with_project(tmp_path)
    mine = tmp_path / "questions.jsonl"
    mine.write_text("my own 30 KB of questions\n" * 1000)
    before = mine.read_bytes()
    with pytest.raises(CacheError, match="exists: pass overwrite=True"):
        cache.export("questions", mine)
    for project in ("unknown", "no/such"):
        with pytest.raises((CacheError, ConfigurationError)):
            cache.export(project, mine, overwrite=True)
    assert mine.read_bytes() == before  # a failed export leaves the file as it was
    assert cache.export("questions", mine, overwrite=True) == 1 and mine.read_text().count("\n") == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_never_writes_through_a_symlink(tmp_path: Path) -> None:
    from dataformer_nb import CacheError

    cache = _cache_with_project(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "link.jsonl").symlink_to(victim)
    with pytest.raises(CacheError, match="symbolic link"):
        cache.export("questions", tmp_path / "link.jsonl", overwrite=True)
    assert victim.read_text() == "keep me"


def test_the_panels_export_picks_a_new_name(tmp_path: Path, monkeypatch) -> None:
    from dataformer_nb.widget import CachePanel

    cache = _cache_with_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "questions.jsonl").write_text("mine\n")
    panel = CachePanel(cache)
    browser = panel.browse("questions")
    assert browser.export() == "questions-2.jsonl"
    assert (tmp_path / "questions.jsonl").read_text() == "mine\n"
    assert (tmp_path / "questions-2.jsonl").read_text().count("\n") == 1


# 7, 16. A tampered cache: a bad row is a miss (with one warning), a bad name never a name

import sqlite3  # noqa: E402


def _tamper(directory: Path, key: str, *, tag: str | None = None, value: bytes | None = None) -> None:
    with sqlite3.connect(directory / "cache.db") as db:
        if tag is not None:
            db.execute("UPDATE Cache SET tag = ? WHERE key = ?", (tag, key))
        if value is not None:
            db.execute("UPDATE Cache SET value = ? WHERE key = ?", (value, key))


BAD_TAGS = ['{"projects":["dataformer"],"size":5},{"projects":["x"],"size":1}', '{"projects":5,"size":5}',
            "not json", '{"projects":["dataformer"],"size":"5"}',
            '{"projects":["dataformer"],"size":5,"created":1e300}', "[" * 50_000 + "]" * 50_000,
            # the payer and the cost a record keeps since 8128b49
            '{"projects":["dataformer"],"size":5,"by":5}', '{"projects":["dataformer"],"size":5,"by":null}',
            '{"projects":["dataformer"],"size":5,"cost":"x"}', '{"projects":["dataformer"],"size":5,"cost":1e300}']


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_a_damaged_response_record_is_a_miss_then_replaced(tmp_path: Path, tag: str) -> None:
    llm = AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c", progress=False, verbose=False)
    llm.generate([chat("a"), chat("b")])
    _tamper(llm.cache.directory, "response:" + llm.cache_key(chat("a")), tag=tag)
    with pytest.warns(DataformerWarning, match="damaged record"):
        again = llm.generate([chat("a"), chat("b")])
    assert [r.cached for r in again] == [False, True] and again[0].text == again[1].text.replace("b", "a")
    third = llm.generate([chat("a"), chat("b")])  # the new response replaced the damaged row
    assert all(r.cached for r in third)
    with pytest.warns(DataformerWarning, match="damaged"):
        _tamper(llm.cache.directory, "response:" + llm.cache_key(chat("a")), tag=tag)
        assert len(llm.cache.entries("dataformer")) == 1  # browsing skips it
        llm.cache.clear("dataformer")


def test_a_missing_token_count_in_a_record_reads_as_zero(tmp_path: Path) -> None:
    llm = AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c", progress=False, verbose=False)
    llm.generate([chat("a")])
    _tamper(llm.cache.directory, "response:" + llm.cache_key(chat("a")), tag='{"projects":["dataformer"],"size":5}')
    assert llm.generate([chat("a")])[0].cached
    assert llm.cache.entries("dataformer")[0].prompt_tokens == 0


@pytest.mark.parametrize("projects", [7, ["../../victim", "dataformer"], "x"])
def test_project_names_read_from_the_cache_are_checked(tmp_path: Path, projects: object) -> None:
    llm = AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c", progress=False, verbose=False)
    llm.generate([chat("a")])
    with sqlite3.connect(llm.cache.directory / "cache.db") as db:
        (meta,) = db.execute("SELECT value FROM Cache WHERE key = 'meta'").fetchone()
        meta = json.loads(meta)
        meta["projects"] = projects
        db.execute("UPDATE Cache SET value = ? WHERE key = 'meta'", (json.dumps(meta),))
    with pytest.warns(DataformerWarning, match="left out"):
        names = [p.name for p in llm.cache.projects()]
        assert "../../victim" not in names
        assert llm.generate([chat("a")])[0].cached  # and the cache still serves


@pytest.mark.parametrize("record", [b'{"entries":"x"}', b"[1]", b'{"entries":1,"bytes":2,"last_used":1e300}'])
def test_a_damaged_project_record_starts_again_from_zero(tmp_path: Path, record: bytes) -> None:
    llm = AsyncLLM(api_provider="echo", cache_dir=tmp_path / "c", progress=False, verbose=False)
    llm.generate([chat("a")])
    _tamper(llm.cache.directory, "project:dataformer", value=record)
    with pytest.warns(DataformerWarning, match="is damaged"):
        assert llm.cache.projects() == []
        llm.generate([chat("b")])
    assert [p.responses for p in llm.cache.projects()] == [1]


def test_0_1_rows_of_the_wrong_shape_or_with_bad_names_are_dropped_by_the_migration(tmp_path: Path) -> None:
    import diskcache

    directory = tmp_path / "old"
    old = diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**62, disk_min_file_size=2**30)
    old.set("r:" + "a" * 64, b'{"response":"a string","projects":["q"],"size":3}')
    old.set("r:" + "b" * 64, b'{"response":{"choices":[]},"projects":["../../evil"],"size":3}')
    old.set("p:../../evil", b'{"entries":1,"bytes":3,"last_used":1}')
    old.set("p:q", b'{"entries":1,"bytes":3,"last_used":1}')
    old.close()
    from dataformer_nb import ResponseCache

    with pytest.warns(DataformerWarning, match="dropped"):
        cache = ResponseCache(directory)
    assert [p.name for p in cache.projects()] == ["q"] and len(cache) == 0


# 9, 15. Batch records: no link followed, no FIFO waited on, no garbled field trusted

def _ledger(tmp_path: Path) -> Path:
    directory = tmp_path / "c" / "batches"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    from dataformer_nb import CacheError

    outside = tmp_path / "outside"
    (_ledger(tmp_path) / ".submit.lock").symlink_to(outside)
    with FakeBatchServer(process_seconds=0, key=BATCH_KEY) as server:
        llm = batch_llm(server, tmp_path, "openai")
        with pytest.raises(CacheError, match=r"submit\.lock"):
            llm.generate([chat("a")], batch=True)
        assert server.creations == 0
    assert not outside.exists()


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "fifo", "huge"])
def test_a_record_that_is_not_a_regular_small_file_is_skipped(tmp_path: Path, kind: str) -> None:
    record = _ledger(tmp_path) / "0123456789abcdef0123456789abcdef.json"
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "huge":
        record.write_bytes(b" " * 2_000_000)
    else:
        record.symlink_to("/dev/zero")
    llm = AsyncLLM(api_provider="openai", api_key="sk-x", cache_dir=tmp_path / "c", progress=False)
    with pytest.warns(DataformerWarning, match="not a batch record"):
        assert _within(30, llm.batches) == []


GARBLED = [{"created": 1e300}, {"created": float("nan")}, {"done": "x"}, {"requests": -1}, {"project": "../x"},
           {"provider": 5}, {"output_file_id": "../../etc"}, {"checked": "soon"}]


@pytest.mark.parametrize("change", GARBLED)
def test_a_tampered_record_is_skipped_with_a_warning_everywhere(tmp_path: Path, change: dict) -> None:
    from dataformer_nb.widget import CachePanel

    with FakeBatchServer(process_seconds=0, key=BATCH_KEY, hold=True) as server:
        llm = batch_llm(server, tmp_path, "openai")
        llm.generate([chat("a")], batch=True, wait=False)
        (path,) = _ledger(tmp_path).glob("*.json")
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, **change}))
        with pytest.warns(DataformerWarning, match="not a batch record"):
            assert llm.batches() == []
        with pytest.warns(DataformerWarning, match="not a batch record"):
            CachePanel(llm)


# 10. A creation answered with an id the client refuses: the record is kept, nothing paid twice

def test_a_refused_batch_id_holds_its_requests_until_released(tmp_path: Path) -> None:
    from dataformer_nb import BatchError

    with FakeBatchServer(process_seconds=0, key=BATCH_KEY) as server:
        def hostile_id(method: str, path: str, status: int, reply: object):
            if method == "POST" and path.rstrip("/").endswith("/batches") and isinstance(reply, dict):
                return 200, {}, json.dumps({**reply, "id": "../../x"}).encode()
            return None

        server.rewrite_reply = hostile_id
        llm = batch_llm(server, tmp_path, "openai")
        with pytest.raises(BatchError, match=r"held .* llm\.forget_batch"):
            llm.generate([chat("a"), chat("b")], batch=True)
        assert server.creations == 1
        again = llm.generate([chat("a"), chat("b")], batch=True)  # not submitted again
        assert server.creations == 1 and [r.error.cause for r in again] == ["batch held", "batch held"]
        held = llm.batches()
        assert len(held) == 1 and held[0].status == "held"
        server.rewrite_reply = None
        local = held[0].id.split()[1].rstrip(")")
        llm.forget_batch(local)  # the user says it was never created
        third = llm.generate([chat("a"), chat("b")], batch=True)
        assert server.creations == 2 and [r.text for r in third] == ["Answer: a", "Answer: b"]


# 6. A model's answer is shown, never run

def test_generate_shows_html_in_an_answer_as_text_not_markup(ip, server, monkeypatch) -> None:
    server.reply_with_prompt = True  # the answer is the prompt: the test writes the hostile answer
    shown: list[dict] = []
    monkeypatch.setattr(ip.display_pub, "publish", lambda data, *a, **k: shown.append(data))
    hostile = "<img src=x onerror=alert(document.domain)> and `a < b` [x](javascript:alert(1))"
    assert ip.run_cell(f"%%generate\n{hostile}").success
    markdown = next(b["text/markdown"] for b in shown if "text/markdown" in b)
    assert "<img" not in markdown and "&lt;img src=x onerror=alert(document.domain)&gt;" in markdown
    assert "`a < b`" in markdown  # code keeps its text: Markdown shows it as it is
    assert "javascript:" not in markdown


@pytest.mark.parametrize("text", ["<script>alert(1)</script>", "```\n<b>\n```\n<i>", "`` ` <x> ``<y>", "<" * 5000])
def test_safe_markdown_never_leaves_a_tag_outside_code(text: str) -> None:
    import re as regex

    from dataformer_nb._format import safe_markdown

    out = safe_markdown(text)
    outside = regex.sub(r"```.*?```|`[^`]*`", "", out, flags=regex.DOTALL)
    assert "<" not in outside


# 8. No schema ever causes a network request; 17. a validator's own exception fails only its reply

@pytest.mark.parametrize("ref", ["REMOTE", "#", "#/$defs/missing"])
def test_a_schema_ref_is_never_fetched_and_a_bad_one_is_refused_up_front(server: FakeLLMServer, make_llm,
                                                                          ref: str) -> None:
    schema = {"title": "T", "type": "object",
              "properties": {"a": {"$ref": f"{server.url}/remote.json" if ref == "REMOTE" else ref}}}
    if ref == "#":
        schema = {"title": "T", "$ref": "#"}
    with pytest.raises(ConfigurationError, match=r"\$ref|refers to itself"):
        make_llm().generate([chat('{"a": 1}')], schema=schema)
    assert server.count == 0  # neither the request nor the schema's URL


def test_a_validator_raising_anything_fails_only_its_reply(server: FakeLLMServer, make_llm) -> None:
    from pydantic import BaseModel, field_validator

    class Picky(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def no_bob(cls, value: str) -> str:
            if value == "bob":
                raise KeyError("bob")  # not a ValueError: pydantic lets it through
            if value == "eve":
                raise RuntimeError("eve")
            return value

    server.reply_with_prompt = True
    results = make_llm(max_attempts=1).generate([chat('{"name": "bob"}'), chat('{"name": "eve"}'),
                                                 chat('{"name": "ann"}')], schema=Picky)
    assert [r.error.cause if r.error else r.parsed.name for r in results] == ["invalid output", "invalid output",
                                                                              "ann"]
    assert "KeyError" in str(results[0].error) and "RuntimeError" in str(results[1].error)


# 18. Input files: a BOM, another encoding, a huge field, a deep line: each named with its fix

def test_a_csv_with_a_bom_as_excel_saves_it_reads_its_first_column(ip, server, tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_bytes("q,n\r\nWhy?,1\r\n".encode("utf-8-sig"))
    assert ip.run_cell(f"%%generate --over-file {tmp_path / 'q.csv'}\n{{q}} {{n}}").success
    assert [r["body"]["messages"][-1]["content"] for r in server.requests] == ["Why? 1"]


@pytest.mark.parametrize(("name", "content", "says"), [
    ("latin.csv", "q\nCaf\u00e9\n".encode("latin-1"), "line 2 is not valid utf-8.*--encoding"),
    ("bad.jsonl", b'{"q": "a"}\n{"q": "\xff"}\n', "line 2 is not valid utf-8"),
    ("huge.csv", b"q\n" + b"x" * 200_000 + b"\n", "line 2: field larger than field limit"),
    ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1 is nested too deeply"),
])
def test_an_unreadable_input_file_names_the_line_and_the_fix(ip, server, tmp_path: Path, capsys, name: str,
                                                             content: bytes, says: str) -> None:
    import re as regex

    (tmp_path / name).write_bytes(content)
    result = ip.run_cell(f"%%generate --over-file {tmp_path / name}\n{{q}}")
    out = capsys.readouterr()
    shown = out.out + out.err + str(result.error_in_exec or "")
    assert regex.search(says, shown), shown[-500:]
    assert server.count == 0


def test_the_encoding_option_reads_a_latin1_file(ip, server, tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes("q\nCaf\u00e9\n".encode("latin-1"))
    assert ip.run_cell(f"%%generate --over-file {tmp_path / 'latin.csv'} --encoding latin-1\n{{q}}").success
    assert [r["body"]["messages"][-1]["content"] for r in server.requests] == ["Caf\u00e9"]


# 19. A full or read-only disk is not a damaged cache

@pytest.mark.parametrize(("said", "expected"), [
    ("database or disk is full", "no space left"), ("attempt to write a readonly database", "read-only"),
    ("file is not a database", "damaged or not a cache"),
])
def test_opening_a_cache_says_what_is_wrong(tmp_path: Path, monkeypatch, said: str, expected: str) -> None:
    import sqlite3 as sql

    import diskcache

    from dataformer_nb import CacheError, ResponseCache

    error = sql.DatabaseError if "not a database" in said else sql.OperationalError

    def refuse(*args: object, **kwargs: object) -> None:
        raise error(said)

    monkeypatch.setattr(diskcache, "Cache", refuse)
    with pytest.raises(CacheError, match=expected) as info:
        ResponseCache(tmp_path / "c")
    assert ("move it away" in str(info.value)) == (expected == "damaged or not a cache")


# SIGKILL mid-run: what the re-run sends twice is at most what was in flight and one commit group

KILL_N, KILL_AT, CONCURRENCY = 2000, 1000, 32


def sent_twice_after_a_kill(tmp_path: Path, url: str) -> tuple[int, int]:
    """Kill a run of KILL_N requests once the server has seen KILL_AT; re-run it. (Sent twice, the
    server's requests in flight at the kill.)"""
    import signal
    import subprocess
    import sys

    from .bench_server import server_stats

    before = server_stats(url)["requests"]
    child = subprocess.Popen([sys.executable, str(Path(__file__).parent / "kill_run.py"), url, str(tmp_path / "c"),
                              str(KILL_N)])
    try:
        while (stats := server_stats(url))["requests"] - before < KILL_AT:
            assert child.poll() is None, "the run ended before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    in_flight = stats["active"]
    received = server_stats(url)["requests"] - before
    llm = AsyncLLM(api_provider="openai", url=f"{url}/v1", api_key="sk-kill-test", model="m", cache_dir=tmp_path / "c",
                   max_concurrent_requests=CONCURRENCY, progress=False, verbose=False)
    results = llm.generate([{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(KILL_N)])
    assert results.summary.failed == 0 and results.texts[-1] == f"Echo: question {KILL_N - 1}"
    return received + results.summary.sent - KILL_N, in_flight


@pytest.mark.parametrize("run", range(2))
def test_a_sigkill_mid_run_sends_again_at_most_what_was_in_flight_and_one_group(tmp_path: Path, run: int) -> None:
    from .bench_server import serve

    for url in serve("--latency", "0.02"):
        twice, in_flight = sent_twice_after_a_kill(tmp_path, url)
        # in flight at the server, or answered but not yet committed: a commit group holds the replies
        # that came during one write, fewer than one round of CONCURRENCY at 20 ms a reply
        assert twice <= in_flight + CONCURRENCY, (twice, in_flight)


# Property tests of the other readers: arbitrary input gives a result or the library's error

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON, st.sampled_from(["openai", "anthropic", "ollama"]), st.sampled_from(["chat", "text", "embedding"]))
def test_any_json_reply_is_read_or_is_an_unreadable_reply(value: object, style: str, gen_type: str) -> None:
    from dataformer_nb.providers import UNREADABLE_REPLY, check_reply, to_openai

    try:
        response = to_openai(style, gen_type, value)  # type: ignore[arg-type]
        check_reply(gen_type, response)  # type: ignore[arg-type]
    except UNREADABLE_REPLY:
        return  # retried as a malformed reply, never cached
    assert isinstance(response, dict)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(JSON.map(lambda v: json.dumps(v, allow_nan=True)), st.text(max_size=30)), max_size=6))
def test_any_stored_record_is_a_record_or_none(tags: list[str]) -> None:
    from dataformer_nb.cache.records import _decode_records, _entry_record

    records = [_entry_record(r) for r in _decode_records(tags)]
    assert len(records) == len(tags)
    for record in records:
        if record is not None:  # what every reader of records then relies on
            assert all(isinstance(p, str) for p in record["projects"])
            assert all(type(record[f]) is int and record[f] >= 0 for f in ("size", "prompt_tokens",
                                                                          "completion_tokens"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_server_error_text_is_shown_printable(content: bytes) -> None:
    from dataformer_nb._format import server_message

    shown = server_message(content)
    assert len(shown) <= 303 and "\x1b" not in shown and "\x07" not in shown
    assert all(c.isprintable() or c in "\t\n" for c in shown)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_dotenv_bytes_give_settings_or_a_configuration_error(tmp_path: Path, content: bytes) -> None:
    from dataformer_nb.settings import _dotenv_cache, environment

    (tmp_path / ".env").write_bytes(content)
    _dotenv_cache.clear()
    try:
        assert isinstance(environment(), dict)
    except ConfigurationError as exc:
        assert ".env" in str(exc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([".jsonl", ".csv"]))
def test_any_input_file_gives_rows_or_a_usage_error(tmp_path: Path, content: bytes, suffix: str) -> None:
    from IPython.core.error import UsageError

    from dataformer_nb.magics import _file_items

    (tmp_path / f"in{suffix}").write_bytes(content)
    try:
        rows = list(_file_items(str(tmp_path / f"in{suffix}")).items)
    except UsageError as exc:
        assert "--over-file" in str(exc)
    else:
        assert all(isinstance(fields, dict) for fields, _ in rows)


def test_escapes_in_a_servers_error_text_never_reach_the_result(server: FakeLLMServer, make_llm) -> None:
    text = "boom \x1b]52;c;ZXZpbA==\x07\x1b[31mred\x1b[0m \x00end"
    server.raw["escape"] = (500, {}, json.dumps({"error": {"message": text}}).encode())
    server.script("p", "raw:escape")
    error = str(make_llm(max_attempts=1).generate([chat("p")])[0].error)
    assert "boom" in error and "red" in error and "end" in error
    assert not any(c in error for c in "\x1b\x07\x00")
