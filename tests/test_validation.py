"""Bad input: a clear error naming the culprit, raised before anything is sent."""

from __future__ import annotations

import math

import pytest

from dataformer_nb import (
    AsyncLLM,
    ConfigurationError,
    InvalidRequestError,
    UnknownProviderError,
)

from .conftest import chat


@pytest.mark.parametrize(("request_list", "match"), [
    ("hello", "request_list must be a list"),
    (["hello"], r"request_list\[0\] is a str, not a dict"),
    ([chat("ok"), {"prompt": "x"}], r"request_list\[1\] needs 'messages'"),
    ([{"messages": []}], "non-empty list"),
    ([{"messages": [{"content": "no role"}]}], r"\['messages'\]\[0\].*is not a message"),
    ([{"messages": ["just text"]}], "is not a message"),
    ([chat("x", temperature=math.nan)], "not JSON-serialisable"),
    ([chat("x", extra=object())], "not JSON-serialisable"),
    ([chat("x", url="ftp://example.com")], r"request_list\[0\]\['url'\]='ftp://example.com' is not an http"),
    ([chat("x", api_provider="nope")], "not a known provider: use one of openai, together"),
])
def test_bad_requests_raise_before_sending(server, make_llm, request_list, match) -> None:
    llm = make_llm()
    with pytest.raises((InvalidRequestError, ConfigurationError), match=match):
        llm.generate(request_list, clear_project_cache="full")
    assert server.count == 0


def test_bad_input_leaves_the_cache_untouched(server, make_llm) -> None:
    llm = make_llm()
    llm.generate([chat("keep me")], project_name="p")
    with pytest.raises(InvalidRequestError):
        llm.generate([chat("x"), 42], clear_project_cache="full")
    assert [p.name for p in llm.cache.projects()] == ["p"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"api_provider": "gpt"}, "api_provider='gpt' is not a known provider"),
    ({"url": "localhost:8000"}, "url='localhost:8000' is not an http"),
    ({"max_requests_per_minute": 0}, "max_requests_per_minute=0 must be a positive number"),
    ({"max_tokens_per_minute": -5}, "max_tokens_per_minute=-5"),
    ({"max_concurrent_requests": 2.5}, "positive whole number"),
    ({"gen_type": "image"}, "gen_type='image'"),
    ({"project_name": "../escape"}, "not a valid project name"),
    ({"sampling_params": [("temperature", 1)]}, "sampling_params=.* must be a dict"),
])
def test_bad_constructor_arguments_are_named(kwargs, match) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AsyncLLM(**kwargs)


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProviderError, match=r"anthropic.*ollama"):
        AsyncLLM(api_provider="nope")


def test_constructor_sends_nothing_and_creates_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PROJECT_NAME", "From_Env")
    llm = AsyncLLM(api_provider="together", cache_dir=tmp_path / "c")
    assert llm.project_name == "from_env" and not (tmp_path / "c").exists()
    assert AsyncLLM(project_name="Arg").project_name == "arg"  # argument > environment


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"clear_project_cache": 5}, "clear_project_cache=5 must be a project name, a list of names, or 'full'"),
    ({"clear_project_cache": ["ok", "../up"]}, "clear_project_cache='../up' is not a valid project name"),
    ({"project_name": "../x"}, "project_name='../x' is not a valid project name"),
    ({"project_name": ""}, "project_name='' is not a valid project name"),
    ({"cache_vars": ["not", "a", "dict"]}, "cache_vars=.* must be a dict"),
])
def test_bad_generate_arguments_raise_before_sending(server, make_llm, kwargs, match) -> None:
    llm = make_llm()
    llm.generate([chat("keep")], project_name="ok")
    with pytest.raises(ConfigurationError, match=match):
        llm.generate([chat("new")], **kwargs)
    assert server.count == 1 and [p.name for p in llm.cache.projects()] == ["ok"]
