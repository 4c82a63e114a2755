"""``%load_ext dataformer_nb``: the ``%%generate`` cell magic and the ``%dataformer`` line magic."""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import csv
import difflib
import json
import re
import shlex
import warnings
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import Bool, Dict, Enum, Float, Int, TraitError, Unicode, default, validate

from ._format import projects_table, safe_markdown, table_bundle
from .cache import FULL, Store, open_store
from .errors import ConfigurationError, DataformerError, DataformerWarning, GenerationInterrupted
from .llms import AsyncLLM
from .providers import PROVIDERS, get_provider
from .results import GenerationResult, Results, prompt_of
from .settings import (
    CACHE_DIR_ENV,
    CACHE_SCHEMA_ENV,
    CACHE_URL_ENV,
    DEFAULT_CACHE_DIR,
    DEFAULT_PROJECT,
    DEFAULT_PROVIDER,
    MODEL_ENV,
    PROJECT_ENV,
    PROVIDER_ENV,
    environment,
    resolve,
)
from .tables import Rows, check_into, fill_template, rows_of, write_into

FORMATS = ("markdown", "text", "json", "none")
SUBCOMMANDS = ("projects", "batches", "clear", "cache", "use", "config", "providers", "help")


class CellResults(Results):
    """The value of a ``%%generate`` cell: the results list, displayed in ``fmt``.

    A batch shows at most ``max_rows`` rows, its head and tail as pandas does, and says where
    the whole list is: a notebook keeps what a cell shows, and 10^4 rows would weigh megabytes.
    """

    def __init__(self, results: Results, fmt: str, batch: bool, max_rows: int = 20, where: str = "_") -> None:
        super().__init__(list(results), results.summary, results.batches)
        self.fmt, self.batch, self.max_rows, self.where = fmt, batch, max_rows, where

    def _ipython_display_(self) -> None:
        if self.fmt == "none":
            return
        shown, hidden = _head_and_tail(len(self), self.max_rows if self.batch else len(self))
        if self.fmt == "json":
            records = [self[i].to_dict() if i is not None else {"more": hidden} for i in shown]
            note = f"\n{self.summary}" + (f"; all {len(self):,} results are in {self.where}" if hidden else "")
            display({"application/json": records, "text/plain": json.dumps(records, indent=1) + note}, raw=True,
                    metadata={"application/json": {"expanded": True}})  # JupyterLab opens the tree
        elif self.batch:
            display(_results_table(self, shown, hidden, self.where), raw=True)
        else:
            text = _answer(self[0])
            bundle = {"text/plain": text}
            if self.fmt == "markdown":
                bundle["text/markdown"] = safe_markdown(text)  # rendered, never run
            display(bundle, raw=True)


@magics_class
class Dataformer(Magics):
    """Defaults for ``%%generate``: set with ``%config Dataformer.<trait> = ...`` or ``%dataformer use``."""

    provider = Unicode(help="Provider for %%generate (default: DATAFORMER_PROVIDER, else openai).").tag(config=True)
    model = Unicode("", help="Model (default: DATAFORMER_MODEL, else the provider's).").tag(config=True)
    project = Unicode(help="Project name (default: PROJECT_NAME, else dataformer).").tag(config=True)
    cache_dir = Unicode(help="Cache directory (default: DATAFORMER_CACHE_DIR, else .cache/dataformer).").tag(
        config=True)
    sampling_params = Dict(help="Sampling parameters added to every request.").tag(config=True)
    format = Enum(FORMATS, "markdown", help="Output: markdown, text, json or none.").tag(config=True)
    progress = Bool(True, help="Show a progress bar.").tag(config=True)
    prices = Dict(help="model -> (dollars per 1M prompt tokens, per 1M completion tokens), for the cost in "
                       "summaries; never looked up online.").tag(config=True)
    max_rows = Int(20, help="A batch shows its first and last rows, this many in all (the rest stay in -o / _).").tag(
        config=True)

    batch_poll_interval = Float(30.0, help="With --batch: seconds between two reads of a batch's status.").tag(
        config=True)

    @validate("batch_poll_interval")
    def _check_poll_interval(self, proposal: Any) -> float:
        if not proposal["value"] > 0:
            raise TraitError(f"Dataformer.batch_poll_interval = {proposal['value']!r}: pass a positive number of "
                             "seconds (default 30)")
        return float(proposal["value"])

    @validate("max_rows")
    def _check_max_rows(self, proposal: Any) -> int:
        if proposal["value"] < 2:
            raise TraitError(f"Dataformer.max_rows = {proposal['value']!r}: show at least 2 rows (default 20)")
        return int(proposal["value"])

    # Defaults follow the one path of settings.resolve: environment, then .env, then default.

    @default("provider")
    def _default_provider(self) -> str:
        return resolve(PROVIDER_ENV, None, DEFAULT_PROVIDER)

    @default("model")
    def _default_model(self) -> str:
        return resolve(MODEL_ENV, None, "")

    @default("project")
    def _default_project(self) -> str:
        return resolve(PROJECT_ENV, None, DEFAULT_PROJECT)

    @default("cache_dir")
    def _default_cache_dir(self) -> str:
        return resolve(CACHE_DIR_ENV, None, DEFAULT_CACHE_DIR)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._llms: dict[tuple[Any, ...], AsyncLLM] = {}

    @property
    def _user_ns(self) -> dict[str, Any]:
        """The notebook's variables."""
        if self.shell is None:
            raise UsageError("the magics need an IPython shell: load them with %load_ext dataformer_nb")
        return self.shell.user_ns

    # %%generate

    @magic_arguments("%generate")  # the usage line reads %%generate, as the cell magic is called
    @argument("target", nargs="?", help="PROVIDER[:MODEL], e.g. together:meta-llama/Llama-3-8b-chat-hf")
    @argument("--over", metavar="VAR[.COLUMN]",
              help="one request per item of VAR: a list, DataFrame, Series, generator, range or any iterable of "
                   "strings or dicts; VAR.COLUMN: that DataFrame column as {item}")
    @argument("--over-file", metavar="PATH", help="one request per line of a JSONL file or row of a CSV file")
    @argument("--encoding", default="utf-8-sig", metavar="CODEC",
              help="with --over-file: the file's encoding (default UTF-8, with or without a BOM)")
    @argument("--into", metavar="COLUMN", help="with --over DATAFRAME: the answers as COLUMN of a copy of it "
                                               "(failed rows NaN, COLUMN_error says why)")
    @argument("--inplace", action="store_true", help="with --into: write into the DataFrame itself")
    @argument("--lines", action="store_true", help="every non-empty line of the cell is a prompt")
    @argument("--system", metavar="TEXT", help="a system message for every request")
    @argument("--temperature", type=float)
    @argument("--max-tokens", type=int)
    @argument("--params", metavar="JSON", help='other sampling parameters, e.g. \'{"top_p": 0.9}\'')
    @argument("--project", metavar="NAME", help="the project the responses belong to")
    @argument("--url", metavar="URL", help="an OpenAI-compatible endpoint or base URL")
    @argument("--timeout", type=float, metavar="SECONDS", help="deadline for each request's whole exchange")
    @argument("--schema", metavar="VAR", help="a Pydantic model class or JSON Schema dict the replies must follow")
    @argument("--reask", metavar="N", type=int, default=0,
              help="with --schema: show a reply that fails it back to the model with the error, up to N times")
    @argument("--dry-run", action="store_true", help="show what would be sent, its tokens, cost and time; send nothing")
    @argument("--batch", action="store_true", help="send through the provider's batch API (half price, done within "
              "24 h); running the cell again resumes the batches, never submitting twice")
    @argument("--no-wait", action="store_true", help="with --batch: return once submitted; run the cell again to "
              "collect")
    @argument("--no-cache", action="store_true", help="neither read nor write the cache")
    @argument("--clear-cache", metavar="NAME|full", action="append", help="clear a project first (repeatable)")
    @argument("-o", "--out", metavar="VAR", help="store the results list in VAR")
    @argument("--llm", metavar="VAR", help="use the AsyncLLM in VAR (and its project, unless --project)")
    @argument("-f", "--format", choices=FORMATS, help="how to show the answers")
    @cell_magic
    def generate(self, line: str, cell: str) -> Any:
        """Send the cell body as a prompt; ``{name}`` is filled from the notebook's variables."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%%generate {line}: {exc}") from None
        try:
            with _one_line_warnings():
                args = self.generate.parser.parse_args(argv)
        except UsageError as exc:
            raise UsageError(_with_suggestion(str(exc), argv, self.generate.parser)) from None
        with _one_line_warnings():
            return self._generate(args, cell)

    def _generate(self, args: Any, cell: str) -> Any:
        if sum(map(bool, (args.over, args.over_file, args.lines))) > 1:
            raise UsageError("--over, --over-file and --lines are exclusive: choose one way of making a batch")
        if args.no_wait and not args.batch:
            raise UsageError("--no-wait goes with --batch (a provider batch collected by running the cell again)")
        if args.inplace and not args.into:
            raise UsageError("--inplace goes with --into COLUMN")
        over = self._over(args)
        if args.into and (over is None or over.frame is None):
            raise UsageError("--into needs --over DATAFRAME (or DATAFRAME.COLUMN; pandas or polars, or a Hugging Face "
                             "Dataset): the answers become its column")
        if args.into:
            try:
                check_into(over.frame, args.inplace)  # type: ignore[union-attr]
            except ConfigurationError as exc:
                raise UsageError(str(exc)) from None
        requests = self._requests(args, cell, over)
        llm = self._llm_for(args)
        schema = None
        if args.schema:
            if args.schema not in self._user_ns:
                raise UsageError(f"--schema {args.schema}: no variable by that name in the notebook")
            schema = self._user_ns[args.schema]
        if args.dry_run:
            try:
                plan = llm.plan(requests, project_name=self._project_for(args, llm),
                                clear_project_cache=args.clear_cache, use_cache=not args.no_cache, schema=schema)
            except DataformerError as exc:
                raise UsageError(str(exc)) from None
            if args.out:
                self._user_ns[args.out] = plan
            return plan
        label = "generate" if over is None else f"{over.name} → {args.into}" if args.into else over.name
        try:
            results = llm.generate(
                requests,
                project_name=self._project_for(args, llm),
                clear_project_cache=args.clear_cache,
                use_cache=not args.no_cache,
                schema=schema,
                progress_label=label,
                summary=not (over or args.lines) or bool(args.into),  # a batch's table caption holds it
                batch=args.batch,
                wait=not args.no_wait,
                reask=args.reask,
            )
        except GenerationInterrupted as exc:  # still an interrupt, naming what this notebook holds
            raise GenerationInterrupted(self._interrupted(str(exc), args, llm)) from None
        except DataformerError as exc:
            raise UsageError(str(exc)) from None
        if args.into:
            try:
                value: Any = write_into(over.frame, results, args.into, args.inplace)  # type: ignore[union-attr]
            except ConfigurationError as exc:
                raise UsageError(str(exc)) from None
        else:
            value = CellResults(results, args.format or self.format, batch=bool(over or args.lines),
                                max_rows=self.max_rows, where=args.out or "_")
        if args.out:
            self._user_ns[args.out] = value
        return value

    def _interrupted(self, message: str, args: Any, llm: AsyncLLM) -> str:
        """The interrupt's message, naming where the results kept are in this notebook: ``-o VAR``
        gets them; else ``VAR.last_results`` of ``--llm VAR``; else the cache alone holds them."""
        if args.out and llm.last_results is not None:
            self._user_ns[args.out] = CellResults(llm.last_results, args.format or self.format, batch=True,
                                                  max_rows=self.max_rows, where=args.out)
            where = args.out
        elif args.llm:
            where = f"{args.llm}.last_results"
        else:
            return (message.replace(" (cache, llm.last_results)", " (cache)")
                    .replace("kept in llm.last_results", "not kept (pass -o VAR to keep them)"))
        return message.replace("llm.last_results", where)

    def _over(self, args: Any) -> Rows | None:
        if args.over_file:
            return _file_items(args.over_file, args.encoding)
        if args.over:
            return _over_items(self._user_ns, args.over)
        return None

    def _requests(self, args: Any, cell: str, over: Rows | None) -> list[dict[str, Any]]:
        template = cell.strip("\n")
        if not template.strip():
            raise UsageError("%%generate needs a prompt in the cell body")
        namespace = self._user_ns
        prompts: Iterable[str]
        if over is not None:  # rows are filled as they are read: a file is never held whole
            prompts = (_fill(template, ChainMap({**fields, "item": item}, namespace)) for fields, item in over.items)
        elif args.lines:
            prompts = [p.strip() for p in _fill(template, namespace).splitlines() if p.strip()]
        else:
            prompts = [_fill(template, namespace)]
        params = {**self.sampling_params, **_json_option(args.params)}
        if args.temperature is not None:
            params["temperature"] = args.temperature
        if args.max_tokens is not None:
            params["max_tokens"] = args.max_tokens
        system = [{"role": "system", "content": args.system}] if args.system else []
        requests = [{"messages": [*system, {"role": "user", "content": p}], **params} for p in prompts]
        if over is not None and not requests:
            raise UsageError(f"--over {over.name}: no items (a generator is used up after one run: make it again)")
        return requests

    def _project_for(self, args: Any, llm: AsyncLLM) -> str:
        """--project; else, with --llm, that AsyncLLM's own project; else the configured one."""
        return args.project or (llm.project_name if args.llm else self.project)

    def _llm_for(self, args: Any) -> AsyncLLM:
        if args.llm:
            llm = self._user_ns.get(args.llm)
            if not isinstance(llm, AsyncLLM):
                raise UsageError(f"--llm {args.llm}: no AsyncLLM by that name in the notebook")
            return llm
        provider, _, model = (args.target or self.provider).partition(":")
        prices = tuple(sorted((m, tuple(p)) for m, p in self.prices.items()))
        settings = (provider, model or self.model or None, args.url, self.cache_dir, self.progress, args.timeout,
                    prices, self.batch_poll_interval)
        if settings not in self._llms:
            timeout = {} if args.timeout is None else {"timeout": args.timeout}
            try:
                self._llms[settings] = AsyncLLM(api_provider=provider, model=settings[1], url=args.url,
                                                cache_dir=self.cache_dir, progress=self.progress,
                                                prices=dict(self.prices) or None,
                                                batch_poll_interval=self.batch_poll_interval, **timeout)
            except DataformerError as exc:
                raise UsageError(str(exc)) from None
        return self._llms[settings]

    # %dataformer

    @line_magic
    def dataformer(self, line: str) -> Any:
        """%dataformer projects | clear NAME|full | cache | use PROVIDER[:MODEL] | config | providers | help"""
        command, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if command in ("", "help"):
            return print(_HELP)
        if command not in SUBCOMMANDS:
            raise UsageError(f"%dataformer {command}: unknown subcommand; use one of {', '.join(SUBCOMMANDS)}")
        try:
            with _one_line_warnings():
                return getattr(self, f"_cmd_{command}")(rest)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None

    def _cmd_projects(self, rest: str) -> None:
        projects = self._cache().projects()
        if not projects:
            return print(f"The cache in {self.cache_dir} holds no projects.")
        display(projects_table(projects), raw=True)

    def _cmd_batches(self, rest: str) -> None:
        from .batchledger import BatchLedger, BatchList

        jobs = BatchList(r.job() for r in BatchLedger(self.cache_dir, self._cache()).records())
        if not jobs:
            return print(f"No provider batches are recorded in {self.cache_dir}.")
        display({"text/plain": str(jobs), "text/html": jobs._repr_html_()}, raw=True)

    def _cmd_clear(self, rest: str) -> None:
        if not rest:
            raise UsageError("%dataformer clear NAME [NAME ...] | full")
        names = rest.split()
        report = self._cache().clear(FULL if names == [FULL] else names)
        text = str(report)
        print(text[0].upper() + text[1:])

    def _cmd_cache(self, rest: str) -> Any:
        from .widget import CachePanel

        return CachePanel(cache_dir=self.cache_dir)

    def _cmd_use(self, rest: str) -> None:
        if not rest:
            raise UsageError("%dataformer use PROVIDER[:MODEL], e.g. %dataformer use together:meta-llama/Llama-3-8b")
        provider, _, model = rest.partition(":")
        self.provider, self.model = get_provider(provider).name, model
        print(f"%%generate now uses {self.provider}" + (f" with model {model}" if model else ""))

    def _cmd_config(self, rest: str) -> None:
        provider = PROVIDERS.get(self.provider)
        key = "n/a" if provider is None or not provider.key_env else (
            f"{provider.key_env} {'set' if environment().get(provider.key_env) else 'unset'}")
        rows = [["provider", self.provider], ["model", self.model or "(provider default)"],
                ["project", self.project], ["cache_dir", self.cache_dir],
                ["sampling_params", json.dumps(self.sampling_params)], ["format", self.format], ["key", key]]
        display(table_bundle(["setting", "value"], rows), raw=True)

    def _cmd_providers(self, rest: str) -> None:
        env = environment()
        rows = [[p.name, p.base(env), p.key_env or "-",
                 "-" if not p.key_env else ("set" if env.get(p.key_env) else "unset")]
                for p in PROVIDERS.values()]
        display(table_bundle(["provider", "base URL", "key variable", "key"], rows), raw=True)

    def _cache(self) -> Store:
        # The team cache's URL holds a password: it comes from DATAFORMER_CACHE_URL (environment
        # or .env), never from a trait, which %config would print.
        return open_store(self.cache_dir, resolve(CACHE_URL_ENV, None, None), resolve(CACHE_SCHEMA_ENV, None, None))


_HELP_ROWS = [
    ("%dataformer projects", "cached projects: responses, size, last used"),
    ("%dataformer batches", "provider batches recorded (%%generate --batch): status, counts, project"),
    ("%dataformer clear NAME|full", "clear one or more projects, or the whole cache"),
    ("%dataformer cache", "the cache panel"),
    ("%dataformer use PROVIDER[:MODEL]", "defaults for %%generate in this session"),
    ("%dataformer config", "current defaults (keys shown as set/unset)"),
    ("%dataformer providers", "known providers, base URLs, key variables"),
]
_HELP = "\n".join(f"{usage:<{max(len(u) for u, _ in _HELP_ROWS)}}  {what}" for usage, what in _HELP_ROWS) + (
    "\n%%generate [PROVIDER[:MODEL]] [--over VAR | --over-file PATH | --lines] [options]   (see %%generate?)")


# True while a magic runs, in its context: tasks and the worker thread of its run inherit it.
_IN_MAGIC: contextvars.ContextVar[bool] = contextvars.ContextVar("dataformer_nb_in_magic", default=False)


class _OneLineWarningFormat:
    """``warnings.formatwarning`` while the extension is loaded: a DataformerWarning raised
    within a magic reads ``UnknownProjectWarning: ...``, one line (the source line of the
    library that raised it means nothing to a notebook user). Anything else, including our
    warnings outside a magic and on other threads, is formatted by the function it wraps.

    Installed once by ``%load_ext`` and removed by ``%unload_ext``, not swapped per call: the
    warnings module has one process-wide display hook before Python 3.14, and a swap per magic
    would change it for every thread while the magic runs. The warnings stay real warnings:
    filters and ``pytest.warns`` see them; only their display changes."""

    def __init__(self, wrapped: Callable[..., str]) -> None:
        self.wrapped = wrapped

    def __call__(self, message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> str:
        if _IN_MAGIC.get() and issubclass(category, DataformerWarning):
            return f"{category.__name__}: {message}\n"
        return self.wrapped(message, category, *args, **kwargs)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Within this block (and the runs it starts) our warnings are shown as one line."""
    token = _IN_MAGIC.set(True)
    try:
        yield
    finally:
        _IN_MAGIC.reset(token)


def _with_suggestion(message: str, argv: list[str], parser: Any) -> str:
    """``message`` with ``did you mean --temperature?`` for each unknown option that is close to a known one."""
    known = re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", parser.format_usage())
    hints = []
    for token in argv:
        name = token.split("=", 1)[0]
        if name.startswith("-") and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                hints.append(f"{name}: did you mean {close[0]}?")
    return "; ".join([message, *hints])


def _fill(template: str, namespace: Mapping[str, Any]) -> str:
    try:
        return fill_template(template, namespace, "the notebook")
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _over_items(namespace: Mapping[str, Any], spec: str) -> Rows:
    name, _, column = spec.partition(".")
    if name not in namespace:
        raise UsageError(f"--over {spec}: no variable {name!r} in the notebook")
    try:
        return rows_of(namespace[name], spec if column else name, column,
                       where=f"--over {spec}" if column else f"--over {name}")
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _file_items(path: str, encoding: str = "utf-8-sig") -> Rows:
    """The rows of a JSONL or CSV file, read in one place: decoded line by line in ``encoding``
    (UTF-8 by default, with or without the BOM Excel writes), each failure a UsageError naming
    the file, the line and the fix."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"--over-file {path}: no such file")
    suffix = file.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise UsageError(f"--over-file {path}: use a .jsonl file (one JSON value a line) or a .csv file")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(f"--encoding {encoding}: no such encoding (try utf-8, latin-1, cp1252)") from None
    rows = _csv_rows(file, encoding) if suffix == ".csv" else _jsonl_rows(file, encoding)
    return Rows(((row if isinstance(row, Mapping) else {}, row) for row in rows), file.name)


def _lines(file: Path, encoding: str, where: list[int]) -> Iterator[str]:
    """``file``'s lines decoded, counting them in ``where[0]``."""
    with file.open("rb") as raw:
        for number, line in enumerate(raw, 1):
            where[0] = number
            try:
                yield line.decode(encoding)
            except UnicodeDecodeError as exc:
                raise UsageError(f"--over-file {file}: line {number} is not valid {encoding.removesuffix('-sig')} "
                                 f"(byte {line[exc.start]:#04x}): pass --encoding (latin-1 or cp1252 for most "
                                 "spreadsheets' exports), or save the file as UTF-8") from None


def _jsonl_rows(file: Path, encoding: str) -> Iterator[Any]:
    where = [0]
    for line in _lines(file, encoding, where):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise UsageError(f"--over-file {file}: line {where[0]} is not JSON ({exc})") from None
            except RecursionError:
                raise UsageError(f"--over-file {file}: line {where[0]} is nested too deeply to read") from None


def _csv_rows(file: Path, encoding: str) -> Iterator[dict[str, str]]:
    where = [0]
    try:
        yield from csv.DictReader(_lines(file, encoding, where))
    except csv.Error as exc:
        raise UsageError(f"--over-file {file}: line {where[0]}: {exc} (a field over {csv.field_size_limit():,} "
                         "characters is refused: put long texts in a .jsonl file)") from None


def _head_and_tail(n: int, max_rows: int) -> tuple[list[int | None], int]:
    """The row numbers to show (None where rows are left out) and how many are left out."""
    if n <= max_rows:
        return list(range(n)), 0
    head = (max_rows + 1) // 2
    tail = max_rows - head
    return [*range(head), None, *range(n - tail, n)], n - head - tail


def _json_option(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--params {text!r} is not JSON ({exc}): write e.g. --params '{{\"top_p\": 0.9}}'") \
            from None
    if not isinstance(value, dict):
        raise UsageError(f"--params {text!r} must be a JSON object")
    return value


def _answer(result: GenerationResult) -> str:
    return f"**{_state(result)}**: {result.error}" if result.error is not None else (result.text or "")


def _state(result: GenerationResult) -> str:
    """new, cached, failed, or pending (waiting in a provider batch: --batch --no-wait)."""
    if result.error is not None:
        return "pending" if result.pending else "failed"
    return "cached" if result.cached else "new"


def _prompt(result: GenerationResult) -> str:
    return str(prompt_of(result.request) or "")  # its text; images as [image 512x512]


def _results_table(results: Results, shown: list[int | None], hidden: int, where: str) -> dict[str, str]:
    def answer(r: GenerationResult) -> str:  # plain text: a table cell does not render Markdown
        return f"{_state(r)}: {r.error}" if r.error is not None else (r.text or "")

    rows = [["…", f"… {hidden:,} more …", "", ""] if i is None else
            [str(i), _clip(_prompt(results[i])), _clip(answer(results[i]), 200), _state(results[i])] for i in shown]
    caption = str(results.summary) + (f" · all {len(results):,} results are in {where}" if hidden else "")
    return table_bundle(["#", "prompt", "answer", "status"], rows, caption=caption)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%%generate`` and ``%dataformer`` magics with ``ipython``."""
    magics = Dataformer(shell=ipython, parent=ipython)
    ipython.register_magics(magics)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, Dataformer)] + [magics]
    if not isinstance(warnings.formatwarning, _OneLineWarningFormat):
        warnings.formatwarning = _OneLineWarningFormat(warnings.formatwarning)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext dataformer_nb``: the warnings' display is given back as it was."""
    if isinstance(warnings.formatwarning, _OneLineWarningFormat):
        warnings.formatwarning = warnings.formatwarning.wrapped

