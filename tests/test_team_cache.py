"""The team cache on PostgreSQL (issue 27): what only it has. The local store's behaviour tests run
on it too (tests/test_cache.py, and the modules marked BOTH_STORES)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dataformer_nb import AsyncLLM, CacheError, CachePanel, ConfigurationError, DataformerWarning, ResponseCache
from dataformer_nb.cache import NewResponse
from dataformer_nb.cache.copy import copy_store
from dataformer_nb.cache.postgres import MIGRATIONS, PostgresCache
from dataformer_nb.testing import FakeBatchServer, FakeLLMServer
from dataformer_nb.testing.llm_server import prompt_of

from .conftest import TOGETHER_KEY, chat, said

RESPONSE = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
PASSWORD = "s3cret-Pa55word"


def with_password(url: str) -> str:
    """``url`` with a password (the test server trusts every connection: any password works)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


@pytest.fixture
def cache(team_url: tuple[str, str]) -> Iterator[PostgresCache]:
    store = PostgresCache(*team_url)
    yield store
    store.close()


def all_text(url: str, schema: str) -> str:
    """Every value of every row of the schema's tables, as text."""
    with psycopg.connect(url) as db:
        tables = [t for (t,) in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
        return "\n".join(str(row) + "".join(bytes(v).decode("utf-8", "replace") for v in row if isinstance(v, bytes))
                         for table in tables for row in db.execute(f'SELECT * FROM "{schema}"."{table}"'))


def test_a_run_uses_the_team_cache_and_neither_key_nor_password_lands_anywhere(
        server: FakeLLMServer, team_url: tuple[str, str], tmp_path, monkeypatch) -> None:
    url, schema = team_url
    monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", schema)
    llm = AsyncLLM(api_provider="together", api_key=TOGETHER_KEY, cache_url=with_password(url),
                   cache_dir=tmp_path / "local", progress=False, verbose=False)
    first = llm.generate([chat(f"q{i}") for i in range(5)], project_name="a")
    again = AsyncLLM(api_provider="together", cache_url=with_password(url), cache_dir=tmp_path / "other",
                     progress=False, verbose=False).generate([chat(f"q{i}") for i in range(5)], project_name="b")
    assert [r.text for r in first] == [r.text for r in again] and all(r.cached for r in again)
    assert server.count == 5  # the second machine paid for nothing
    assert not (tmp_path / "local").exists() or not any((tmp_path / "local").rglob("*.db"))
    shown = repr(llm) + repr(llm.cache) + llm.cache.location + CachePanel(llm).header.value
    stored = all_text(url, schema)
    assert "Answer: q3" in stored and "q3" in stored
    for secret in (PASSWORD, TOGETHER_KEY):
        assert secret not in shown and secret not in stored


def test_an_unreachable_server_fails_fast_naming_the_host_and_never_the_password() -> None:
    with pytest.raises(CacheError) as info:
        PostgresCache(f"postgresql://someone:{PASSWORD}@127.0.0.1:9/teamdb")
    message = str(info.value)
    assert "127.0.0.1:9/teamdb" in message and "cannot be reached" in message and PASSWORD not in message
    assert info.value.__suppress_context__ and PASSWORD not in str(info.value.__context__)  # nor in the traceback


@pytest.mark.parametrize("url", ["mysql://x@h/db", 5, "127.0.0.1:5432"])
def test_a_url_that_is_not_postgresql_is_a_configuration_error(url, tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL URL"):
        AsyncLLM(api_provider="echo", cache_url=url, cache_dir=tmp_path)


@pytest.mark.parametrize("schema", ["", "a-b", "1abc", "a;drop", "x" * 64, "é"])
def test_a_schema_that_is_not_a_plain_name_is_refused(team_url: tuple[str, str], schema: str) -> None:
    with pytest.raises(ConfigurationError, match="plain name"):
        PostgresCache(team_url[0], schema)


def test_migrations_are_named_run_once_and_a_newer_store_is_refused(cache: PostgresCache,
                                                                    team_url: tuple[str, str]) -> None:
    url, schema = team_url
    PostgresCache(url, schema).close()  # opened again: nothing to do
    with psycopg.connect(url) as db:
        names = [n for (n,) in db.execute(f'SELECT name FROM "{schema}".migrations ORDER BY name')]
        assert names == [name for name, _ in MIGRATIONS]
        db.execute(f'INSERT INTO "{schema}".migrations VALUES (%s, 0)', ("9999_from_the_future",))
    with pytest.raises(CacheError, match="newer dataformer_nb"):
        PostgresCache(url, schema)


def test_a_damaged_row_is_a_miss_and_the_new_response_replaces_it(cache: PostgresCache,
                                                                   team_url: tuple[str, str]) -> None:
    url, schema = team_url
    cache.put("k", RESPONSE, "p")
    with psycopg.connect(url) as db:
        db.execute(f"UPDATE \"{schema}\".responses SET body = 'not json'::bytea WHERE key = 'k'")
    with pytest.warns(DataformerWarning, match="damaged row"):
        assert cache.lookup(["k"], "p") == {}
    cache.put("k", RESPONSE, "p")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert json.loads(cache.lookup(["k"], "p")["k"]) == RESPONSE


def test_a_panel_refresh_sees_what_another_process_wrote(cache: PostgresCache, team_url: tuple[str, str]) -> None:
    url, schema = team_url
    panel = CachePanel(cache)
    code = ("import sys\nfrom dataformer_nb.cache.postgres import PostgresCache\n"
            "PostgresCache(sys.argv[1], sys.argv[2]).put('k', {'choices': []}, 'outside')")
    subprocess.run([sys.executable, "-c", code, url, schema], check=True, timeout=60)
    assert "outside" not in panel.project_rows
    panel.refresh_button.click()
    assert "outside" in panel.project_rows and schema in panel.header.value


RIVAL = """
import sys
from dataformer_nb import AsyncLLM
url, base, n, cache_dir, project = sys.argv[1:6]
llm = AsyncLLM(url=base, api_key=f"key-of-{project}", cache_url=url, cache_dir=cache_dir, progress=False, verbose=False,
               max_concurrent_requests=8, retry_base_delay=0.01)
results = llm.generate([{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(int(n))],
                       project_name=project)
assert results.texts == [f"Answer: q{i}" for i in range(int(n))], results.summary
print(results.summary.sent, results.summary.cached, flush=True)
"""


def start_rival(url: str, schema: str, server: FakeLLMServer, n: int, tmp_path, name: str,
                lease: float = 30) -> subprocess.Popen[str]:
    env = {**os.environ, "DATAFORMER_CACHE_SCHEMA": schema, "DATAFORMER_CLAIM_LEASE": str(lease)}
    return subprocess.Popen([sys.executable, "-c", RIVAL, url, server.url + "/v1", str(n), str(tmp_path / name), name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_four_kernels_asking_for_the_same_requests_at_once_pay_for_each_once(
        server: FakeLLMServer, team_url: tuple[str, str], tmp_path) -> None:
    url, schema = team_url
    PostgresCache(url, schema).close()  # the schema exists before the race (creating it is tested above)
    rivals = [start_rival(url, schema, server, 2000, tmp_path, f"p{i}") for i in range(4)]
    outputs = [rival.communicate(timeout=300) for rival in rivals]
    assert [rival.returncode for rival in rivals] == [0] * 4, [err[-2000:] for _, err in outputs]
    assert server.count == 2000 and max(server.asked.values()) == 1  # every request sent exactly once
    sent = [int(out.split()[0]) for out, _ in outputs]
    assert sum(sent) == 2000  # and every kernel got all 2,000 right (asserted in each)


def test_a_kernel_killed_midway_costs_at_most_its_requests_in_flight(
        server: FakeLLMServer, team_url: tuple[str, str], tmp_path) -> None:
    url, schema = team_url
    PostgresCache(url, schema).close()
    victim = start_rival(url, schema, server, 2000, tmp_path, "victim", lease=5)
    server.kill_pid = victim.pid
    server.script("q1000", "kill")  # the victim dies when it sends this one, with others in flight
    assert server.wait_for_requests(1, 60)  # it has claimed every request: the others wait for it
    rivals = [start_rival(url, schema, server, 2000, tmp_path, f"p{i}", lease=5) for i in range(3)]
    outputs = [rival.communicate(timeout=300) for rival in rivals]
    victim.wait(timeout=60)
    server.release()
    assert victim.returncode == -9 and [rival.returncode for rival in rivals] == [0] * 3, \
        [err[-2000:] for _, err in outputs]
    twice = {prompt for prompt, n in server.asked.items() if n > 1}
    assert max(server.asked.values()) <= 2 and len(server.asked) == 2000 and twice
    # Sent twice only what the victim had sent and not stored: its requests in flight when it died.
    victims = {prompt_of(r["body"]) for r in server.requests
               if r["headers"].get("Authorization") == "Bearer key-of-victim"}
    with psycopg.connect(url) as db:
        stored = {p for (p,) in db.execute(f'SELECT prompt FROM "{schema}".responses WHERE paid_by = %s', ("victim",))}
    assert stored and twice <= victims - stored, (sorted(twice - victims), sorted(twice & stored))


def fill_local(directory, n: int) -> ResponseCache:
    """A local cache of ``n`` responses over two projects (a third of them shared), with tokens."""
    local = ResponseCache(directory)
    for start in range(0, n, 5000):
        local.put_many([NewResponse(f"k{i:06d}", json.dumps({"choices": [{"message": {"content": f"a{i}"}}]}).encode(),
                                    3, 5, f"q{i}", 0.001) for i in range(start, min(start + 5000, n))], "a")
        shared = [i for i in range(start, min(start + 5000, n)) if i % 3 == 0]
        local.lookup([f"k{i:06d}" for i in shared], "b")
    return local


def same_contents(one, other) -> None:
    """The same responses, memberships and project accounting in two stores."""
    rows = {key: (body, sorted(record["projects"])) for page in one.all_rows() for key, body, record in page}
    theirs = {key: (body, sorted(record["projects"])) for page in other.all_rows() for key, body, record in page}
    assert rows == theirs
    fields = ("responses", "bytes", "prompt_tokens", "completion_tokens", "saved_tokens")
    assert ({p.name: tuple(getattr(p, f) for f in fields) for p in one.projects()}
            == {p.name: tuple(getattr(p, f) for f in fields) for p in other.projects()})
    assert ({p.name: p.cost and round(p.cost, 9) for p in one.projects()}
            == {p.name: p.cost and round(p.cost, 9) for p in other.projects()})


def test_cache_copy_goes_either_way_and_a_second_copy_changes_nothing(team_url, tmp_path) -> None:
    local = fill_local(tmp_path / "local", 300)
    team = PostgresCache(*team_url)
    for _ in range(2):  # the second run adds no tokens twice, duplicates no membership
        assert copy_store(local, team).responses == 300
    same_contents(local, team)
    back = ResponseCache(tmp_path / "back")
    copy_store(team, back)
    same_contents(team, back)
    assert set(team.lookup([f"k{i:06d}" for i in range(300)], "c")) == {f"k{i:06d}" for i in range(300)}


def test_cache_copy_of_100k_responses_killed_halfway_and_run_again_loses_and_doubles_nothing(
        team_url, tmp_path) -> None:
    url, schema = team_url
    local = fill_local(tmp_path / "local", 100_000)
    command = [sys.executable, "-m", "dataformer_nb", "cache", "copy", str(tmp_path / "local"), url, "--schema", schema]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    for line in first.stdout:  # killed once half of it is in
        if line.strip() == "50,000 responses":
            first.kill()
            break
    first.wait(timeout=60)
    team = PostgresCache(url, schema)
    assert first.returncode == -9 and 50_000 <= len(team) < 100_000
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "copied 100,000 responses" in done.stdout, done.stderr
    same_contents(local, team)
    keys = [f"k{i:06d}" for i in range(100_000)]
    assert len(team.lookup(keys, "a")) == 100_000  # every key hits


OUTAGE_RUN = """
import sys, warnings
from dataformer_nb import AsyncLLM
url, base, cache_dir = sys.argv[1:4]
llm = AsyncLLM(url=base, api_key="k", cache_url=url, cache_dir=cache_dir, progress=False, verbose=False,
               max_concurrent_requests=16)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    results = llm.generate([{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(2000)])
assert results.texts == [f"Answer: q{i}" for i in range(2000)], results.summary
print(results.summary.sent, results.summary.cached, [str(w.message) for w in seen], flush=True)
"""


def test_the_database_stopped_mid_run_and_started_again_loses_nothing(
        server: FakeLLMServer, private_postgres, tmp_path) -> None:
    url = private_postgres.url
    PostgresCache(url).close()  # its tables exist before the run
    server.script("q600", "hold")  # the run is mid-way, with replies arriving, when the database stops
    run = subprocess.Popen([sys.executable, "-c", OUTAGE_RUN, url, server.url + "/v1", str(tmp_path / "d")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.holding.wait(120)
    private_postgres.stop()  # pg_ctl stop -m immediate, as a crash
    assert server.wait_for_requests(1500, 120)  # sending went on while it was away
    private_postgres.start()
    server.release()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    assert out.startswith("2000 0 ") and "written when it was back" in out
    store = PostgresCache(url)
    assert len(store) == 2000  # every reply received is in the store
    sent = server.count
    again = AsyncLLM(url=server.url + "/v1", api_key="k", cache_url=url, cache_dir=tmp_path / "e", progress=False,
                     verbose=False).generate([chat(f"q{i}") for i in range(2000)])
    assert server.count == sent and all(r.cached for r in again)  # a re-run sends nothing


def test_each_project_records_who_used_it_and_the_tables_show_it(team_url, monkeypatch, tmp_path) -> None:
    url, schema = team_url
    for user, prompt in (("alice", "x"), ("bob", "y"), ("alice", "z")):
        monkeypatch.setenv("DATAFORMER_USER", user)
        monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", schema)
        AsyncLLM(api_provider="echo", cache_url=url, cache_dir=tmp_path, progress=False,
                 verbose=False).generate([chat(prompt)], project_name="shared")
    (info,) = PostgresCache(url, schema).projects()
    assert info.users == ("alice", "bob")
    panel = CachePanel(PostgresCache(url, schema))
    assert [c.value for c in panel.rows.children[0].children][-2] == "used by"
    assert [c.value for c in panel.project_rows["shared"].children[:-1]][-1] == "alice, bob"
    text = panel._repr_mimebundle_()["text/plain"]  # what %dataformer projects and saved notebooks show
    assert "used by" in text and "alice, bob" in text


# Batch records in the team store: any member resumes and collects; two machines submit once.

BATCH_KEY = "sk-team-batch-KEY-4411"


def team_batch_llm(service: FakeBatchServer, url: str, cache_dir: Path, **options: Any) -> AsyncLLM:
    """A member's AsyncLLM: its own cache_dir (its own machine), the team's store (its schema from
    DATAFORMER_CACHE_SCHEMA, which each test sets)."""
    settings: dict[str, Any] = {"url": service.url, "api_key": BATCH_KEY, "model": "m", "cache_dir": cache_dir,
                                "cache_url": url, "batch_poll_interval": 0.01, "progress": False, "verbose": False}
    return AsyncLLM(**{**settings, **options})


@pytest.fixture
def batch_service() -> Iterator[FakeBatchServer]:
    with FakeBatchServer(hold=True, process_seconds=0, key=BATCH_KEY) as service:
        yield service


def test_a_batch_one_member_submitted_is_resumed_and_collected_by_another(
        batch_service: FakeBatchServer, team_url: tuple[str, str], tmp_path: Path, monkeypatch) -> None:
    url, schema = team_url
    monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", schema)
    requests = [chat(f"team batch {i}") for i in range(6)]
    alice = team_batch_llm(batch_service, url, tmp_path / "alice")
    submitted = alice.generate(requests, project_name="alice_p", batch=True, wait=False)
    assert all(r.pending for r in submitted) and batch_service.creations == 1
    assert not (tmp_path / "alice" / "batches").exists()  # the record is in the team store, not on her disk
    bob = team_batch_llm(batch_service, url, tmp_path / "bob")
    assert [job.id for job in bob.batches()] == list(batch_service.jobs)  # he sees her batch
    batch_service.release()
    collected = bob.generate(requests, project_name="bob_p", batch=True)
    assert batch_service.creations == 1 and batch_service.uploads == 1  # resumed, not submitted again
    assert [r.text for r in collected] == [f"Answer: team batch {i}" for i in range(6)]
    assert [job.done for job in alice.batches()] == [6]  # she sees it collected
    again = alice.generate(requests, project_name="alice_p", batch=True)
    assert again.summary.cached == 6 and batch_service.creations == 1


def test_two_machines_submitting_the_same_call_at_once_make_one_batch(
        batch_service: FakeBatchServer, team_url: tuple[str, str], tmp_path: Path, monkeypatch) -> None:
    import threading

    url, schema = team_url
    monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", schema)
    requests = [chat(f"rival batch {i}") for i in range(4)]
    third = PostgresCache(url, schema).submit_lock()
    assert third.try_acquire()  # as a third machine submitting would
    results: list[Any] = []
    with said("waiting for another run") as waiting:
        members = [team_batch_llm(batch_service, url, tmp_path / name) for name in ("m1", "m2")]
        runs = [threading.Thread(target=lambda llm=llm: results.append(llm.generate(requests, batch=True)))
                for llm in members]
        for run in runs:
            run.start()
        assert waiting.acquire(timeout=60) and waiting.acquire(timeout=60), "a member did not wait for the lock"
        assert batch_service.uploads == 0
        third.release()
        batch_service.release()
        for run in runs:
            run.join(60)
    assert batch_service.creations == 1 and len(results) == 2
    assert all([r.text for r in result] == [f"Answer: rival batch {i}" for i in range(4)] for result in results)


def test_batch_records_rows_are_read_as_untrusted_and_hold_no_key(
        batch_service: FakeBatchServer, team_url: tuple[str, str], tmp_path: Path, monkeypatch) -> None:
    url, schema = team_url
    monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", schema)
    llm = team_batch_llm(batch_service, url, tmp_path / "m")
    llm.generate([chat("one")], batch=True, wait=False)
    assert BATCH_KEY not in all_text(url, schema)
    with psycopg.connect(url, autocommit=True) as db:
        (record,) = db.execute(f'SELECT record FROM "{schema}".batch_records').fetchone()
        good = json.loads(bytes(record))
        rows = [("garbled", b"{not json", None),
                ("hostile", json.dumps({**good, "local": "hostile", "id": "../../files/x"}).encode(), b"[]"),
                ("another", json.dumps({**good, "local": "elsewhere"}).encode(), b"[]"),
                ("huge", b" " * 2_000_000, None)]
        for local, body, keys in rows:
            db.execute(f'INSERT INTO "{schema}".batch_records VALUES (%s, %s, %s)', (local, body, keys))
    with pytest.warns(DataformerWarning, match="not a batch record") as warned:
        listed = llm.batches()
    assert len(listed) == 1 and len(warned) == 4
    assert all("team cache at" in str(w.message) and "delete that row" in str(w.message) for w in warned)


JOURNAL_RUN = """
import sys
import dataformer_nb.cache.journal as journal
from dataformer_nb import AsyncLLM
journal.MEMORY_BOUND = 50
url, base, cache_dir = sys.argv[1:4]
llm = AsyncLLM(url=base, api_key="k", cache_url=url, cache_dir=cache_dir, progress=False, verbose=False,
               max_concurrent_requests=16)
llm.generate([{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(2000)])
"""


def test_a_kernel_killed_while_the_database_is_away_loses_at_most_what_it_held_in_memory(
        server: FakeLLMServer, private_postgres, tmp_path: Path) -> None:
    import signal

    url = private_postgres.url
    PostgresCache(url).close()
    server.script("q600", "hold")
    run = subprocess.Popen([sys.executable, "-c", JOURNAL_RUN, url, server.url + "/v1", str(tmp_path / "d")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.holding.wait(120)
        private_postgres.stop()
        assert server.wait_for_requests(1500, 120)  # ~900 replies received while the database is away
        answered = server.count - 16 - 1  # at most 16 in flight, one held
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=60)
    finally:
        private_postgres.start()
        server.release()
    spilled = list((tmp_path / "d" / "journal").glob("*.jsonl"))
    assert spilled, "nothing was spilled to the journal"
    before = server.count
    again = AsyncLLM(url=server.url + "/v1", api_key="k", cache_url=url, cache_dir=tmp_path / "d", progress=False,
                     verbose=False).generate([chat(f"q{i}") for i in range(2000)])
    assert again.texts == [f"Answer: q{i}" for i in range(2000)]
    resent = server.count - before
    assert resent <= 2000 - answered + 50, (resent, answered)  # what it held in memory, no more
    assert not list((tmp_path / "d" / "journal").glob("*.jsonl"))  # replayed, then removed


def test_a_key_with_a_comma_never_reads_the_rows_of_the_keys_it_joins(cache: PostgresCache) -> None:
    cache.put_many([("x1", RESPONSE), ("x2", RESPONSE)], "p")
    assert cache.get("x1,x2") is None and "x1,x2" not in cache  # pages go to the server comma-joined
    assert set(cache.lookup(["x1", "x2", "x3"], "p")) == {"x1", "x2"}


def test_a_role_that_owns_only_its_schema_is_enough_and_one_that_owns_nothing_is_told_why(
        team_url: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    url, schema = team_url
    if "postgres@" not in url:
        pytest.skip("the test server's URL names no user to replace with the test's role")
    role = f"dfnb_{uuid.uuid4().hex[:10]}"  # no superuser; may not create schemas (PUBLIC may not by default)
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
        db.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
    as_role = url.replace("postgres@", f"{role}@", 1)
    try:
        monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", schema)
        llm = AsyncLLM(api_provider="echo", cache_url=as_role, cache_dir=tmp_path, progress=False, verbose=False)
        first = llm.generate([chat("a"), chat("b")], project_name="p")
        again = llm.generate([chat("a"), chat("b")], project_name="q")
        assert first.summary.sent == 2 and again.summary.cached == 2  # its migrations ran as the schema's owner
        monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", f"{schema}_x")  # one it does not own and may not create
        with pytest.raises(CacheError, match=r"may not create it .*AUTHORIZATION .*a schema this role owns"):
            AsyncLLM(api_provider="echo", cache_url=as_role, cache_dir=tmp_path).generate([chat("a")])
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            db.execute(f'DROP OWNED BY "{role}"')
            db.execute(f'DROP ROLE "{role}"')


def test_tls_settings_in_the_url_reach_the_connection(team_url: tuple[str, str], tmp_path: Path) -> None:
    url, schema = team_url
    with psycopg.connect(url) as db:
        ssl_on = db.execute("SHOW ssl").fetchone() == ("on",)
    required = url + ("&" if "?" in url else "?") + "sslmode=require"
    if ssl_on:
        store = PostgresCache(required, schema)
        with store._transaction("read") as cur:
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone() == (True,)
        store.close()
    else:
        with pytest.raises(CacheError, match="SSL was required"):
            PostgresCache(required, schema)
    PostgresCache(url + ("&" if "?" in url else "?") + "sslmode=disable", schema).close()


def test_a_batch_recorded_in_files_by_0_2_beside_a_team_cache_is_resumed_after_the_upgrade(
        batch_service: FakeBatchServer, team_url: tuple[str, str], tmp_path: Path, monkeypatch) -> None:
    from dataformer_nb.batchledger import BatchLedger

    url, schema = team_url
    monkeypatch.setenv("DATAFORMER_CACHE_SCHEMA", schema)
    requests = [chat(f"upgrade {i}") for i in range(3)]
    # 0.2.0 kept a team cache's batch records in files under cache_dir: as a local run does
    AsyncLLM(url=batch_service.url, api_key=BATCH_KEY, model="m", cache_dir=tmp_path / "c", batch_poll_interval=0.01,
             progress=False, verbose=False).generate(requests, batch=True, wait=False)
    PostgresCache(url, schema).close()
    with psycopg.connect(url, autocommit=True) as db:  # and a team store without the batch_records table
        db.execute(f'DROP TABLE IF EXISTS "{schema}".batch_records')
        db.execute(f'DELETE FROM "{schema}".migrations WHERE name = %s', ("0005_batch_records",))
    assert len(BatchLedger(tmp_path / "c").records()) == 1 and batch_service.creations == 1
    batch_service.release()
    upgraded = team_batch_llm(batch_service, url, tmp_path / "c")
    results = upgraded.generate(requests, batch=True)
    assert batch_service.creations == 1 and [r.text for r in results] == [f"Answer: upgrade {i}" for i in range(3)]
    assert BatchLedger(tmp_path / "c").records() == []  # moved into the store
    assert [job.done for job in team_batch_llm(batch_service, url, tmp_path / "other").batches()] == [3]
