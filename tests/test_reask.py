"""Re-asking when a structured output fails validation (issue 28): the failed answer and the
validation error are sent back to the model, the valid answer is cached under the request's
own key, and every attempt is counted and priced. Unit tests over httpx.MockTransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from dataformer_nb import AsyncLLM, ConfigurationError

from .conftest import chat


class Person(BaseModel):
    name: str
    age: int


INVALID, VALID = {"name": "Ann"}, {"name": "Ann", "age": 3}


class Model:
    """A model that answers without ``age`` until it is shown why that fails (an assistant turn
    in the conversation), in OpenAI's or Anthropic's wire format."""

    def __init__(self, style: str, stubborn: bool = False) -> None:
        self.style, self.stubborn = style, stubborn
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        shown = any(m.get("role") == "assistant" for m in body["messages"])
        answer = VALID if shown and not self.stubborn else INVALID
        if self.style == "anthropic":
            return httpx.Response(200, json={"type": "message", "role": "assistant", "stop_reason": "tool_use",
                                             "content": [{"type": "tool_use", "id": "t", "name": "Person",
                                                          "input": answer}],
                                             "usage": {"input_tokens": 10, "output_tokens": 5}})
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant",
                                                                              "content": json.dumps(answer)}}],
                                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


def llm_for(model: Model, tmp_path: Any, **options: Any) -> AsyncLLM:
    provider = "anthropic" if model.style == "anthropic" else "openai"
    return AsyncLLM(api_provider=provider, api_key="sk-test-reask-1234", model="m", cache_dir=tmp_path,
                    transport=httpx.MockTransport(model), progress=False, verbose=False, retry_base_delay=0.001,
                    **options)


@pytest.mark.parametrize("style", ["openai", "anthropic"])
def test_a_failed_answer_is_shown_back_with_its_error_and_the_valid_one_is_cached_under_the_request(
        tmp_path, style: str) -> None:
    model = Model(style)
    llm = llm_for(model, tmp_path, prices={"m": (1.0, 2.0)})
    results = llm.generate([chat("Who is Ann?")], schema=Person, reask=2)
    assert results[0].parsed == Person(name="Ann", age=3) and results[0].error is None
    first, second = model.bodies
    assert second["messages"][:len(first["messages"])] == first["messages"]
    assistant, user = second["messages"][-2:]
    assert assistant["role"] == "assistant" and json.loads(assistant["content"]) == INVALID
    assert user["role"] == "user" and "age" in user["content"] and "Field required" in user["content"]
    summary = results.summary
    assert (summary.requests_sent, summary.attempts, summary.invalid_replies) == (1, 2, 1)
    assert (summary.prompt_tokens, summary.completion_tokens) == (20, 10)  # both replies were paid for
    assert summary.cost == pytest.approx((20 * 1.0 + 10 * 2.0) / 1e6)
    again = llm.generate([chat("Who is Ann?")], schema=Person)
    assert again[0].cached and again[0].parsed == Person(name="Ann", age=3) and len(model.bodies) == 2


def test_without_reask_a_failed_answer_is_sent_again_as_it_was(tmp_path) -> None:
    model = Model("openai")
    results = llm_for(model, tmp_path, max_attempts=3).generate([chat("Who is Ann?")], schema=Person)
    assert results[0].error is not None and results[0].error.cause == "invalid output"
    assert len(model.bodies) == 3 and all(body == model.bodies[0] for body in model.bodies)
    assert results.summary.attempts == 3 and results.summary.invalid_replies == 3


def test_re_asks_stop_at_their_limit_and_within_max_attempts(tmp_path) -> None:
    model = Model("openai", stubborn=True)
    results = llm_for(model, tmp_path, max_attempts=5).generate([chat("Who is Ann?")], schema=Person, reask=2)
    assert results[0].error is not None and "gave up after 5 attempts" in str(results[0].error)
    lengths = [len(body["messages"]) for body in model.bodies]
    assert lengths == [1, 3, 5, 5, 5]  # two re-asks, then the last conversation sent again
    model = Model("openai", stubborn=True)
    llm_for(model, tmp_path / "b", max_attempts=2).generate([chat("x")], schema=Person, reask=9)
    assert len(model.bodies) == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"reask": 1}, "goes with schema="),
    ({"reask": -1, "schema": Person}, "must be a whole number"),
    ({"reask": 1.5, "schema": Person}, "must be a whole number"),
    ({"reask": 1, "schema": Person, "batch": True}, "cannot go with batch=True"),
])
def test_bad_reask_arguments_are_refused_before_anything_is_sent(tmp_path, options, message) -> None:
    model = Model("openai")
    with pytest.raises(ConfigurationError, match=message):
        llm_for(model, tmp_path).generate([chat("x")], **options)
    assert model.bodies == []


def test_the_magic_re_asks_with_reask(ip, tmp_path) -> None:
    model = Model("openai")
    ip.user_ns["Person"] = Person
    ip.user_ns["my_llm"] = llm_for(model, tmp_path)
    ip.run_cell_magic("generate", "--llm my_llm --schema Person --reask 1 -o out", "Who is Ann?")
    assert ip.user_ns["out"][0].parsed == Person(name="Ann", age=3) and len(model.bodies) == 2
