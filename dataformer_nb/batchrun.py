"""Running requests through the providers' batch APIs: resume, submit, wait, collect.

The order of one ``generate(..., batch=True)``: the requests not cached that a recorded batch
already covers are awaited, not submitted again (``batchledger``); the rest are submitted in
batches within the service's limits, each recorded before it is created and again once its id
is known; then the run polls every ``batch_poll_interval`` seconds, and as each batch ends its
results are stored in the cache (with the project of the call that asked, or of the one that
submitted them) and fill their slots. A batch counts as collected only after its responses
are committed, so a run killed at any point loses nothing that was paid for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ._format import batches, plural
from ._json import dumpb
from ._progress import progress_bar
from .batchapi import AGAIN, BatchAPI, BatchStatus, LineResult, UnusableIdError
from .batchledger import HELD, BatchLedger, BatchRecord
from .cache import NewResponse, Store
from .errors import BatchError, BatchPending, CacheError, RequestFailedError
from .options import SendOptions
from .prepare import Route, Unit, hide_key
from .providers import GenType, open_batch_api, wire_for_batch_protocol
from .replies import ReplyProblem, read_reply
from .schema import OutputSchema
from .slots import Slots, prompt_text
from .transport import open_transport

if TYPE_CHECKING:
    from tqdm import tqdm

_log = logging.getLogger("dataformer_nb")
WAITING_FOR_ANOTHER_RUN = "waiting for another run that is submitting batches to this cache directory"
GONE = (404, 410)  # what a service answers for a batch (or results file) it no longer has
MAX_POLL_FAILURES = 10  # polls in a row that may fail (network, 5xx) before the wait gives up


class BatchRunner:
    """Sends the units of one call through provider batches (or waits for those that hold them)."""

    def __init__(self, cache: Store, ledger_dir: str | os.PathLike[str], project: str, options: SendOptions, *,
                 progress_label: str = "generate",
                 schema: OutputSchema | None = None,
                 say: Callable[[str], None] = _log.info) -> None:
        """Responses go to ``cache``, the batches' records to the team store when ``cache`` is one,
        else to files in ``ledger_dir`` (the cache directory); ``schema``: what the replies must follow."""
        self.ledger = BatchLedger(ledger_dir, cache)  # the team store's rows, or files in the cache directory
        self._cache, self._project, self._options, self._label = cache, project, options, progress_label
        self._schema, self._say = schema, say
        self.records: list[BatchRecord] = []  # the batches this run submitted or awaits
        self._apis: dict[tuple[int, int], BatchAPI] = {}  # by (client, route)

    async def run(self, units: list[Unit], slots: Slots, body_of: Callable[[Unit], dict[str, Any]],
                  wait: bool = True) -> list[BatchRecord]:
        """Have every unit answered by a batch (``body_of`` builds a unit's body, as sent); with
        ``wait=False``, return once they are submitted."""
        async with self._client() as client:
            by_key = {unit.cache_key: unit for unit in units}
            for unit in units:  # every route must have a batch API before anything is submitted
                self._api(client, unit.route)
            async with self.ledger.submitting(lambda: self._say(WAITING_FOR_ANOTHER_RUN)):
                self.records = await self._resume(client, by_key)
                covered = {key for record in self.records for key in record.keys}
                submitting = [u for u in units if u.cache_key not in covered]
                self.records += await self._submit(client, submitting, body_of)
                slots.attempted(first=True, count=len(submitting))  # a batch's line is one attempt
            self._fail_held(by_key, slots)
            slots.submitted([r.id or r.local for r in self.records])
            if not wait:
                self._leave_pending(by_key, slots)
                return self.records
            await self._wait(client, by_key, slots)
        return self.records

    async def cancel(self, route: Route, batch_id: str) -> BatchRecord:
        """Ask ``route``'s service to cancel its batch ``batch_id``; the record as it then stands.
        (Ids are unique only within one service: the record is looked for at this one.)"""
        async with self._client() as client:
            api = self._api(client, route)
            records = [r for r in self.ledger.records() if batch_id in (r.id, r.local)]
            here = [r for r in records if r.api == api.base]
            if not here:
                where = f" (it was submitted to {records[0].api})" if records else ""
                raise BatchError(f"batch_id={batch_id!r} is not a batch recorded in {self.ledger.where} for "
                                 f"{api.base}{where}: llm.batches() lists them")
            record = here[-1]
            if not record.pending:
                raise BatchError(f"batch {batch_id} has ended and its results are collected: nothing to cancel")
            self._check_reachable(api, route, record)
            if record.id is None:
                raise BatchError(f"the batch of record {record.local} was never created (its submission was "
                                 "interrupted); nothing to cancel")
            self._update(record, await api.cancel(record.id))
        return record

    async def refresh(self, route: Route, records: Iterable[BatchRecord]) -> None:
        """Read the status of each pending record at ``route``'s service (one that cannot be read keeps
        its last status)."""
        async with self._client() as client:
            api = self._api(client, route)
            for record in records:
                if record.pending and record.id is not None and record.api == api.base:
                    try:
                        self._update(record, await api.status(record.id))
                    except BatchError as exc:  # one batch another key cannot see does not hide the others
                        record.note = str(exc)

    # Resume, submit

    async def _resume(self, client: httpx.AsyncClient, by_key: Mapping[str, Unit]) -> list[BatchRecord]:
        """The recorded batches that cover some of these requests; a submission that was stopped
        before its batch's id came back is looked for (and forgotten if it was never created)."""
        resumed = []
        for record in self.ledger.pending():
            mine = next((key for key in record.keys if key in by_key), None)
            if mine is None:
                continue
            if record.status == HELD:
                resumed.append(record)  # its requests are failed as held, not submitted again
                continue
            route = by_key[mine].route
            api = self._api(client, route)
            self._check_reachable(api, route, record)
            if record.id is None:
                found = await api.find(record)
                if found is None:
                    self.ledger.forget(record)
                    _log.warning("a batch submission to %s was stopped before it was created%s; its requests are "
                                 "submitted again", api.base, "" if api.protocol == "openai" else
                                 " (as far as can be known: Anthropic's batches cannot be looked up by their "
                                 "requests)")
                    continue
                record.id, record.status = found, "submitted"
                self.ledger.save(record)
            self._say(f"resuming batch {record.id} ({plural(record.requests, 'request')}, {record.status}): "
                      "nothing is submitted again")
            resumed.append(record)
        return resumed

    async def _submit(self, client: httpx.AsyncClient, units: list[Unit], body_of: Callable[[Unit], dict[str, Any]]
                      ) -> list[BatchRecord]:
        submitted: list[BatchRecord] = []
        by_route: dict[int, list[Unit]] = {}
        for unit in units:
            by_route.setdefault(id(unit.route), []).append(unit)
        # Every batch is built before the first is submitted: a request too large for any batch is
        # refused before anything is paid for.
        planned = [(own[0].route, chunk, lines) for own in by_route.values()
                   for chunk, lines in self._chunks(self._api(client, own[0].route), own, body_of)]
        try:
            for route, chunk, lines in planned:
                submitted.append(await self._create(self._api(client, route), route, chunk, lines))
        except BatchError as exc:
            if submitted:
                exc.args = (f"{exc.args[0]}. The {batches(len(submitted))} submitted before "
                            f"({', '.join(r.id or '' for r in submitted)}) are recorded: re-run the same call to "
                            "collect them and submit the rest",)
            raise
        return submitted

    def _chunks(self, api: BatchAPI, units: list[Unit], body_of: Callable[[Unit], dict[str, Any]]
                ) -> Iterable[tuple[list[Unit], list[bytes]]]:
        """``units`` in batches within the service's limits (and ``batch_size``)."""
        most = min(api.max_requests, self._options.batch_size or api.max_requests)
        chunk: list[Unit] = []
        lines: list[bytes] = []
        size = api.batch_bytes([])
        for unit in units:
            line = api.line(unit.cache_key, body_of(unit))
            if api.batch_bytes([line]) > api.max_bytes:
                raise BatchError(f"request_list[{unit.index}] alone takes {len(line):,} bytes, more than a "
                                 f"batch may ({api.max_bytes:,}): send it without batch=True")
            if chunk and (len(chunk) >= most or size + len(line) + 1 > api.max_bytes):
                yield chunk, lines
                chunk, lines, size = [], [], api.batch_bytes([])
            chunk.append(unit)
            lines.append(line)
            size += len(line) + 1
        if chunk:
            yield chunk, lines

    async def _create(self, api: BatchAPI, route: Route, units: list[Unit], lines: list[bytes]) -> BatchRecord:
        """Submit one batch: recorded first (an intent), then created, then recorded with its id."""
        record = self.ledger.new(protocol=api.protocol, api=api.base, provider=route.name, key=fingerprint(route),
                                 model=route.model, gen_type=self._options.gen_type, project=self._project,
                                 created=time.time(), keys=[u.cache_key for u in units])
        try:
            record.id = await api.submit(lines, record, lambda: self.ledger.save(record))
        except UnusableIdError as exc:
            if record.input_file_id is None and api.protocol == "openai":
                self.ledger.forget(record)  # the upload's own id was refused: no batch was created
                raise
            # Created, perhaps, and paid for: its requests are held, never submitted again by this
            # library, until the user says the batch is lost.
            record.status, record.note = HELD, str(exc)
            self.ledger.save(record)
            raise BatchError(f"{exc}; the batch may have been created, so its {plural(len(units), 'request')} are "
                             f"held (not submitted again): if it was not, release them with "
                             f"llm.forget_batch({record.local[:8]!r})") from None
        except BatchError as exc:
            # A refusal created nothing; a creation that may have gone through without our hearing
            # (a timeout, a lost reply) stays recorded, for the next run to look for.
            if not exc.transient or record.input_file_id is None:
                self.ledger.forget(record)
            else:
                exc.args = (f"{exc.args[0]}; the batch may have been created: the submission is recorded, and "
                            "running the same call again looks it up before submitting anything",)
            raise  # an interrupt leaves the record too: the next run looks its batch up
        record.status = "submitted"
        self.ledger.save(record)
        self._say(f"submitted batch {record.id}: {plural(len(units), 'request')} to {route.name}")
        return record

    # Wait, collect

    async def _wait(self, client: httpx.AsyncClient, by_key: Mapping[str, Unit], slots: Slots) -> None:
        import asyncio

        routes = {id(r): by_key[next(k for k in r.keys if k in by_key)].route for r in self.records}
        active = list(self.records)
        bar = progress_bar(total=sum(r.requests for r in active), desc=self._label, unit="req", dynamic_ncols=True,
                   disable=not self._options.progress or not active)
        failures = 0
        try:
            while active:
                for record in list(active):
                    api = self._api(client, routes[id(record)])
                    try:
                        status = await api.status(record.id)  # type: ignore[arg-type]
                    except BatchError as exc:
                        if exc.status in GONE:
                            self._gone(record, exc, by_key, slots)
                            active.remove(record)
                            continue
                        failures += 1
                        if not exc.transient or failures >= MAX_POLL_FAILURES:
                            raise BatchError(f"{exc}: the batches stay recorded; re-run the same call to resume "
                                             "waiting", status=exc.status) from None
                        _log.info("%s; trying again in %.0f s", exc, self._options.batch_poll_interval)
                        continue
                    failures = 0
                    self._update(record, status)
                    if status.ended:
                        await self._collect(api, record, status, by_key, slots)
                        active.remove(record)
                _show(bar, self._label, self.records, active)
                if active:
                    await asyncio.sleep(self._options.batch_poll_interval)
        finally:
            bar.close()

    async def _collect(self, api: BatchAPI, record: BatchRecord, status: BatchStatus, by_key: Mapping[str, Unit],
                       slots: Slots) -> None:
        """Store a batch's responses, fill its slots, and only then count it collected."""
        ours, theirs = [], []  # responses for this call's project, and for the submitting call's
        answered = set()
        own_keys = set(record.keys)
        style = wire_for_batch_protocol(record.protocol)
        try:
            lines = await api.results(record.id, status)  # type: ignore[arg-type]
        except BatchError as exc:
            if exc.status not in GONE:
                raise BatchError(f"{exc}: the batch stays recorded; re-run the same call to download its results "
                                 "again", status=exc.status, transient=exc.transient) from None
            self._gone(record, exc, by_key, slots)
            return
        for line in lines:
            if line.custom_id not in own_keys or line.custom_id in answered:
                continue  # not a request of this batch (or said twice): nothing a reply may add to the cache
            answered.add(line.custom_id)
            unit = by_key.get(line.custom_id)
            outcome = self._read(style, record, line)
            if isinstance(outcome, RequestFailedError):
                if unit is not None:
                    slots.failed(unit, outcome)
                    if outcome.cause == "invalid output":
                        slots.invalid_reply()
                continue
            response, parsed = outcome
            data, usage = dumpb(response), response.get("usage")
            if unit is None:
                theirs.append(NewResponse.with_usage(line.custom_id, data, usage))
            else:  # the result keeps the JSON bytes, as online: 10^5 decoded responses weigh ~200 MB
                cost = slots.fresh(unit, data, usage, parsed)
                ours.append(NewResponse.with_usage(line.custom_id, data, usage, prompt_text(unit.request), cost))
        for key in own_keys - answered:
            if key in by_key:
                slots.failed(by_key[key], RequestFailedError(
                    f"batch {record.id} {status.state} without a result for this request"
                    f"{f' ({status.note})' if status.note else ''}: {AGAIN}",
                    cause=f"batch {status.state}"))
        try:
            self._cache.put_many(ours, self._project)
            self._cache.put_many(theirs, record.project)
        except CacheError as exc:
            raise CacheError(f"{exc}; batch {record.id} stays recorded as not collected: free disk space or fix "
                             "the cache, then re-run the same call to download its results again") from exc
        self.ledger.collected(record)

    def _read(self, style: str, record: BatchRecord, line: LineResult
              ) -> tuple[dict[str, Any], Any] | RequestFailedError:
        """A result line's response in OpenAI's shape and its parsed output, or its failure."""
        where = f"{record.provider} batch {record.id}"
        if line.error is not None:
            return RequestFailedError(f"{where}: {line.error}", cause=line.cause)
        gen_type: GenType = record.gen_type  # type: ignore[assignment]
        read = read_reply(style, gen_type, line.body, self._schema)
        if isinstance(read, ReplyProblem):
            return RequestFailedError(f"{where}: {read.message}", cause=read.cause)
        return read.response, read.parsed

    def _gone(self, record: BatchRecord, error: BatchError, by_key: Mapping[str, Unit], slots: Slots) -> None:
        """The service no longer has ``record``'s batch, or its results (a 404: deleted, or past the
        days it keeps them): its requests fail, and the record is closed so that a re-run submits
        them again rather than asking for it forever."""
        failure = RequestFailedError(f"{error}: the service no longer has this batch or its results; {AGAIN}",
                                     cause="batch gone")
        for key in record.keys:
            if key in by_key:
                slots.failed(by_key[key], failure)
        record.status, record.note = "gone", str(error)
        self.ledger.collected(record)

    def _fail_held(self, by_key: Mapping[str, Unit], slots: Slots) -> None:
        """Fail the requests of held records (see ``HELD``), which are not waited for."""
        for record in [r for r in self.records if r.status == HELD]:
            error = RequestFailedError(f"held in batch record {record.local[:8]} ({record.note}): not submitted "
                                       f"again; if that batch was never created, llm.forget_batch("
                                       f"{record.local[:8]!r}) releases its requests", cause="batch held")
            for key in record.keys:
                if key in by_key:
                    slots.failed(by_key[key], error)
        self.records = [r for r in self.records if r.status != HELD]

    def _leave_pending(self, by_key: Mapping[str, Unit], slots: Slots) -> None:
        for record in self.records:
            error = BatchPending(f"waiting in batch {record.id} ({record.status}): call generate with the same "
                                 "requests and batch=True again to collect it", batch_id=record.id or record.local)
            for key in record.keys:
                if key in by_key:
                    slots.pending(by_key[key], error)

    def _update(self, record: BatchRecord, status: BatchStatus) -> None:
        record.requests = status.total or record.requests
        record.status, record.failed, record.checked = status.state, status.failed, time.time()
        record.done = status.done if status.fraction is None else round(status.fraction * record.requests)
        record.output_file_id, record.error_file_id = status.output_file_id, status.error_file_id
        record.note = status.note
        self.ledger.save(record)

    # The service

    def _client(self) -> httpx.AsyncClient:
        transport = open_transport(self._options.transport, 4)
        return httpx.AsyncClient(transport=transport, timeout=self._options.timeout)

    def _api(self, client: httpx.AsyncClient, route: Route) -> BatchAPI:
        key = (id(client), id(route))
        if key not in self._apis:
            self._apis[key] = open_batch_api(route.provider, route.style, route.endpoint, self._options.gen_type,
                                             client, route.headers, route.name, lambda text: hide_key(text, route))
        return self._apis[key]

    @staticmethod
    def _check_reachable(api: BatchAPI, route: Route, record: BatchRecord) -> None:
        """A recorded batch is reached at the service it was submitted to. Another key is tried, with a
        warning: a rotated key of the same account reaches it; another account's is refused (401) or
        does not know it (404: the batch is then taken as gone and its requests submitted again)."""
        if record.api != api.base:
            raise BatchError(f"batch {record.id or record.local} was submitted to {record.api}, not to {api.base}: "
                             "collect it with an AsyncLLM for that server")
        if record.key != fingerprint(route):
            _log.warning("batch %s was submitted to %s with another API key: asking with this one (a batch belongs "
                         "to the account that submitted it)", record.id or record.local, record.api)


def fingerprint(route: Route) -> str:
    """Which key a route sends, without the key: the first 16 hex digits of the SHA-256 of its
    credentials header ("" without one)."""
    secret = route.headers.get("Authorization") or route.headers.get("x-api-key") or ""
    return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else ""


def _show(bar: tqdm, label: str, records: list[BatchRecord], active: list[BatchRecord]) -> None:
    """The bar: the services' counts, and what the batches still working are doing."""
    bar.n = sum(r.requests if r.collected else r.done for r in records)
    states = sorted({r.status for r in active})
    waiting = f" ({batches(len(active))} {', '.join(states)})" if active else ""
    bar.set_description_str(f"{label}{waiting}", refresh=False)
    failed = sum(r.failed for r in records)
    bar.set_postfix({"failed": failed} if failed else {}, refresh=False)
    bar.refresh()

