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

from .conftest import chat
from .fake_llm_server import FakeLLMServer

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
