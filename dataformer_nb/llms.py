"""``AsyncLLM``: concurrent generation under rate limits, with a per-project disk cache.

The order of work of one ``generate`` call: prepare every request (``prepare``), clear
what was asked, look the keys up in the cache (``cache``), send the rest (``dispatch``),
and return the results in request order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._format import batches, show_line
from ._sync import gc_paused, run_sync
from .cache import FULL, ClearReport, ResponseCache, Store, clear_names, normalize_project, open_store
from .cache.postgres import DEFAULT_SCHEMA, PostgresCache, check_cache_url, where_url
from .cache.writer import CacheWriter
from .claims import send_once
from .dispatch import Dispatcher
from .errors import CacheError, ConfigurationError, InvalidRequestError, RequestFailedError, StoreUnavailable
from .limits import LimitsReport, RateLimiter, estimate_prompt_and_budget
from .options import (
    DEFAULT_BATCH_POLL_INTERVAL,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_WAIT,
    LimitOptions,
    SendOptions,
)
from .options import is_number as _is_number
from .prepare import Preparer, Route, Target, Unit, by_key, check_key, optional_str
from .providers import (
    GenType,
    check_url,
    embedding_gen_type,
    get_provider,
    provider_for_url,
    response_text,
)
from .replies import ReplyProblem, parse_output
from .results import GenerationResult, GenerationSummary, Plan, Results, cost_of
from .schema import OutputSchema
from .settings import (
    CACHE_DIR_ENV,
    CACHE_SCHEMA_ENV,
    CACHE_URL_ENV,
    DEFAULT_CACHE_DIR,
    DEFAULT_PROJECT,
    DEFAULT_PROVIDER,
    PROJECT_ENV,
    Secret,
    resolve,
    resolve_dir,
)
from .slots import Slots
from .transport import DEFAULT_MAX_REPLY_BYTES, TransportChoice

if TYPE_CHECKING:  # imported where batches are used: together ~30 ms of an ~90 ms import
    from .batchledger import BatchJob, BatchList
    from .batchrun import BatchRunner

_log = logging.getLogger("dataformer_nb")


class _Option:
    """An ``AsyncLLM`` attribute kept in its ``SendOptions``: setting it makes new options,
    checked again (``llm.timeout = -1`` is refused as ``timeout=-1`` is)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, llm: Any, owner: type | None = None) -> Any:
        return self if llm is None else getattr(llm._options, self.name)

    def __set__(self, llm: Any, value: Any) -> None:
        llm._options = dataclasses.replace(llm._options, **{self.name: value})


class AsyncLLM:
    """Send chat or text requests to an LLM provider, concurrently, with a disk cache.

    Configuration comes from the arguments, then the environment, then a ``.env`` file
    (``PROJECT_NAME``, ``DATAFORMER_CACHE_DIR``, ``<PROVIDER>_API_KEY``,
    ``<PROVIDER>_BASE_URL``), then defaults. Creating the object sends nothing and opens nothing.
    """

    # Read from, and set into, the run's SendOptions (setting one checks it again).
    gen_type: GenType = _Option()  # type: ignore[assignment]
    max_attempts: int = _Option()  # type: ignore[assignment]
    timeout: float = _Option()  # type: ignore[assignment]
    retry_base_delay: float = _Option()  # type: ignore[assignment]
    transport: TransportChoice = _Option()  # type: ignore[assignment]
    progress: bool = _Option()  # type: ignore[assignment]
    max_reply_bytes: int = _Option()  # type: ignore[assignment]
    max_wait: float = _Option()  # type: ignore[assignment]
    batch_poll_interval: float = _Option()  # type: ignore[assignment]
    batch_size: int | None = _Option()  # type: ignore[assignment]

    def __init__(
        self,
        api_provider: str | None = DEFAULT_PROVIDER,
        model: str | None = None,
        api_key: str | None = None,
        url: str | None = None,
        sampling_params: Mapping[str, Any] | None = None,
        max_requests_per_minute: float | None = None,
        max_tokens_per_minute: float | None = None,
        max_concurrent_requests: int | None = None,
        max_rps: bool = False,
        max_attempts: int = 5,
        token_encoding_name: str | None = None,
        logging_level: int | str | None = None,
        gen_type: GenType | None = None,
        project_name: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 120.0,
        retry_base_delay: float = 0.5,
        transport: TransportChoice = "aiohttp",
        progress: bool = True,
        verbose: bool = True,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        max_wait: float = DEFAULT_MAX_WAIT,
        prices: Mapping[str, tuple[float, float]] | None = None,
        batch_poll_interval: float = DEFAULT_BATCH_POLL_INTERVAL,
        batch_size: int | None = None,
        cache_url: str | None = None,
    ) -> None:
        # The positional order is dataformer 0.0.2's, so its code runs unchanged (README, "Coming from dataformer").
        self.url = None if url is None or url == "" else check_url(url)  # dataformer's default url is ""
        self.api_provider = get_provider(provider_for_url(self.url, DEFAULT_PROVIDER) if api_provider is None
                                         else api_provider).name
        self.model = optional_str(model, "model")
        key = check_key(api_key, "api_key")
        self._api_key = None if key is None else Secret(key)
        if sampling_params is not None and not isinstance(sampling_params, Mapping):
            raise ConfigurationError(
                f"sampling_params={sampling_params!r} must be a dict such as {{'temperature': 0.7}}"
            )
        self.sampling_params = dict(sampling_params or {})
        # Accepted for dataformer's code: token estimates here need no tokenizer (nothing to download).
        self.token_encoding_name = token_encoding_name
        self.logging_level = logging_level
        if logging_level is not None:
            _show_log_lines(logging_level)
        limits = LimitOptions(max_requests_per_minute, max_tokens_per_minute, max_concurrent_requests, max_rps)
        self.max_requests_per_minute = limits.max_requests_per_minute
        self.max_tokens_per_minute = limits.max_tokens_per_minute
        self.max_concurrent_requests: int = limits.max_concurrent_requests or DEFAULT_MAX_CONCURRENT_REQUESTS
        self.max_rps = limits.max_rps
        if gen_type is None:  # an embeddings URL says what it serves
            gen_type = "embedding" if embedding_gen_type(self.url) else "chat"
        # How requests are sent, checked once; the attributes of the same names read and set it.
        self._options = SendOptions(
            gen_type=gen_type, max_attempts=max_attempts, timeout=timeout, retry_base_delay=retry_base_delay,
            transport=transport, progress=progress, max_reply_bytes=max_reply_bytes, max_wait=max_wait,
            batch_poll_interval=batch_poll_interval, batch_size=batch_size)
        self.project_name = normalize_project(resolve(PROJECT_ENV, project_name or None, DEFAULT_PROJECT))
        self.cache_dir = resolve_dir(CACHE_DIR_ENV, cache_dir, DEFAULT_CACHE_DIR, "cache_dir")
        # A team cache's URL holds its password: kept as a Secret, shown as host and database only.
        url = resolve(CACHE_URL_ENV, cache_url or None, None)
        self._cache_url = None if not url else Secret(check_cache_url(url))
        self._cache_schema = resolve(CACHE_SCHEMA_ENV, None, DEFAULT_SCHEMA)
        # model -> (dollars per 1M prompt tokens, per 1M completion tokens): the summary's cost.
        # Never looked up on the network: prices change, and a notebook must run offline.
        self.prices = check_prices(prices)
        self.verbose = verbose
        self.last_summary: GenerationSummary | None = None
        self.last_results: Results | None = None  # also after a failed write or an interrupt
        self._last_run_cached = True
        self._limiter = RateLimiter(self.max_requests_per_minute, self.max_tokens_per_minute,
                                    self.max_concurrent_requests, per_second=self.max_rps)
        self._cache: Store | None = None
        self._batch_runner: BatchRunner | None = None  # the last run's, when it used batch=True

    @property
    def api_key(self) -> Secret | None:
        """The key passed as ``api_key=`` (shown as ``***``; ``.reveal()`` gives it), or None."""
        return self._api_key

    def __repr__(self) -> str:
        where = (f"cache_url={where_url(self._cache_url.reveal())!r}" if self._cache_url
                 else f"cache_dir={self.cache_dir!r}")
        return (f"AsyncLLM(api_provider={self.api_provider!r}, model={self.model!r}, "
                f"project_name={self.project_name!r}, {where})")

    @property
    def cache(self) -> Store:
        """The response cache, opened on first use: the team cache at ``cache_url`` if one is set
        (argument, ``DATAFORMER_CACHE_URL``), else the local one under ``cache_dir``."""
        if self._cache is None:
            url = None if self._cache_url is None else self._cache_url.reveal()
            self._cache = open_store(self.cache_dir, url, self._cache_schema)
        return self._cache

    def clear_cache(self, projects: str | Sequence[str]) -> ClearReport:
        """Clear one project, a list of them, or everything (``"full"``); see ResponseCache.clear."""
        return self.cache.clear(projects)

    def limits(self) -> LimitsReport:
        """What each (endpoint, key) this client has sent to knows of its rate limits: yours, what
        the server's headers said, and what its 429s taught."""
        return self._limiter.report()

    def batches(self, refresh: bool = False) -> BatchList:
        """The provider batches recorded in this client's cache directory (id, provider, status,
        counts, project, created), oldest first. ``refresh=True`` first reads the status of the
        pending ones this client's provider and key can reach."""
        from .batchledger import BatchLedger, BatchList

        records = BatchLedger(self.cache_dir, self.cache).records()
        if refresh and any(r.pending for r in records):
            run_sync(self._runner(self.project_name).refresh(self._default_route(), records))
        return BatchList(r.job() for r in records)

    def cancel_batch(self, batch_id: str) -> BatchJob:
        """Ask the provider to cancel a batch (its id, from ``batches``). What it finished is
        still collected by the next ``generate(..., batch=True)`` of its requests; the rest are
        then submitted again."""
        from .batchledger import is_batch_id

        if not is_batch_id(batch_id):
            raise ConfigurationError(f"batch_id={batch_id!r} is not a batch id: llm.batches() lists them")
        return run_sync(self._runner(self.project_name).cancel(self._default_route(), batch_id)).job()

    def forget_batch(self, batch_id: str) -> None:
        """Forget a recorded batch (its id, or the first 8 characters of the record a message named):
        a later ``generate(..., batch=True)`` of its requests submits them again, and pays again if
        the batch did exist. For a batch held because its service answered with an unusable id,
        or one you know is lost; a pending batch that can be reached is better cancelled."""
        from .batchledger import BatchLedger

        if not isinstance(batch_id, str) or len(batch_id) < 8:
            raise ConfigurationError(f"batch_id={batch_id!r} is not a batch id: llm.batches() lists them")
        ledger = BatchLedger(self.cache_dir, self.cache)
        found = [r for r in ledger.records() if batch_id == r.id or r.local.startswith(batch_id)]
        if len(found) != 1:
            raise ConfigurationError(f"batch_id={batch_id!r} names {'no' if not found else 'more than one'} batch "
                                     f"recorded in {ledger.where}: llm.batches() lists them")
        ledger.forget(found[0])

    def cache_panel(self) -> Any:
        """The cache panel (ipywidgets) for this client's cache."""
        from .widget import CachePanel

        return CachePanel(self.cache)

    def cache_key(self, request: Mapping[str, Any], cache_vars: Mapping[str, Any] | None = None,
                  sample: int = 0) -> str:
        """The key under which ``request``'s response is (or would be) cached; ``sample=k`` gives the
        key of its k-th repeat in one batch (each repeat is a sample of its own)."""
        preparer = self._preparer(cache_vars)
        unit = preparer.prepare(0, request)
        return preparer.sample_key(unit, sample) if sample else unit.cache_key

    # Generating

    def generate(
        self,
        request_list: Sequence[Mapping[str, Any]],
        cache_vars: Mapping[str, Any] | None = None,
        task_id_generator: Any = None,
        use_cache: bool = True,
        project_name: str | None = None,
        clear_project_cache: str | Sequence[str] | None = None,
        *,
        schema: Any = None,
        progress_label: str = "generate",
        summary: bool = True,
        batch: bool = False,
        wait: bool = True,
        reask: int = 0,
    ) -> Results:
        """Send every request and return one result per request, in request order.

        Synchronous everywhere: in a script, and inside a running event loop (Jupyter),
        where the batch runs on its own loop in a worker thread while the caller waits.
        The positional order is dataformer 0.0.2's; ``task_id_generator`` is accepted for its
        code and unused (results come back in request order, which is what its ids were for).
        ``schema`` (a Pydantic model class or a JSON Schema dict) asks for structured output: each
        reply is validated, ``result.parsed`` holds it, and one that does not validate is a failure
        (``cause="invalid output"``), retried and never cached. ``reask=N`` (with ``schema``) re-asks
        instead, up to N times a request: the failed answer and the validation error are appended to
        its messages, as instructor does; the valid answer is cached under the request's own key, and
        every attempt is counted (``summary.attempts``) and its tokens priced. The default stays a
        plain re-send: a re-ask sends a longer, different conversation (more tokens per attempt), and
        a re-send keeps what was sent exactly what was asked. ``progress_label`` names the run on
        its progress bar; ``summary=False`` leaves out the summary line (``%%generate`` shows it as
        its table's caption instead).

        ``batch=True`` sends the requests that are not cached through the provider's batch API
        (OpenAI, Together, Groq, Anthropic: half price, done within 24 h), waiting for them, polling
        every ``batch_poll_interval`` seconds; the batches are recorded in the cache directory, so
        running the same call again (after an interrupt or a restart) resumes them and submits
        nothing twice. With ``wait=False`` it returns once they are submitted (``results.batches``;
        their requests' results are pending); a later call with ``batch=True`` collects them.
        """
        return run_sync(self.agenerate(request_list, cache_vars, task_id_generator, use_cache, project_name,
                                       clear_project_cache, schema=schema, progress_label=progress_label,
                                       summary=summary, batch=batch, wait=wait, reask=reask),
                        interrupted=self._interrupted)

    async def agenerate(
        self,
        request_list: Sequence[Mapping[str, Any]],
        cache_vars: Mapping[str, Any] | None = None,
        task_id_generator: Any = None,
        use_cache: bool = True,
        project_name: str | None = None,
        clear_project_cache: str | Sequence[str] | None = None,
        *,
        schema: Any = None,
        progress_label: str = "generate",
        summary: bool = True,
        batch: bool = False,
        wait: bool = True,
        reask: int = 0,
    ) -> Results:
        """The async twin of ``generate``, for ``await`` in async code."""
        self._last_run_cached = use_cache
        self._batch_runner = None
        project = self._check_arguments(request_list, cache_vars, project_name)
        _check_batch_arguments(batch, wait, use_cache)
        _check_reask(reask, schema, batch)
        output_schema = None if schema is None else OutputSchema(schema)
        with gc_paused():
            preparer = self._preparer(cache_vars, output_schema)
            units = by_key([preparer.prepare(i, r) for i, r in enumerate(request_list)], preparer)
            self._check_keys(units, clear_project_cache is not None, use_cache)
            if clear_project_cache is not None:
                self._say(str(self.cache.clear(clear_project_cache)))
            slots = Slots(request_list, project, self.prices)
            if use_cache:
                _write_journal(self.cache, self.cache_dir)
            to_send = (_take_hits(self.cache, project, slots, output_schema, units) if use_cache
                       else list(units.values()))
        body_of = lambda unit: preparer.body(unit.request, unit.route, unit.index)  # noqa: E731
        batch_jobs = None
        try:
            if batch:
                from .batchledger import BatchList
                from .batchrun import BatchRunner

                self._batch_runner = BatchRunner(self.cache, self.cache_dir, project, self._options,
                                                 progress_label=progress_label, schema=output_schema, say=self._say)
                batch_jobs = BatchList(r.job() for r in await self._batch_runner.run(to_send, slots, body_of, wait))
            else:
                dispatcher = Dispatcher(self._options, body_of=body_of, progress_label=progress_label,
                                        schema=output_schema, reask=reask)

                async def send(some: list[Unit]) -> None:
                    writer = CacheWriter(self.cache, project, self.cache_dir) if use_cache else None
                    await dispatcher.run(some, slots, writer)

                if use_cache and isinstance(self.cache, PostgresCache) and to_send:
                    # A team cache: what another kernel is sending now is waited for, not paid twice.
                    cache = self.cache

                    def take_hits(waiting: list[Unit]) -> list[Unit]:
                        return _take_hits(cache, project, slots, output_schema, {u.cache_key: u for u in waiting})

                    await send_once(cache, to_send, send, take_hits, self._say)
                else:
                    await send(to_send)
        except CacheError as exc:
            if exc.results is None:  # a batch's results could not be stored: it stays to collect
                slots.not_sent(RequestFailedError(f"not collected: {exc}", cause="not collected"))
            self.last_results = exc.results or slots.results()
            raise
        except BaseException as exc:  # an interrupt (or a batch API's refusal): what arrived stays reachable
            if isinstance(exc, Exception):
                cause = "not collected" if batch else "not sent"
                slots.not_sent(RequestFailedError(f"{cause}: {exc}", cause=cause))
            else:
                slots.not_sent(RequestFailedError("not sent: the run was interrupted", cause="interrupted"))
            self.last_results = slots.results()
            raise
        if use_cache and (slots.summary.sent or slots.summary.cached):
            self.cache.touch(project)
            self.cache.notify()
        elif slots.summary.batches:  # submitted, nothing cached yet: the panel lists the pending batches
            self.cache.notify()
        self.last_summary = slots.summary
        if summary:
            self._say(str(slots.summary))
        self.last_results = slots.results(batch_jobs)
        if task_id_generator is not None:
            return _threaded(task_id_generator, self.last_results, use_cache)
        return self.last_results

    def generate_over(
        self,
        data: Any,
        template: str,
        into: str | None = None,
        *,
        column: str = "",
        inplace: bool = False,
        system: str | None = None,
        project_name: str | None = None,
        clear_project_cache: str | Sequence[str] | None = None,
        use_cache: bool = True,
        schema: Any = None,
        batch: bool = False,
        wait: bool = True,
        reask: int = 0,
    ) -> Any:
        """One chat request per row of ``data``: ``template`` filled with the row's fields
        (``{name}`` for a column, ``{item}`` for the row itself, or for ``column`` when given),
        sent like ``generate``, as ``%%generate --over DATA --into COLUMN`` does in a notebook.

        ``data``: a pandas or polars DataFrame, a Hugging Face Dataset, a Series, or any iterable
        of strings or dicts. Returns the Results; with ``into``, the table with the answers as
        that column instead (a copy, unless ``inplace=True`` on a pandas DataFrame; failed rows
        missing, ``into + "_error"`` saying why). ``system`` is a system message for every request.
        Raises ConfigurationError for data of another kind, a missing column, or a template field
        no row defines, before anything is sent.
        """
        from .tables import check_into, fill_template, rows_of, table_kind, write_into

        if into is not None and table_kind(data) is None:
            raise ConfigurationError(f"into={into!r} needs data that is a table (a pandas or polars DataFrame, or a "
                                     f"Dataset), not a {type(data).__name__}: leave out into= to get the results")
        if inplace and into is None:
            raise ConfigurationError("inplace=True goes with into=COLUMN")
        if into is not None:
            check_into(data, inplace)
        rows = rows_of(data, "data", column)
        head = [{"role": "system", "content": system}] if system else []
        requests = [{"messages": [*head, {"role": "user", "content": fill_template(
                        template, {**fields, "item": item}, "the row's fields (or {item})")}]}
                    for fields, item in rows.items]
        if not requests:
            raise ConfigurationError("data has no rows (a generator is used up after one run: make it again)")
        results = self.generate(requests, project_name=project_name, clear_project_cache=clear_project_cache,
                                use_cache=use_cache, schema=schema, batch=batch, wait=wait, reask=reask,
                                progress_label=f"data → {into}" if into else "data")
        return results if into is None else write_into(rows.frame, results, into, inplace)

    def plan(
        self,
        request_list: Sequence[Mapping[str, Any]],
        cache_vars: Mapping[str, Any] | None = None,
        task_id_generator: Any = None,
        use_cache: bool = True,
        project_name: str | None = None,
        clear_project_cache: str | Sequence[str] | None = None,
        *,
        schema: Any = None,
    ) -> Plan:
        """What ``generate`` would do with the same arguments: how many requests are cached,
        how many would be sent, their estimated tokens, cost and time. Nothing is sent or written."""
        project = self._check_arguments(request_list, cache_vars, project_name)
        preparer = self._preparer(cache_vars, None if schema is None else OutputSchema(schema))
        units = by_key([preparer.prepare(i, r) for i, r in enumerate(request_list)], preparer)
        cleared = set(clear_names(clear_project_cache)) if clear_project_cache is not None else set()
        users = self._cached_users(list(units)) if use_cache and FULL not in cleared else {}
        cached = {key for key, projects in users.items() if not projects <= cleared}
        to_send = [unit for key, unit in units.items() if key not in cached]
        prompt = budget = 0
        cost: float | None = 0.0 if self.prices else None
        per_bucket: dict[int, list[Any]] = {}
        for unit in to_send:
            p, b = estimate_prompt_and_budget(preparer.body(unit.request, unit.route, unit.index))
            prompt, budget = prompt + p, budget + b
            this = cost_of((self.prices or {}).get(unit.route.model), p, b)
            cost = None if cost is None or this is None else cost + this
            counts = per_bucket.setdefault(id(unit.route.bucket), [unit.route.bucket, 0, 0])
            counts[1], counts[2] = counts[1] + 1, counts[2] + p + b
        waits = [w for bucket, n, t in per_bucket.values() if (w := bucket.seconds_to_send(n, t)) is not None]
        return Plan(project, len(request_list), len(request_list) - len(to_send), len(to_send), prompt, budget,
                    cost, max(waits) if waits else None)

    def _cached_users(self, keys: list[str]) -> dict[str, frozenset[str]]:
        """The projects using each cached key; without opening (or creating) a cache that is not there."""
        if self._cache is None and self._cache_url is None and not ResponseCache.exists(self.cache_dir):
            return {}
        return self.cache.users(keys)

    def _runner(self, project: str) -> BatchRunner:
        from .batchrun import BatchRunner

        return BatchRunner(self.cache, self.cache_dir, project, dataclasses.replace(self._options, progress=False),
                           say=self._say)

    def _default_route(self) -> Route:
        """Where this client's own requests go (its provider, url, key), for calls about batches."""
        route = self._preparer(None).route_of_target()
        if route.key_error is not None:
            raise route.key_error
        return route

    def _check_arguments(self, request_list: Any, cache_vars: Any, project_name: str | None) -> str:
        """The project to use, once the arguments common to generate and plan are checked."""
        if isinstance(cache_vars, str):  # generate(requests, "Questions"): the order before 0.2
            raise ConfigurationError(
                f"generate's second argument is cache_vars (dataformer's order), not the project: "
                f"pass project_name={cache_vars!r} by keyword"
            )
        if not isinstance(request_list, (list, tuple)):
            raise InvalidRequestError(
                f"request_list must be a list of request dicts, not {type(request_list).__name__}: "
                "pass e.g. [{'messages': [{'role': 'user', 'content': 'Hi'}]}]"
            )
        return normalize_project(project_name) if project_name is not None else self.project_name

    def _preparer(self, cache_vars: Mapping[str, Any] | None, schema: OutputSchema | None = None) -> Preparer:
        target = Target(self.api_provider, self.url, self._api_key, self.model)
        return Preparer(target, self.gen_type, self.sampling_params, self._limiter, cache_vars, schema)

    def _check_keys(self, units: Mapping[str, Unit], clearing: bool, use_cache: bool) -> None:
        """A missing key is only an error for what must be sent: a cached notebook re-runs without keys.
        Clearing first would make everything be sent, so then any missing key is an error."""
        for unit in units.values():
            error = unit.route.key_error
            if error is not None and (clearing or not (use_cache and unit.cache_key in self.cache)):
                raise error

    def _interrupted(self) -> str:
        """What an interrupt of the last run leaves: what is saved, what a re-run will send."""
        runner = self._batch_runner
        pending = [r for r in runner.records if r.pending] if runner is not None else []
        if runner is not None and pending:
            ids = ", ".join(r.id or r.local for r in pending)
            stay = "stays" if len(pending) == 1 else "stay"
            return (f"interrupted: {batches(len(pending))} ({ids}) {stay} submitted, recorded in "
                    f"{runner.ledger.where}; run the same call again (batch=True) to collect them: "
                    "nothing is submitted twice")
        results = self.last_results
        if results is None:  # stopped before anything was prepared
            return "interrupted before anything was sent"
        unsent = sum(1 for r in results if r.error is not None and r.error.cause == "interrupted")
        saved = results.summary.sent
        kept = "saved (cache, llm.last_results)" if self._last_run_cached else "kept in llm.last_results"
        noun = "response" if saved == 1 else "responses"
        return f"interrupted: {saved} new {noun} {kept}; a re-run sends the other {unsent}"

    def _say(self, text: str) -> None:
        _log.info(text)
        if self.verbose and self.logging_level is None:  # with logging_level=, the log line is the one shown
            show_line(text)  # the same words as the %%generate table's caption: one form of the summary


# What the calls that shared a task_id_generator returned, by generator (see _threaded).
_THREADS: weakref.WeakKeyDictionary[Any, list[GenerationResult]] = weakref.WeakKeyDictionary()


def _threaded(task_id_generator: Any, results: Results, use_cache: bool) -> Results:
    """dataformer's thread of calls: each request takes the generator's next id, and with the
    cache on, a call returns the results of the earlier calls that passed the same generator,
    then its own, in id order. Its EvolInstruct and EvolQuality read their answer at
    ``response[k]`` on the k-th call so; a fresh generator (its scorers) gives one call's results."""
    for _ in results:
        with contextlib.suppress(StopIteration, TypeError):
            next(task_id_generator)
    if not use_cache:
        return results
    try:
        earlier = _THREADS.setdefault(task_id_generator, [])
    except TypeError:  # not weak-referenceable: an id source we cannot thread calls with
        return results
    earlier.extend(results)
    return Results(list(earlier), results.summary)


def _check_reask(reask: object, schema: object, batch: bool) -> None:
    if not (type(reask) is int and reask >= 0):
        raise ConfigurationError(f"reask={reask!r} must be a whole number of re-asks per request (0 re-sends blindly)")
    if reask and schema is None:
        raise ConfigurationError(f"reask={reask} goes with schema=: a re-ask shows the model why its answer failed "
                                 "the schema")
    if reask and batch:
        raise ConfigurationError(f"reask={reask} cannot go with batch=True: a batch's answers come back at once; "
                                 "a re-run of the call resubmits those that failed the schema")


def _write_journal(cache: Store, cache_dir: str) -> None:
    """Before the cache is read: the responses a run kept in the local journal while the team
    cache's server was away (``cache.journal``), written to the store, so they are hits, not
    paid again. Left for a later run if the server is away now."""
    from .cache.journal import Journal

    journal = Journal(cache_dir)
    if journal.directory.is_dir():
        with contextlib.suppress(StoreUnavailable):
            journal.replay(cache)


def _take_hits(cache: Store, project: str, slots: Slots, schema: OutputSchema | None, units: Mapping[str, Unit]
               ) -> list[Unit]:
    """Fill the slots of those of ``units`` (by key) found in the cache, now recorded as used by
    ``project``; the rest, to send. Run before sending, and on a team cache for what another run
    was sending."""
    hits = cache.lookup(list(units), project)
    missing = [u for key, u in units.items() if key not in hits]
    # After missing: a cached reply that no longer validates fails, it is not bought again.
    parsed = None if schema is None else _revalidate(hits, units, schema, slots)
    slots.cached(hits, units, parsed)
    slots.saved(slots.summary.saved_tokens + hits.saved_tokens)
    return missing


def _revalidate(hits: dict[str, bytes], units: Mapping[str, Unit], schema: OutputSchema, batch: Slots
                ) -> dict[str, Any]:
    """Each cached reply validated again (a model's own validators may have changed); one that no
    longer validates is that request's failure, and is taken out of ``hits``."""
    parsed = {}
    for key, data in list(hits.items()):
        output = parse_output(schema, json.loads(data))
        if isinstance(output, ReplyProblem):
            del hits[key]
            batch.failed(units[key], RequestFailedError(
                f"{output.message.replace('the reply', 'the cached reply', 1)}: clear its project "
                "(clear_project_cache=) to ask again", cause=output.cause))
        else:
            parsed[key] = output
    return parsed


def _check_batch_arguments(batch: Any, wait: Any, use_cache: Any) -> None:
    if not isinstance(batch, bool) or not isinstance(wait, bool):
        raise ConfigurationError(f"batch={batch!r} and wait={wait!r} must be True or False")
    if not wait and not batch:
        raise ConfigurationError("wait=False only applies to batch=True (a provider batch you collect later): "
                                 "pass batch=True, or leave wait out")
    if batch and not use_cache:
        raise ConfigurationError("batch=True keeps what it pays for in the cache, so it needs use_cache=True: to ask "
                                 "again for cached requests, pass clear_project_cache= instead")


def check_prices(prices: Any) -> dict[str, tuple[float, float]] | None:
    """``prices`` as {model: (input, output) dollars per 1M tokens}, or a ConfigurationError."""
    if prices is None:
        return None
    if not isinstance(prices, Mapping):
        raise ConfigurationError(f"prices={prices!r} must be a dict such as {{'gpt-4o-mini': (0.15, 0.60)}}")
    checked = {}
    for model, price in prices.items():
        if (not isinstance(model, str) or not isinstance(price, (tuple, list)) or len(price) != 2
                or not all(_is_number(p) and p >= 0 for p in price)):
            raise ConfigurationError(
                f"prices[{model!r}] = {price!r} must be (dollars per 1M prompt tokens, per 1M completion tokens), "
                "e.g. (0.15, 0.60)"
            )
        checked[model] = (float(price[0]), float(price[1]))
    return checked


def _show_log_lines(level: int | str) -> None:
    """Show the ``dataformer_nb`` logger's lines (summaries, retries, waits) from ``level`` up,
    as dataformer's ``logging_level=`` did, without reconfiguring the root logger as it did."""
    logger = logging.getLogger("dataformer_nb")
    try:
        logger.setLevel(level)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"logging_level={level!r} is not a logging level ({exc}): pass e.g. "
                                 "logging.INFO or 'WARNING'") from None
    if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        logger.addHandler(logging.StreamHandler())


def get_request_list(instructions: str | Sequence[str], sampling_params: Mapping[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
    """Chat requests from one prompt or a list of prompts, each with ``sampling_params``."""
    if isinstance(instructions, str):
        instructions = [instructions]
    if not isinstance(instructions, Sequence) or not all(isinstance(p, str) for p in instructions):
        raise InvalidRequestError("instructions must be a string or a list of strings")
    return [{"messages": [{"role": "user", "content": p}], **(sampling_params or {})} for p in instructions]


def get_messages(results: Sequence[GenerationResult | Sequence[Any]]) -> list[str | None]:
    """The reply text of each result (None where a request failed)."""
    return [r.text if isinstance(r, GenerationResult) else response_text(r[1]) for r in results]
