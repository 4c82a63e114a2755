"""Batch mode against a model of what it promises, over random histories: nothing is paid twice.

Calls submit (``wait=False``) and collect (``batch=True``) random sets of requests, restart the
client, clear the whole cache, while the fake service holds its batches or answers them. After
every step the service must have received each request exactly as many times as the model says
it had to be sent: once, and again only after the cache that held its answer was cleared.
``pytest -m soak`` runs the long version.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dataformer_nb import AsyncLLM
from dataformer_nb.testing import FakeBatchServer

PROMPTS = [f"q{i}" for i in range(10)]
PROJECTS = ["alpha", "beta"]
prompt_sets = st.lists(st.sampled_from(PROMPTS), min_size=1, max_size=5, unique=True)


def request(prompt: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": prompt}]}


class BatchMachine(RuleBasedStateMachine):
    @initialize(protocol=st.sampled_from(["openai", "anthropic", "together"]))
    def start(self, protocol: str) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="dataformer-batch-model-")) / "cache"
        self.server = FakeBatchServer(hold=True, process_seconds=0,
                                      dialect="together" if protocol == "together" else "openai").start()
        self.protocol = protocol
        self.released = False
        self.cached: set[str] = set()
        self.batches: list[set[str]] = []  # the model's pending batches
        self.submissions: Counter[str] = Counter()
        self.llm = self._open()

    def _open(self) -> AsyncLLM:
        return AsyncLLM(api_provider=self.protocol, url=self.server.url, api_key="k", model="m",
                        cache_dir=self.directory, batch_poll_interval=0.01, progress=False, verbose=False)

    def teardown(self) -> None:
        if hasattr(self, "server"):
            self.server.close()
            shutil.rmtree(self.directory.parent, ignore_errors=True)

    def _expect_submitted(self, prompts: list[str]) -> None:
        new = [p for p in prompts if p not in self.cached and not any(p in b for b in self.batches)]
        if new:
            self.batches.append(set(new))
            self.submissions.update(new)

    @rule(prompts=prompt_sets, project=st.sampled_from(PROJECTS))
    def submit(self, prompts: list[str], project: str) -> None:
        results = self.llm.generate([request(p) for p in prompts], project_name=project, batch=True, wait=False)
        assert [r.cached for r in results] == [p in self.cached for p in prompts]
        assert all(r.error.cause == "batch pending" for r in results if not r.cached)
        self._expect_submitted(prompts)

    @precondition(lambda self: self.released)
    @rule(prompts=prompt_sets, project=st.sampled_from(PROJECTS))
    def collect(self, prompts: list[str], project: str) -> None:
        results = self.llm.generate([request(p) for p in prompts], project_name=project, batch=True)
        assert [r.text for r in results] == [f"Answer: {p}" for p in prompts]
        assert [r.cached for r in results] == [p in self.cached for p in prompts]
        before = len(self.batches)
        awaited = [b for b in self.batches if b & set(prompts)]  # collected whole, other calls' requests too
        self._expect_submitted(prompts)
        for done in awaited + self.batches[before:]:  # and the batch this call submitted
            self.cached |= done
            self.batches.remove(done)

    @precondition(lambda self: not self.released)
    @rule()
    def release(self) -> None:
        self.server.release()
        self.released = True

    @rule()
    def restart(self) -> None:
        self.llm.cache.close()
        self.llm = self._open()

    @rule()
    def clear_full(self) -> None:
        self.llm.clear_cache("full")
        self.cached = set()

    @invariant()
    def paid_once(self) -> None:
        if not hasattr(self, "server"):
            return
        received = Counter(self._prompt(line) for job in self.server.jobs.values() for line in job.lines)
        assert received == self.submissions
        pending = sum(job.requests for job in self.llm.batches() if not job.collected)
        assert pending == sum(len(b) for b in self.batches)

    def _prompt(self, line: dict[str, object]) -> str:
        params = line["body"] if "body" in line else line["params"]
        return params["messages"][-1]["content"]  # type: ignore[index]


BatchMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=12, deadline=None, print_blob=True)
test_batches_against_the_model = BatchMachine.TestCase


class SoakBatchMachine(BatchMachine):
    pass


SoakBatchMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None,
                                              print_blob=True)
test_batches_against_the_model_soak = pytest.mark.soak(SoakBatchMachine.TestCase)
