"""``%load_ext dataformer_nb``: the ``%%generate`` cell magic and the ``%dataformer`` line magic."""

from __future__ import annotations

import html
import json
import shlex
import string
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import Bool, Dict, Enum, Unicode, default

from ._format import human_size
from .cache import FULL, ResponseCache
from .errors import ConfigurationError, DataformerError
from .llms import AsyncLLM
from .providers import PROVIDERS, get_provider
from .results import GenerationResult, Results
from .settings import (
    CACHE_DIR_ENV,
    DEFAULT_CACHE_DIR,
    DEFAULT_PROJECT,
    DEFAULT_PROVIDER,
    MODEL_ENV,
    PROJECT_ENV,
    PROVIDER_ENV,
    environment,
    resolve,
)

FORMATS = ("markdown", "text", "json", "none")
SUBCOMMANDS = ("projects", "clear", "cache", "use", "config", "providers", "help")


class CellResults(Results):
    """The value of a ``%%generate`` cell: the results list, displayed in ``fmt``."""

    def __init__(self, results: Results, fmt: str, batch: bool) -> None:
        super().__init__(list(results), results.summary)
        self.fmt, self.batch = fmt, batch

    def _ipython_display_(self) -> None:
        if self.fmt == "none":
            return
        if self.fmt == "json":
            display({"application/json": self.to_records(), "text/plain": json.dumps(self.to_records(), indent=1)},
                    raw=True)
        elif self.batch:
            display(_results_table(self), raw=True)
        else:
            text = _answer(self[0])
            bundle = {"text/plain": text}
            if self.fmt == "markdown":
                bundle["text/markdown"] = text
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

    # %%generate

    @magic_arguments()
    @argument("target", nargs="?", help="PROVIDER[:MODEL], e.g. together:meta-llama/Llama-3-8b-chat-hf")
    @argument("--over", metavar="VAR", help="one request per item of VAR (list, tuple, Series, DataFrame)")
    @argument("--lines", action="store_true", help="every non-empty line of the cell is a prompt")
    @argument("--system", metavar="TEXT", help="a system message for every request")
    @argument("--temperature", type=float)
    @argument("--max-tokens", type=int)
    @argument("--params", metavar="JSON", help='other sampling parameters, e.g. \'{"top_p": 0.9}\'')
    @argument("--project", metavar="NAME", help="the project the responses belong to")
    @argument("--url", metavar="URL", help="an OpenAI-compatible endpoint or base URL")
    @argument("--timeout", type=float, metavar="SECONDS", help="deadline for each request's whole exchange")
    @argument("--no-cache", action="store_true", help="neither read nor write the cache")
    @argument("--clear-cache", metavar="NAME|full", action="append", help="clear a project first (repeatable)")
    @argument("-o", "--out", metavar="VAR", help="store the results list in VAR")
    @argument("--llm", metavar="VAR", help="use the AsyncLLM in VAR")
    @argument("-f", "--format", choices=FORMATS, help="how to show the answers")
    @cell_magic
    def generate(self, line: str, cell: str) -> CellResults | None:
        """Send the cell body as a prompt; ``{name}`` is filled from the notebook's variables."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%%generate {line}: {exc}") from None
        args = self.generate.parser.parse_args(argv)
        if args.over and args.lines:
            raise UsageError("--over and --lines are exclusive: choose one way of making a batch")
        requests = self._requests(args, cell)
        llm = self._llm_for(args)
        try:
            results = llm.generate(
                requests,
                project_name=args.project or self.project,
                clear_project_cache=args.clear_cache,
                use_cache=not args.no_cache,
            )
        except DataformerError as exc:
            raise UsageError(str(exc)) from None
        cell_results = CellResults(results, args.format or self.format, batch=bool(args.over or args.lines))
        if args.out:
            self.shell.user_ns[args.out] = cell_results
        return cell_results

    def _requests(self, args: Any, cell: str) -> list[dict[str, Any]]:
        template = cell.strip("\n")
        if not template.strip():
            raise UsageError("%%generate needs a prompt in the cell body")
        namespace = self.shell.user_ns
        if args.over:
            prompts = [_fill(template, ChainMap(_fields(item), namespace)) for item in _items(namespace, args.over)]
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
        return [{"messages": [*system, {"role": "user", "content": p}], **params} for p in prompts]

    def _llm_for(self, args: Any) -> AsyncLLM:
        if args.llm:
            llm = self.shell.user_ns.get(args.llm)
            if not isinstance(llm, AsyncLLM):
                raise UsageError(f"--llm {args.llm}: no AsyncLLM by that name in the notebook")
            return llm
        provider, _, model = (args.target or self.provider).partition(":")
        settings = (provider, model or self.model or None, args.url, self.cache_dir, self.progress, args.timeout)
        if settings not in self._llms:
            timeout = {} if args.timeout is None else {"timeout": args.timeout}
            try:
                self._llms[settings] = AsyncLLM(api_provider=provider, model=settings[1], url=args.url,
                                                cache_dir=self.cache_dir, progress=self.progress, **timeout)
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
            return getattr(self, f"_cmd_{command}")(rest)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None

    def _cmd_projects(self, rest: str) -> None:
        projects = self._cache().projects()
        if not projects:
            return print(f"The cache in {self.cache_dir} holds no projects.")
        rows = [[p.name, str(p.responses), human_size(p.bytes), p.last_used.astimezone().strftime("%Y-%m-%d %H:%M")]
                for p in projects]
        display(_table(["project", "responses", "size", "last used"], rows), raw=True)

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
        display(_table(["setting", "value"], rows), raw=True)

    def _cmd_providers(self, rest: str) -> None:
        env = environment()
        rows = [[p.name, p.base(env), p.key_env or "-",
                 "-" if not p.key_env else ("set" if env.get(p.key_env) else "unset")]
                for p in PROVIDERS.values()]
        display(_table(["provider", "base URL", "key variable", "key"], rows), raw=True)

    def _cache(self) -> ResponseCache:
        return ResponseCache(self.cache_dir)


_HELP = """%dataformer projects            cached projects: responses, size, last used
%dataformer clear NAME|full     clear one or more projects, or the whole cache
%dataformer cache               the cache panel
%dataformer use PROVIDER[:MODEL]  defaults for %%generate in this session
%dataformer config              current defaults (keys shown as set/unset)
%dataformer providers           known providers, base URLs, key variables
%%generate [PROVIDER[:MODEL]] [--over VAR | --lines] [options]   (see %%generate?)"""


def _fill(template: str, namespace: Mapping[str, Any]) -> str:
    try:
        return string.Formatter().vformat(template, (), namespace)
    except KeyError as exc:
        raise UsageError(
            f"{{{exc.args[0]}}} in the prompt is not defined in the notebook: define it, "
            "or write {{ and }} for literal braces"
        ) from None
    except (IndexError, ValueError, AttributeError) as exc:
        raise UsageError(f"the prompt template cannot be filled ({exc}): write {{{{ and }}}} for literal braces") \
            from None


def _items(namespace: Mapping[str, Any], name: str) -> list[Any]:
    if name not in namespace:
        raise UsageError(f"--over {name}: no variable by that name in the notebook")
    value = namespace[name]
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        return list(value.to_dict("records"))
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return list(value.tolist() if hasattr(value, "tolist") else value)
    raise UsageError(f"--over {name}: a {type(value).__name__} is not a list, tuple, Series or DataFrame")


def _fields(item: Any) -> dict[str, Any]:
    fields = {str(k): v for k, v in item.items()} if isinstance(item, Mapping) else {}
    return {**fields, "item": item}


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
    return f"**failed**: {result.error}" if result.error is not None else (result.text or "")


def _prompt(result: GenerationResult) -> str:
    return str(result.request["messages"][-1]["content"])


def _table(header: list[str], rows: list[list[str]], caption: str = "") -> dict[str, str]:
    """A table as a mime bundle: HTML for notebooks, aligned text for terminals."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left;white-space:pre-wrap'>{html.escape(str(c))}</td>"
                         for c in row) + "</tr>"
        for row in rows
    )
    caption_html = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return {"text/plain": "\n".join([*lines, caption]).rstrip(),
            "text/html": f"<table>{caption_html}<tr>{head}</tr>{body}</table>"}


def _results_table(results: Results) -> dict[str, str]:
    def mark(r: GenerationResult) -> str:
        return "failed" if r.error is not None else ("cached" if r.cached else "new")

    rows = [[str(i), _clip(_prompt(r)), _clip(_answer(r), 200), mark(r)] for i, r in enumerate(results)]
    return _table(["#", "prompt", "answer", ""], rows, caption=str(results.summary))


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_ipython_extension(ipython: Any) -> None:
    magics = Dataformer(shell=ipython, parent=ipython)
    ipython.register_magics(magics)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, Dataformer)] + [magics]
