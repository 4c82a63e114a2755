"""Structured outputs: schema= asks for JSON of a shape, validates each reply, never caches a bad one."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Literal

import pytest
from pydantic import BaseModel

from dataformer_nb import ConfigurationError
from dataformer_nb.testing import FakeLLMServer

from .conftest import BOTH_STORES, chat

pytestmark = BOTH_STORES


class Person(BaseModel):
    name: str
    age: int


PERSON_SCHEMA = {"title": "Person", "type": "object", "required": ["name", "age"],
                 "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
GOOD, BAD = '{"name": "Ann", "age": 3}', '{"name": "Ann"}'


@pytest.fixture
def echo_json(server: FakeLLMServer) -> FakeLLMServer:
    server.reply_with_prompt = True  # the reply is the prompt: the test writes the JSON it wants back
    return server


def test_a_valid_reply_is_parsed_into_the_model_and_cached(echo_json: FakeLLMServer, make_llm) -> None:
    llm = make_llm()
    results = llm.generate([chat(GOOD)], schema=Person)
    assert results[0].parsed == Person(name="Ann", age=3)
    sent = echo_json.requests[-1]["body"]
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "Person", "schema": Person.model_json_schema()}}
    again = llm.generate([chat(GOOD)], schema=Person)
    assert again[0].cached and again[0].parsed == Person(name="Ann", age=3) and echo_json.count == 1
    assert llm.generate([chat(GOOD)]).summary.sent == 1  # without the schema: another request, another key


def test_an_invalid_reply_fails_is_retried_and_never_cached(echo_json: FakeLLMServer, make_llm) -> None:
    llm = make_llm(max_attempts=3)
    results = llm.generate([chat(BAD), chat(GOOD)], schema=Person)
    error = results[0].error
    assert error is not None and error.cause == "invalid output" and "age" in str(error)
    assert "does not follow schema Person" in str(error) and results[1].parsed.age == 3
    assert echo_json.asked[BAD] == 3  # retried like a malformed reply
    assert llm.cache_key(chat(BAD)) not in llm.cache and len(llm.cache) == 1


def test_a_json_schema_dict_validates_too(echo_json: FakeLLMServer, make_llm) -> None:
    results = make_llm(max_attempts=1).generate([chat(GOOD), chat(BAD)], schema=PERSON_SCHEMA)
    assert results[0].parsed == {"name": "Ann", "age": 3}
    assert results[1].error.cause == "invalid output" and "'age' is a required property" in str(results[1].error)


def test_parsed_fields_become_columns(echo_json: FakeLLMServer, make_llm) -> None:
    frame = make_llm().generate([chat(GOOD), chat('{"name": "Bo", "age": 5}')], schema=Person).to_pandas()
    assert list(frame["name"]) == ["Ann", "Bo"] and list(frame["age"]) == [3, 5]


def test_anthropic_is_asked_through_a_tool_and_its_input_is_the_reply(server: FakeLLMServer, make_llm) -> None:
    reply = {"id": "msg", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
             "content": [{"type": "tool_use", "id": "t1", "name": "Person", "input": {"name": "Cy", "age": 7}}],
             "usage": {"input_tokens": 5, "output_tokens": 9}}
    server.raw["tool"] = (200, {}, json.dumps(reply).encode())
    server.script("who", "raw:tool")
    llm = make_llm(api_provider="anthropic", api_key="sk-ant-test")
    results = llm.generate([chat("who")], schema=Person)
    assert results[0].parsed == Person(name="Cy", age=7)
    body = server.requests[-1]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": "Person"}
    assert body["tools"][0]["input_schema"] == Person.model_json_schema()


def test_ollama_gets_the_schema_as_its_format(echo_json: FakeLLMServer, make_llm) -> None:
    results = make_llm(api_provider="ollama").generate([chat(GOOD)], schema=PERSON_SCHEMA)
    assert results[0].parsed == {"name": "Ann", "age": 3}
    assert echo_json.requests[-1]["body"]["format"] == PERSON_SCHEMA


@pytest.mark.parametrize("schema", [Person(name="x", age=1), "Person", {"type": "no-such-type"}])
def test_a_bad_schema_is_refused_before_anything_is_sent(server: FakeLLMServer, make_llm, schema) -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        make_llm().generate([chat("x")], schema=schema)
    assert server.count == 0


def test_the_generate_magic_takes_a_schema_variable(ip, echo_json: FakeLLMServer) -> None:
    ip.user_ns["Person"] = Person
    ip.user_ns["people"] = [GOOD]
    ip.run_cell("%%generate --over people --schema Person -o out\n{item}")
    assert ip.user_ns["out"][0].parsed == Person(name="Ann", age=3)
    assert not ip.run_cell("%%generate --schema Nobody\nx").success


def test_a_json_schema_without_jsonschema_installed_says_what_to_install(make_llm, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r'pip install "dataformer_nb\[schema\]"'):
        make_llm().generate([chat("x")], schema=PERSON_SCHEMA)


def test_importing_dataformer_nb_does_not_import_pydantic_or_jsonschema() -> None:
    code = "import sys, dataformer_nb; print('pydantic' in sys.modules, 'jsonschema' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "False"]


def test_the_summary_counts_every_attempt_of_replies_that_fail_validation(echo_json: FakeLLMServer,
                                                                          make_llm, capsys) -> None:
    llm = make_llm(max_attempts=4)
    results = llm.generate([chat(BAD), chat(f"{BAD} ") , chat(GOOD)], schema=Person)
    summary = results.summary
    assert echo_json.count == 9  # 4 + 4 + 1 went over the wire
    assert (summary.sent, summary.failed) == (1, 2)
    assert (summary.requests_sent, summary.attempts, summary.invalid_replies) == (3, 9, 8)
    assert llm.last_results.summary.attempts == 9
    assert "over the wire: 3 requests, 9 attempts, 8 failed the schema" in str(summary)
    again = llm.generate([chat(BAD)], schema=Person)  # a re-run pays again, and says so
    assert (again.summary.sent, again.summary.attempts, again.summary.invalid_replies) == (0, 4, 4)


def test_a_failed_row_leaves_a_hole_not_a_float(echo_json: FakeLLMServer, make_llm) -> None:
    frame = make_llm(max_attempts=1).generate([chat(GOOD), chat(BAD)], schema=Person).to_pandas()
    assert str(frame["age"].dtype) == "Int64" and frame["age"][0] == 3 and frame["age"].isna()[1]
    assert frame["cause"].isna()[0] and frame["cause"][1] == "invalid output"
    assert "does not follow schema Person" in frame["error"][1]


def test_the_echo_provider_answers_a_schema_with_an_instance_of_it(make_llm) -> None:
    # Structured outputs, tried with no key and no network.
    from pydantic import BaseModel

    class Pet(BaseModel):
        name: str
        legs: int

    class Owner(BaseModel):
        name: str
        pets: list[Pet]
        kind: Literal["person", "company"]

    llm = make_llm(api_provider="echo", max_attempts=1)
    results = llm.generate([chat("Who owns Rex?")], schema=Owner)
    assert results.summary.failed == 0 and results[0].parsed == Owner(name="Echo: Who owns Rex?", pets=[],
                                                                       kind="person")
    with_bounds = {"type": "object", "required": ["n", "tags"], "properties": {
        "n": {"type": "integer", "minimum": 3}, "tags": {"type": "array", "minItems": 2, "items": {"type": "string"}}}}
    result, = llm.generate([chat("x")], schema=with_bounds)
    assert result.parsed == {"n": 3, "tags": ["Echo: x", "Echo: x"]}
