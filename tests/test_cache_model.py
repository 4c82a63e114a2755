"""The cache against a model of what it promises: random histories, reopened caches (issue 18).

``pytest -m soak`` runs the long versions; a failure prints the seed that replays it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dataformer_nb import AsyncLLM, UnknownProjectWarning

from . import postgres
from .cache_model import CacheModel, check_consistency, check_team_consistency, key_of, request

PROMPTS = [f"q{i}" for i in range(12)] + ["Grüße", "emoji \U0001f600", 'quote "x"']
PROJECTS = ["alpha", "beta", "gamma", "delta"]


class CacheMachine(RuleBasedStateMachine):
    """Drives a real cache (through AsyncLLM and the echo provider) and the model side by side."""

    @initialize()
    def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="dataformer-model-")) / "cache"
        self.model = CacheModel()
        self.llm = self._open()

    def _open(self) -> AsyncLLM:
        return AsyncLLM(api_provider="echo", cache_dir=self.directory, progress=False, verbose=False)

    def teardown(self) -> None:
        if hasattr(self, "directory"):
            shutil.rmtree(self.directory.parent, ignore_errors=True)

    @rule(project=st.sampled_from(PROJECTS), prompts=st.lists(st.sampled_from(PROMPTS), max_size=6))
    def generate(self, project: str, prompts: list[str]) -> None:
        results = self.llm.generate([request(p) for p in prompts], project_name=project)
        sent, cached = self.model.generate(project, prompts)
        assert results.texts == [f"Echo: {p}" for p in prompts]
        assert (results.summary.sent, results.summary.cached, results.summary.failed) == (sent, cached, 0)

    @precondition(lambda self: self.model.users)
    @rule(data=st.data())
    def rerun_sends_nothing(self, data: st.DataObject) -> None:
        """Anything a project holds comes back from the cache, in any order."""
        project = data.draw(st.sampled_from(sorted({u for users in self.model.users.values() for u in users})))
        prompts = data.draw(st.permutations(self.model.held_by(project)))
        results = self.llm.generate([request(p) for p in prompts], project_name=project)
        assert self.model.generate(project, prompts) == (0, len(prompts))
        assert results.summary.sent == 0 and all(r.cached for r in results)

    @rule(names=st.lists(st.sampled_from(PROJECTS), min_size=1, max_size=3, unique=True),
          as_list=st.booleans())
    def clear(self, names: list[str], as_list: bool) -> None:
        known = [n for n in names if n in self.model.tokens]
        expected = self.model.clear(set(known))
        target = names if as_list or len(names) > 1 else names[0]
        if len(known) < len(names):
            with pytest.warns(UnknownProjectWarning):
                report = self.llm.clear_cache(target)
        else:
            report = self.llm.clear_cache(target)
        assert (report.responses_deleted, report.bytes_freed, report.kept_shared) == expected
        assert set(report.projects) == set(known)

    @rule()
    def clear_full(self) -> None:
        deleted = len(self.model.users)
        self.model = CacheModel()
        assert self.llm.clear_cache("FULL").responses_deleted == deleted

    @rule()
    def reopen(self) -> None:
        self.llm.cache.close()
        self.llm = self._open()

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        cache = self.llm.cache
        found = {p.name: (p.responses, p.bytes, p.prompt_tokens, p.completion_tokens, p.saved_tokens)
                 for p in cache.projects()}
        assert found == self.model.projects()
        keys = {i: key_of(self.llm, i) for i in self.model.users}
        assert all(keys[i] in cache for i in self.model.users)
        assert len(cache) == len(self.model.users)
        users = self._consistency()
        assert {k: v for k, v in users.items()} == {keys[i]: u for i, u in self.model.users.items()}

    def _consistency(self) -> dict[str, set[str]]:
        return check_consistency(self.directory)


class TeamCacheMachine(CacheMachine):
    """The same histories on the team store (PostgreSQL), a schema of its own per history."""

    @initialize()
    def start(self) -> None:
        self.url, self.schema = TEAM_URL, postgres.fresh_schema()
        super().start()

    def _open(self) -> AsyncLLM:
        os.environ["DATAFORMER_CACHE_SCHEMA"] = self.schema  # clean_env takes it away after the test
        return AsyncLLM(api_provider="echo", cache_dir=self.directory, cache_url=self.url, progress=False,
                        verbose=False)

    def teardown(self) -> None:
        super().teardown()
        if hasattr(self, "schema"):
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as db:
                db.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def _consistency(self) -> dict[str, set[str]]:
        return check_team_consistency(self.url, self.schema)


TEAM_URL = postgres.session_url()


# A failure prints the steps that cause it and @reproduce_failure(...) to replay them.
CacheMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None, print_blob=True)
test_cache_against_the_model = CacheMachine.TestCase
TeamCacheMachine.TestCase.settings = CacheMachine.TestCase.settings
test_team_cache_against_the_model = pytest.mark.skipif(TEAM_URL is None, reason=postgres.WHY_NOT)(
    TeamCacheMachine.TestCase)


class SoakCacheMachine(CacheMachine):
    pass


# Hypothesis runs fewer steps than stateful_step_count allows: 500 x 60 runs about 24,000 (counted).
SoakCacheMachine.TestCase.settings = settings(max_examples=500, stateful_step_count=60, deadline=None,
                                              print_blob=True)
test_cache_against_the_model_soak = pytest.mark.soak(SoakCacheMachine.TestCase)
