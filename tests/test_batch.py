"""generate(batch=True) against loopback fakes of OpenAI's and Anthropic's batch APIs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dataformer_nb import AsyncLLM, BatchError, CacheError, ConfigurationError, DataformerWarning, GenerationInterrupted
from dataformer_nb.batchledger import BatchLedger
from dataformer_nb.testing import FakeBatchServer

from .conftest import BOTH_STORES, chat, said, the_store

pytestmark = BOTH_STORES

KEY = "sk-batch-test-SECRET-77c1"
PROTOCOLS = ["openai", "anthropic", "together"]  # together: OpenAI's protocol in Together's dialect


@pytest.fixture
def fake() -> Iterator[FakeBatchServer]:
    with FakeBatchServer(process_seconds=0, key=KEY) as server:
        yield server


@pytest.fixture
def held() -> Iterator[FakeBatchServer]:
    """A fake whose batches wait until released."""
    with FakeBatchServer(hold=True, process_seconds=0, key=KEY) as server:
        yield server


def batch_llm(server: FakeBatchServer, cache_dir: Path, protocol: str = "openai", **options: Any) -> AsyncLLM:
    provider = protocol
    server.dialect = "together" if protocol == "together" else "openai"
    settings: dict[str, Any] = {"api_provider": provider, "url": server.url, "api_key": KEY, "model": "m",
                                "cache_dir": cache_dir, "batch_poll_interval": 0.01, "progress": False,
                                "verbose": False}
    return AsyncLLM(**{**settings, **options})


def questions(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [chat(f"question {i}") for i in range(start, start + n)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_results_come_back_in_request_order_and_are_cached(fake: FakeBatchServer, cache_dir: Path,
                                                          protocol: str) -> None:
    llm = batch_llm(fake, cache_dir, protocol)
    results = llm.generate(questions(12), project_name="Questions", batch=True)
    assert [r.text for r in results] == [f"Answer: question {i}" for i in range(12)]
    assert fake.creations == 1 and results.summary.sent == 12
    assert [job.id for job in results.batches] == list(fake.jobs)
    again = llm.generate(questions(12), project_name="Questions", batch=True)
    assert again.summary.cached == 12 and again.summary.sent == 0
    assert fake.creations == 1 and [r.text for r in again] == [r.text for r in results]
    assert [p.name for p in llm.cache.projects()] == ["questions"]  # project names are case-insensitive


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_only_requests_not_cached_are_submitted(fake: FakeBatchServer, cache_dir: Path, protocol: str) -> None:
    llm = batch_llm(fake, cache_dir, protocol)
    llm.generate(questions(4), batch=True)
    mixed = questions(3, start=2) + questions(2, start=10)  # 2 and 3 cached, 4, 10 and 11 not
    results = llm.generate(mixed, batch=True)
    assert [r.cached for r in results] == [True, True, False, False, False]
    assert [r.text for r in results] == [f"Answer: question {i}" for i in (2, 3, 4, 10, 11)]
    assert fake.lines_received() == 4 + 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_failed_lines_land_in_their_slots_and_are_submitted_again(fake: FakeBatchServer, cache_dir: Path,
                                                                  protocol: str) -> None:
    llm = batch_llm(fake, cache_dir, protocol)
    requests = [chat("a"), chat("b FAIL"), chat("c")]
    results = llm.generate(requests, batch=True)
    assert [r.text for r in results] == ["Answer: a", None, "Answer: c"]
    assert "refused: b FAIL" in str(results[1].error) and results.summary.failed == 1
    assert "b FAIL" not in json.dumps([e.to_dict() for e in llm.cache.entries("dataformer")])
    llm.generate(requests, batch=True)
    assert fake.lines_received() == 3 + 1  # only the failed request again


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batches_stay_within_the_size_asked_for(fake: FakeBatchServer, cache_dir: Path, protocol: str) -> None:
    results = batch_llm(fake, cache_dir, protocol, batch_size=4).generate(questions(10), batch=True)
    assert [len(job.lines) for job in fake.jobs.values()] == [4, 4, 2]
    assert [r.text for r in results] == [f"Answer: question {i}" for i in range(10)]


def test_batches_stay_within_the_services_limits(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataformer_nb.batchapi import OpenAIBatches

    monkeypatch.setattr(OpenAIBatches, "max_requests", 5)
    monkeypatch.setattr(OpenAIBatches, "max_bytes", 1000)  # about 4 lines of these
    with FakeBatchServer(process_seconds=0, key=KEY, max_requests=5, max_file_bytes=1000) as fake:
        results = batch_llm(fake, cache_dir).generate(questions(12), batch=True)
        sizes = [len(job.lines) for job in fake.jobs.values()]
    assert sum(sizes) == 12 and max(sizes) <= 5 and len(sizes) >= 3
    assert all(r.text == f"Answer: question {i}" for i, r in enumerate(results))


def test_a_request_too_large_for_any_batch_says_so_before_anything_is_submitted(
        fake: FakeBatchServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataformer_nb.batchapi import OpenAIBatches

    monkeypatch.setattr(OpenAIBatches, "max_bytes", 300)
    requests = [*questions(4), chat("x" * 400)]  # the short ones make batches of their own first
    with pytest.raises(BatchError, match=r"request_list\[4\] alone takes .* send it without batch=True"):
        batch_llm(fake, cache_dir, batch_size=2).generate(requests, batch=True)
    assert fake.creations == 0 and BatchLedger(cache_dir, the_store(cache_dir)).records() == []


SIGKILLED_RUN = """
import sys
from dataformer_nb import AsyncLLM
llm = AsyncLLM(api_provider="openai", url=sys.argv[1], api_key=sys.argv[2], model="m", cache_dir=sys.argv[3],
               batch_poll_interval=0.01, progress=False, verbose=False)
llm.generate([{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(20)],
             project_name="Questions", batch=True)
"""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_run_killed_while_waiting_is_resumed_without_a_second_batch(held: FakeBatchServer, cache_dir: Path,
                                                                       protocol: str) -> None:
    script = SIGKILLED_RUN.replace('"openai"', f'"{protocol}"')
    held.dialect = "together" if protocol == "together" else "openai"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), held.url, KEY, str(cache_dir)])
    try:
        assert held.polled.wait(60), "the child never polled its batch"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert held.creations == 1
    held.release()
    llm = batch_llm(held, cache_dir, protocol)
    second = llm.generate(questions(20), project_name="Questions", batch=True)
    assert held.creations == 1 and held.uploads == (0 if protocol == "anthropic" else 1)
    assert [r.text for r in second] == [f"Answer: question {i}" for i in range(20)]
    polls = held.polls
    third = llm.generate(questions(20), project_name="Questions", batch=True)
    assert third.summary.cached == 20 and third.summary.sent == 0
    assert (held.creations, held.polls) == (1, polls)  # all cache: the service is not even asked


@pytest.mark.local_store  # the file lock (tests/test_team_cache.py: the team's advisory lock)
def test_two_runs_of_one_call_at_once_submit_one_batch(held: FakeBatchServer, cache_dir: Path) -> None:
    import fcntl

    results: list[Any] = []
    (cache_dir / "batches").mkdir(parents=True)
    with said("waiting for another run") as waiting, open(cache_dir / "batches" / ".submit.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a third run submitting would
        runs = [threading.Thread(target=lambda: results.append(batch_llm(held, cache_dir).generate(
            questions(4), batch=True))) for _ in range(2)]
        for run in runs:
            run.start()
        assert waiting.acquire(timeout=60) and waiting.acquire(timeout=60), "a run did not wait for the lock"
        assert held.uploads == 0
    held.release()
    for run in runs:
        run.join(60)
    assert held.creations == 1 and len(results) == 2
    assert all([r.text for r in result] == [f"Answer: question {i}" for i in range(4)] for result in results)


def test_a_submission_stopped_before_its_id_came_back_finds_its_batch(fake: FakeBatchServer,
                                                                      cache_dir: Path) -> None:
    llm = batch_llm(fake, cache_dir)
    llm.generate(questions(3), batch=True, wait=False)
    ledger = BatchLedger(cache_dir, the_store(cache_dir))
    [record] = ledger.records()
    record.id, record.status = None, "submitting"  # as if killed between create and its reply
    ledger.save(record)
    results = llm.generate(questions(3), batch=True)
    assert fake.creations == 1 and [r.text for r in results] == [f"Answer: question {i}" for i in range(3)]


def test_a_batch_that_fails_as_a_whole_fails_each_request_saying_why(fake: FakeBatchServer, cache_dir: Path) -> None:
    results = batch_llm(fake, cache_dir, model="no-such-model").generate(questions(3), batch=True)
    assert results.summary.failures == {"batch failed": 3}
    assert "the model 'no-such-model' does not exist" in str(results[0].error)
    assert "a re-run submits it again" in str(results[0].error)


@pytest.mark.parametrize("protocol", ["openai", "together"])
def test_a_creation_whose_reply_was_lost_is_found_not_created_again(fake: FakeBatchServer, cache_dir: Path,
                                                                    protocol: str) -> None:
    llm = batch_llm(fake, cache_dir, protocol)
    fake.lose_create_reply = True
    with pytest.raises(BatchError, match=r"HTTP 502.*the submission is recorded.*looks it up"):
        llm.generate(questions(3), batch=True)
    assert fake.creations == 1
    results = llm.generate(questions(3), batch=True)
    assert fake.creations == 1 and [r.text for r in results] == [f"Answer: question {i}" for i in range(3)]


@pytest.mark.local_store  # the record files themselves
def test_a_record_survives_a_write_that_fails_midway(fake: FakeBatchServer, cache_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    llm = batch_llm(fake, cache_dir)
    llm.generate(questions(2), batch=True, wait=False)
    ledger = BatchLedger(cache_dir, the_store(cache_dir))
    [record] = ledger.records()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    record.status = "garbage that must not land"
    with pytest.raises(CacheError, match=r"No space left on device.*free disk space"):
        ledger.save(record)
    monkeypatch.undo()
    [kept] = ledger.records()
    assert kept.status == "submitted" and kept.id == record.id
    assert sorted(p.name for p in (cache_dir / "batches").iterdir()) == [
        ".submit.lock", f"{record.local}.json", f"{record.local}.keys"]  # no temporary left


def test_a_submission_stopped_before_its_upload_is_submitted_again(fake: FakeBatchServer, cache_dir: Path) -> None:
    llm = batch_llm(fake, cache_dir)
    llm.generate(questions(3), batch=True, wait=False)
    ledger = BatchLedger(cache_dir, the_store(cache_dir))
    [record] = ledger.pending()
    ledger.forget(record)
    names = ("protocol", "api", "provider", "key", "model", "gen_type", "project", "created", "keys")
    ledger.new(**{name: getattr(record, name) for name in names})  # an intent whose upload never happened
    fake.jobs.clear()
    llm.generate(questions(3), batch=True)
    assert fake.creations == 2 and len(fake.jobs) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wait_false_returns_the_batches_and_a_later_call_collects_them(held: FakeBatchServer, cache_dir: Path,
                                                                        protocol: str) -> None:
    llm = batch_llm(held, cache_dir, protocol)
    llm.generate(questions(2), batch=True, wait=False, project_name="Questions")
    assert held.creations == 1
    submitted = llm.generate(questions(5), batch=True, wait=False, project_name="Questions")
    assert held.creations == 2  # the 3 requests not in the first batch
    assert [job.requests for job in submitted.batches] == [2, 3]
    assert submitted.summary.pending == 5 and all(r.error.cause == "batch pending" for r in submitted)
    assert "pending" in str(submitted.summary)
    assert [job.collected for job in llm.batches()] == [False, False]
    held.release()
    collected = llm.generate(questions(5), batch=True, project_name="Questions")
    assert [r.text for r in collected] == [f"Answer: question {i}" for i in range(5)]
    assert held.creations == 2 and [job.collected for job in llm.batches()] == [True, True]
    listed = llm.batches()
    assert [(job.project, job.requests, job.status) for job in listed] == [("questions", 2, _ended(protocol)),
                                                                          ("questions", 3, _ended(protocol))]
    assert "collected" in str(listed)


def _ended(protocol: str) -> str:
    return "ended" if protocol == "anthropic" else "completed"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cancel_stops_a_batch_and_a_re_run_submits_what_it_did_not_answer(held: FakeBatchServer, cache_dir: Path,
                                                                           protocol: str) -> None:
    llm = batch_llm(held, cache_dir, protocol)
    [job] = llm.generate(questions(4), batch=True, wait=False).batches
    cancelled = llm.cancel_batch(job.id)
    assert held.cancels == 1 and cancelled.status in ("cancelling", "canceling")
    assert llm.batches(refresh=True)[0].status in ("cancelled", "ended")
    results = llm.generate(questions(4), batch=True)  # collects the cancelled batch: nothing was answered
    assert held.creations == 1 and results.summary.failed == 4
    assert all(r.error.cause in ("batch cancelled", "batch canceled") for r in results)
    assert "a re-run submits it again" in str(results[0].error)
    held.release()
    again = llm.generate(questions(4), batch=True)
    assert held.creations == 2 and held.cancels == 1
    assert [r.text for r in again] == [f"Answer: question {i}" for i in range(4)]
    with pytest.raises(BatchError, match="nothing to cancel"):
        llm.cancel_batch(job.id)
    with pytest.raises(BatchError, match=r"llm.batches\(\) lists them"):
        llm.cancel_batch("batch_unknown")
    with pytest.raises(ConfigurationError, match="not a batch id"):
        llm.cancel_batch("../files")


def test_cancel_finds_the_batch_at_this_clients_service(held: FakeBatchServer, cache_dir: Path) -> None:
    with FakeBatchServer(process_seconds=0, key=KEY) as other:  # its ids are the same as held's
        batch_llm(other, cache_dir).generate(questions(2), batch=True)
        [job] = batch_llm(held, cache_dir).generate(questions(3, start=5), batch=True, wait=False).batches
        assert job.id in [j.id for j in batch_llm(other, cache_dir).batches() if j.collected]
        assert batch_llm(held, cache_dir).cancel_batch(job.id).status == "cancelling"
    assert held.cancels == 1 and other.cancels == 0


@pytest.mark.parametrize("lost", ["batch", "results"])
def test_a_batch_the_service_no_longer_has_fails_its_requests_and_a_re_run_submits_them(
        fake: FakeBatchServer, cache_dir: Path, lost: str) -> None:
    llm = batch_llm(fake, cache_dir)
    llm.generate(questions(3), batch=True, wait=False)
    if lost == "batch":
        fake.jobs.clear()  # deleted at the service (or never known to this account)
    else:
        fake.lose_files = True  # its output file expired
    results = llm.generate(questions(3), batch=True)
    assert results.summary.failures == {"batch gone": 3} and "HTTP 404" in str(results[0].error)
    assert [job.status for job in llm.batches()] == ["gone"]
    fake.lose_files = False
    again = llm.generate(questions(3), batch=True)
    assert fake.creations == 2 and [r.text for r in again] == [f"Answer: question {i}" for i in range(3)]


def test_responses_for_another_call_are_cached_with_the_project_that_submitted_them(
        held: FakeBatchServer, cache_dir: Path) -> None:
    llm = batch_llm(held, cache_dir)
    llm.generate(questions(4), batch=True, wait=False, project_name="Submitted")
    held.release()
    results = llm.generate(questions(2), batch=True, project_name="Collected")  # awaits the whole batch
    assert [r.text for r in results] == ["Answer: question 0", "Answer: question 1"]
    projects = {p.name: p.responses for p in llm.cache.projects()}
    assert projects == {"collected": 2, "submitted": 2}
    assert held.creations == 1


def test_an_interrupt_while_waiting_says_the_batches_stay_and_a_re_run_collects_them(
        held: FakeBatchServer, cache_dir: Path) -> None:
    llm = batch_llm(held, cache_dir)

    def interrupt_at_first_poll() -> None:
        held.polled.wait(60)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_at_first_poll, daemon=True).start()
    with pytest.raises(GenerationInterrupted,
                       match=r"1 batch \(batch_\d+\) stays submitted.*nothing is submitted twice"):
        llm.generate(questions(3), batch=True)
    held.release()
    results = llm.generate(questions(3), batch=True)
    assert held.creations == 1 and all(r.ok for r in results)


@pytest.mark.parametrize(("provider", "url"), [("deepinfra", None), ("ollama", "http://127.0.0.1:9"),
                                               ("echo", None)])
def test_a_provider_without_a_batch_api_names_those_that_have_one(cache_dir: Path, provider: str,
                                                                  url: str | None) -> None:
    llm = AsyncLLM(api_provider=provider, url=url, api_key="k", cache_dir=cache_dir, progress=False, verbose=False)
    with pytest.raises(BatchError, match=r"openai, together, groq, anthropic.*leave batch=True out"):
        llm.generate([chat("hi")], batch=True)


def test_a_server_without_batch_endpoints_says_so(fake: FakeBatchServer, cache_dir: Path) -> None:
    llm = batch_llm(fake, cache_dir, url=f"{fake.url}/elsewhere")  # answers 404 there, as vLLM does to /v1/files
    with pytest.raises(BatchError, match=r"uploading the batch's requests was refused \(HTTP 404"):
        llm.generate([chat("hi")], batch=True)
    assert BatchLedger(cache_dir, the_store(cache_dir)).records() == []  # a refusal created nothing to wait for


def test_a_service_gone_while_waiting_ends_the_wait_and_keeps_the_batches_recorded(cache_dir: Path) -> None:
    with FakeBatchServer(hold=True, key=KEY) as service:
        llm = batch_llm(service, cache_dir)
        [job] = llm.generate(questions(2), batch=True, wait=False).batches
    with pytest.raises(BatchError, match=r"failed \(ConnectError.*the batches stay recorded; re-run"):
        llm.generate(questions(2), batch=True)  # 10 polls in a row fail: the wait gives up, nothing is lost
    assert [(j.id, j.collected) for j in llm.batches()] == [(job.id, False)]
    assert all(r.error.cause == "not collected" for r in llm.last_results)


@pytest.mark.local_store  # files (tests/test_team_cache.py: the team store's rows)
def test_the_key_is_never_written_to_the_ledger(fake: FakeBatchServer, cache_dir: Path) -> None:
    batch_llm(fake, cache_dir).generate(questions(2), batch=True, wait=False)
    files = list((cache_dir / "batches").iterdir())
    assert files and all(KEY not in f.read_text() for f in files)


def test_a_wrong_key_is_refused_with_the_key_hidden(fake: FakeBatchServer, cache_dir: Path) -> None:
    llm = batch_llm(fake, cache_dir, api_key="sk-wrong-key-123")
    with pytest.raises(BatchError, match=r"HTTP 401") as caught:
        llm.generate(questions(2), batch=True)
    assert "sk-wrong-key-123" not in str(caught.value)


@pytest.mark.local_store  # files (tests/test_team_cache.py: rows of the team store)
def test_a_garbled_or_hostile_ledger_file_is_skipped_with_a_warning(fake: FakeBatchServer, cache_dir: Path) -> None:
    llm = batch_llm(fake, cache_dir)
    llm.generate(questions(1), batch=True)
    ledger_dir = cache_dir / "batches"
    (ledger_dir / "garbled.json").write_text("{not json")
    record = json.loads(next(p for p in ledger_dir.glob("*.json") if p.name != "garbled.json").read_text())
    (ledger_dir / "hostile.json").write_text(json.dumps({**record, "id": "../../files/x", "collected": None}))
    with pytest.warns(DataformerWarning, match="not a batch record") as warned:
        listed = llm.batches()
    assert len(listed) == 1 and len(warned) == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"use_cache": False}, "needs use_cache=True"),
    ({"batch": False, "wait": False}, "wait=False only applies to batch=True"),
    ({"batch": "yes"}, "must be True or False"),
])
def test_bad_batch_arguments_are_refused_before_anything_is_sent(fake: FakeBatchServer, cache_dir: Path,
                                                                 options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        batch_llm(fake, cache_dir).generate(questions(1), **{"batch": True, **options})
    assert fake.uploads == fake.creations == 0


@pytest.mark.parametrize(("name", "value"), [("batch_poll_interval", 0), ("batch_poll_interval", "30"),
                                             ("batch_size", 2.5), ("batch_size", -1)])
def test_bad_batch_settings_are_refused(name: str, value: Any, cache_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=name):
        AsyncLLM(cache_dir=cache_dir, **{name: value})


def test_agenerate_runs_batches_in_the_callers_loop(fake: FakeBatchServer, cache_dir: Path) -> None:
    import asyncio

    llm = batch_llm(fake, cache_dir)
    results = asyncio.run(llm.agenerate(questions(3), batch=True))
    assert [r.text for r in results] == [f"Answer: question {i}" for i in range(3)]


def test_structured_outputs_are_validated_in_batches(fake: FakeBatchServer, cache_dir: Path) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    results = batch_llm(fake, cache_dir).generate(questions(2), batch=True, schema=schema)
    assert all(r.error is not None and r.error.cause == "invalid output" for r in results)  # "Answer: ..." is not JSON
    ledger = BatchLedger(cache_dir, the_store(cache_dir))
    assert len(ledger.records()) == 1 and len(batch_llm(fake, cache_dir).cache) == 0



def test_the_panel_shows_pending_batches_per_project(held: FakeBatchServer, cache_dir: Path) -> None:
    from dataformer_nb import CachePanel

    llm = batch_llm(held, cache_dir)
    panel = CachePanel(llm)
    assert panel.pending_batches.value == ""
    [job] = llm.generate(questions(3), batch=True, wait=False, project_name="Questions").batches
    assert job.id in panel.pending_batches.value and "questions" in panel.pending_batches.value  # refreshed itself
    assert "1 batch pending" in panel._repr_mimebundle_()["text/plain"]
    held.release()
    llm.generate(questions(3), batch=True, project_name="Questions")
    assert panel.pending_batches.value == "" and set(panel.project_rows) == {"questions"}
    assert KEY not in repr(panel.widget.get_state())


def test_generate_magic_batch_and_no_wait(held: FakeBatchServer, cache_dir: Path, capsys: Any) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.reset()
    shell.run_line_magic("load_ext", "dataformer_nb")
    try:
        shell.user_ns["llm"] = batch_llm(held, cache_dir)
        shell.user_ns["topics"] = ["owls", "bees"]
        cell = "One fact about {item}."
        pending = shell.run_cell_magic("generate", "--llm llm --over topics --batch --no-wait -o first", cell)
        assert pending.summary.pending == 2 and held.creations == 1 and len(pending.batches) == 1
        capsys.readouterr()
        pending._ipython_display_()
        table = capsys.readouterr().out
        assert "pending: waiting in batch" in table and "failed" not in table.replace("0 failed", "")
        held.release()
        done = shell.run_cell_magic("generate", "--llm llm --over topics --batch", cell)
        assert [r.text for r in done] == ["Answer: One fact about owls.", "Answer: One fact about bees."]
        assert held.creations == 1
        with pytest.raises(UsageError, match="--no-wait goes with --batch"):
            shell.run_cell_magic("generate", "--llm llm --no-wait", cell)
    finally:
        shell.run_line_magic("reload_ext", "dataformer_nb")


def test_dataformer_batches_lists_the_recorded_batches(held: FakeBatchServer, cache_dir: Path, capsys: Any) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.reset()
    shell.run_line_magic("load_ext", "dataformer_nb")
    try:
        shell.run_line_magic("config", f"Dataformer.cache_dir = {str(cache_dir)!r}")
        shell.run_line_magic("dataformer", "batches")
        assert "No provider batches" in capsys.readouterr().out
        [job] = batch_llm(held, cache_dir).generate(questions(2), batch=True, wait=False).batches
        shell.run_line_magic("dataformer", "batches")
        out = capsys.readouterr().out
        assert job.id in out and "1 pending" in out
    finally:
        shell.run_line_magic("reload_ext", "dataformer_nb")


def test_importing_the_package_leaves_batch_mode_unimported() -> None:
    code = "import sys, dataformer_nb; print(sorted(m for m in sys.modules if 'batch' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # ~30 ms of an ~90 ms import, paid only by batch=True


@pytest.mark.parametrize(("gen_type", "request_of", "read"), [
    ("text", lambda i: {"prompt": f"question {i}"}, lambda r: r.text),
    ("embedding", lambda i: {"input": f"question {i}"}, lambda r: len(r.embedding or [])),
])
def test_text_and_embedding_requests_go_through_batches(fake: FakeBatchServer, cache_dir: Path, gen_type: str,
                                                        request_of: Any, read: Any) -> None:
    llm = batch_llm(fake, cache_dir, gen_type=gen_type)
    results = llm.generate([request_of(i) for i in range(3)], batch=True)
    expected = [f"Answer: question {i}" for i in range(3)] if gen_type == "text" else [2, 2, 2]
    assert [read(r) for r in results] == expected
    assert {line["url"] for job in fake.jobs.values() for line in job.lines} == {
        "/v1/completions" if gen_type == "text" else "/v1/embeddings"}
    assert llm.generate([request_of(i) for i in range(3)], batch=True).summary.cached == 3


def test_batches_go_over_httpx_own_transport_too(fake: FakeBatchServer, cache_dir: Path) -> None:
    results = batch_llm(fake, cache_dir, transport="httpx").generate(questions(3), batch=True)
    assert [r.text for r in results] == [f"Answer: question {i}" for i in range(3)] and fake.uploads == 1


def test_a_batch_submitted_with_another_key_is_asked_for_with_this_one(held: FakeBatchServer, cache_dir: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    held.key = None  # the service takes any key: a rotated key of the same account
    batch_llm(held, cache_dir, api_key="sk-old-key-1").generate(questions(2), batch=True, wait=False)
    held.release()
    with caplog.at_level("WARNING", logger="dataformer_nb"):
        results = batch_llm(held, cache_dir, api_key="sk-new-key-2").generate(questions(2), batch=True)
    assert held.creations == 1 and all(r.ok for r in results)
    assert "with another API key" in caplog.text and "sk-" not in caplog.text

