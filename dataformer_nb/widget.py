"""``CachePanel``: an ipywidgets view of cached projects, with delete buttons."""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets as w

from ._format import batches, human_size, money, plural, projects_table, table_bundle, tokens, when, wrapping_html
from .batchledger import BatchLedger
from .cache import FULL, ClearReport, Entry, PostgresCache, ProjectInfo, ResponseCache, Store, open_store
from .cache.postgres import check_cache_url
from .errors import DataformerError
from .providers import response_text
from .settings import CACHE_DIR_ENV, CACHE_SCHEMA_ENV, CACHE_URL_ENV, DEFAULT_CACHE_DIR, Secret, resolve, resolve_dir

PAGE_SIZE = 20
T = TypeVar("T")
# Numbers right-aligned, headers bold and never wrapped (a Label neither wraps nor overflows: it
# ends in "…" where its column is too narrow, which the widths below avoid).
_STYLE = ("<style>.dfnb-number {justify-self: end} .dfnb-title {font-weight: bold}"
          " .dfnb-batches th, .dfnb-batches td {padding: 0.2em 1.5em 0.2em 0}</style>")


class CachePanel:
    """Projects in a response cache: responses, size, last used, and a Delete button each.

    ``CachePanel(cache)`` with a ``ResponseCache`` or ``PostgresCache``, a directory,
    or anything with a ``cache`` attribute (an ``AsyncLLM``); ``CachePanel(cache_dir=...)``,
    ``CachePanel(cache_url=...)`` or ``CachePanel()`` for the configured one (a team cache if
    ``DATAFORMER_CACHE_URL`` is set). It refreshes itself after every
    ``generate`` or clear into the same directory in this kernel, and on Refresh for changes
    made by other processes. Deleting asks for confirmation in place.
    """

    def __init__(self, cache: Store | str | os.PathLike[str] | Any = None, *,
                 cache_dir: str | os.PathLike[str] | None = None, cache_url: str | None = None) -> None:
        stores = (ResponseCache, PostgresCache)
        if cache is not None and not isinstance(cache, (*stores, str, os.PathLike)):
            cache_dir = cache_dir or getattr(cache, "cache_dir", None)  # where an AsyncLLM keeps its batch records
            cache = cache.cache  # an AsyncLLM, or anything else that holds a cache
        self._cache: Store | None = cache if isinstance(cache, stores) else None
        directory = cache if isinstance(cache, (str, os.PathLike)) else cache_dir
        if isinstance(cache, ResponseCache):
            directory = cache.directory
        # Batch records stay in the cache directory whichever store holds the responses.
        self._cache_dir = resolve_dir(CACHE_DIR_ENV, directory, DEFAULT_CACHE_DIR, "cache_dir")
        url = resolve(CACHE_URL_ENV, cache_url or None, None)
        self._cache_url = None if self._cache is not None or not url else Secret(check_cache_url(url))
        self.header = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.compact_button = w.Button(description="Compact", icon="compress",
                                       tooltip="give back to the disk the room deleted responses left in the cache")
        self.delete_all_button = w.Button(description="Delete all", button_style="danger", icon="trash")
        self.header_actions = w.HBox([self.refresh_button, self.compact_button, self.delete_all_button],
                                     layout=w.Layout(flex="0 0 auto"))
        self.rows = w.VBox(layout=w.Layout(overflow="auto"))  # narrower than the table: it scrolls, never cut
        self.pending_batches = w.HTML()
        self.status = w.HTML()
        self.header.layout = w.Layout(flex="1 1 auto")
        self.widget = w.VBox([w.HBox([self.header, self.header_actions], layout=w.Layout(flex_flow="row wrap")),
                              self.rows, self.pending_batches, self.status])
        self.project_rows: dict[str, w.GridBox] = {}
        self.browsers: dict[str, EntriesView] = {}  # the projects opened with Browse
        self.refresh_button.on_click(lambda _: self.refresh())
        self.compact_button.on_click(lambda _: self.compact())
        self.delete_all_button.on_click(lambda _: self._ask(self.header_actions, FULL))
        self._subscribed = False
        self.summary = ""  # the header as plain text, for the static fallback
        self.refresh()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live widget where a kernel is attached; the same table as static HTML and text for
        terminals, saved notebooks and nbval (which would otherwise show ``VBox(children=...)``)."""
        static = projects_table(self._cache.projects() if self._cache is not None else [], self.summary)
        pending = self._pending_table()
        if pending:
            static = {kind: static[kind] + ("\n\n" if kind == "text/plain" else "") + pending[kind] for kind in static}
        return {**self.widget._repr_mimebundle_(include=include, exclude=exclude), **static}

    def close(self) -> None:
        """Stop listening to the cache and close the widgets."""
        if self._subscribed and self._cache is not None:
            self._cache.unsubscribe(self.refresh)
        self.widget.close()

    # Rendering

    def refresh(self) -> None:
        """Re-read the cache and redraw; errors go to the status line."""
        try:
            projects = self._read()
        except (DataformerError, OSError) as exc:
            self._error(str(exc))
            return
        cache = self._cache
        # Unique responses and their bytes (a response several projects share counts once, so
        # the rows may add up to more), and the database file's size, labelled as such.
        unique = (f"{plural(len(cache), 'response')}, {human_size(cache.stored_bytes)} (shared ones counted once)"
                  if cache else "")
        on_disk = f"{human_size(cache.volume())} on disk" if cache else ""
        where = cache.location if cache else ""
        # The header wraps only between its parts (the path, the counts, the size on disk).
        self.header.value = _STYLE + wrapping_html([f"<b>Cache</b> <code>{html.escape(where)}</code>:",
                                                    html.escape(unique), f"· {html.escape(on_disk)}"], "")
        self.summary = f"Cache {where}: {unique} · {on_disk}"
        priced = any(p.cost is not None for p in projects)
        shared = any(p.users for p in projects)  # a team cache: who used each project
        titles = ["project", "responses", "size", "tokens in / out", "tokens saved", *(["cost"] if priced else []),
                  "last used", *(["used by"] if shared else [])]
        texts = {p.name: _project_cells(p, priced, shared) for p in projects}
        layout = _columns(titles, list(texts.values()), buttons="13.8em")
        numbers = range(1, titles.index("last used"))  # counts, sizes, tokens, cost: right-aligned
        self.project_rows = {p.name: self._row(p, texts[p.name], layout, numbers) for p in projects}
        self.browsers = {name: view for name, view in self.browsers.items() if name in self.project_rows}
        for view in self.browsers.values():
            view.show()
        if projects:
            header = w.GridBox(_titles(titles, numbers), layout=layout)
            self.rows.children = [header, *(child for name, row in self.project_rows.items()
                                            for child in (row, *([self.browsers[name].widget]
                                                                 if name in self.browsers else [])))]
        else:
            self.rows.children = [w.HTML("The cache holds no projects yet: run <code>generate</code> to fill it.")]
        self.delete_all_button.disabled = not projects
        pending = self._pending_table()
        # Spaced like the project rows above it (_STYLE): a bare HTML table runs its columns together.
        self.pending_batches.value = f"<div class='dfnb-batches'>{pending['text/html']}</div>" if pending else ""

    def _pending_table(self) -> dict[str, str]:
        """The provider batches still to collect, by project, as last seen: the panel holds no key,
        so it does not ask the provider (``llm.batches(refresh=True)`` does)."""
        if self._cache is None:
            return {}
        records = BatchLedger(self._cache_dir, self._cache).records()  # without their keys: not needed here
        jobs = sorted((r.job() for r in records if r.pending), key=lambda j: j.project)
        if not jobs:
            return {}
        rows = [[job.project, job.id, job.status, f"{job.done:,} / {job.requests:,}", when(job.created)]
                for job in jobs]
        return table_bundle(["project", "pending batch", "status (last seen)", "answered", "created"], rows,
                            caption=f"{batches(len(jobs))} pending: run the same generate(..., batch=True) to collect")

    def _read(self) -> list[ProjectInfo]:
        if self._cache is None:
            self._cache = open_store(self._cache_dir, None if self._cache_url is None else self._cache_url.reveal(),
                                     resolve(CACHE_SCHEMA_ENV, None, None))
        _check_still_there(self._cache)
        if not self._subscribed:
            self._cache.subscribe(self.refresh)
            self._subscribed = True
        return self._cache.projects()

    def _row(self, project: ProjectInfo, texts: list[str], layout: w.Layout, numbers: range) -> w.GridBox:
        browse = w.Button(description="Browse", icon="list", layout=w.Layout(width="7.2em"))
        delete = w.Button(description="Delete", button_style="warning", icon="trash", layout=w.Layout(width="6.3em"))
        actions = w.HBox([browse, delete])
        browse.on_click(lambda _: self.browse(project.name))
        delete.on_click(lambda _: self._ask(actions, project.name))
        return w.GridBox([*_cells(texts, numbers), actions], layout=layout)

    def browse(self, project: str) -> EntriesView:
        """Open (or close, if open) the entries of ``project`` under its row."""
        if project in self.browsers:
            del self.browsers[project]
        else:
            assert self._cache is not None
            self.browsers[project] = EntriesView(self._cache, project, self.status)
        self.refresh()
        return self.browsers.get(project)  # type: ignore[return-value]

    # Deleting, with confirmation in place

    def _ask(self, actions: w.HBox, target: str) -> None:
        original = actions.children
        confirm = w.Button(description="Confirm", button_style="danger")
        cancel = w.Button(description="Cancel")
        confirm.on_click(lambda _: self._delete(target))
        cancel.on_click(lambda _: setattr(actions, "children", original))
        actions.children = (confirm, cancel)
        what = "every project" if target == FULL else f"project {target}"
        self.status.value = f"Delete {html.escape(what)}? Confirm or Cancel."

    def _delete(self, target: str) -> None:
        report = self._on_cache(lambda cache: cache.clear(target))
        if report is not None:
            self.refresh()
            self.status.value = html.escape(_freed(report))

    def compact(self) -> None:
        """Give back to the disk the room deleted responses left in the cache (see
        ``ResponseCache.compact``); says what it freed in the status line."""
        freed = self._on_cache(lambda cache: cache.compact())
        if freed is not None and self._cache is not None:
            self.refresh()
            self.status.value = html.escape(f"Compacted: freed {human_size(freed)}; "
                                            f"{human_size(self._cache.volume())} on disk now.")

    def _on_cache(self, action: Callable[[Store], T]) -> T | None:
        """``action`` on the cache with every button disabled meanwhile; None, with the error in
        the status line, if it fails."""
        self._set_buttons_disabled(True)
        try:
            if self._cache is None:
                raise DataformerError("the cache could not be opened: press Refresh to try again")
            _check_still_there(self._cache)
            return action(self._cache)
        except (DataformerError, OSError) as exc:
            self._error(str(exc))
            return None
        finally:
            self._set_buttons_disabled(False)

    def _set_buttons_disabled(self, disabled: bool) -> None:
        for button in self.header_actions.children:
            button.disabled = disabled
        for row in self.project_rows.values():
            for button in row.children[-1].children:
                button.disabled = disabled

    def _error(self, message: str) -> None:
        self.status.value = _error_line(message)


def _project_cells(project: ProjectInfo, priced: bool, shared: bool) -> list[str]:
    cost = [money(project.cost) if project.cost is not None else "-"] if priced else []
    users = [", ".join(project.users)] if shared else []
    return [project.name, f"{project.responses:,}", human_size(project.bytes),
            tokens(project.prompt_tokens, project.completion_tokens), f"{project.saved_tokens:,}", *cost,
            when(project.last_used), *users]


def _columns(titles: list[str], rows: list[list[str]], buttons: str) -> w.Layout:
    """The project rows' grid: columns that fit their text (a name longer than 30 digits ends in
    "…", whole in its tooltip), then the buttons. In a narrower window the table scrolls."""
    sizes = _widths(titles, rows)
    sizes[0] = f"min({sizes[0]}, 31ch)"
    return _grid([*sizes, buttons])


def _widths(titles: list[str], rows: list[list[str]]) -> list[str]:
    """Widths that fit each column's longest text, header included, in ``ch`` (the width of a
    digit), with one more each for the words' share of guessing; bold headers a tenth wider."""
    widest = [max([_width(title) * 1.1, *(_width(row[i]) for row in rows)]) for i, title in enumerate(titles)]
    return [f"{math.ceil(n) + 1}ch" for n in widest]


def _width(text: str) -> float:
    """``text``'s width in ``ch``, near enough for the sans-serif fonts notebooks use: a digit is
    1 by definition, most letters about 1, spaces, punctuation and thin letters half, m and w 1.5."""
    return sum(0.5 if c in _THIN else 1.5 if c in "mwMW" else 1.0 for c in text)


_THIN = frozenset(" .,:;/'|!()[]-ijlrtfI")


def _grid(columns: list[str]) -> w.Layout:
    return w.Layout(grid_template_columns=" ".join(columns), grid_gap="0 0.8em", align_items="center")


def _titles(titles: list[str], numbers: range) -> list[w.Label]:
    cells = [w.Label(title) for title in titles] + [w.Label("")]
    for i, cell in enumerate(cells):
        cell.add_class("dfnb-title")
        if i in numbers:
            cell.add_class("dfnb-number")
    return cells


def _cells(texts: list[str], numbers: range) -> list[w.Label]:
    cells = [w.Label(text, tooltip=text) for text in texts]
    for i in numbers:
        cells[i].add_class("dfnb-number")
    return cells


def _check_still_there(cache: Store) -> None:
    """A DataformerError if a local cache's directory was deleted (a team cache says so itself)."""
    if isinstance(cache, ResponseCache) and not cache.directory.is_dir():
        raise DataformerError(f"the cache directory {cache.directory} no longer exists")


def _freed(report: ClearReport) -> str:
    text = f"Freed {plural(report.responses_deleted, 'response')} ({human_size(report.bytes_freed)})"
    if report.kept_shared:
        text += f"; kept {report.kept_shared} still used by other projects"
    return text + "."


class EntriesView:
    """The responses one project uses, a page at a time, with a filter, a Delete button each,
    and Export (JSONL). Each page reads only what it shows."""

    def __init__(self, cache: Store, project: str, status: w.HTML) -> None:
        self._cache, self.project, self._status = cache, project, status
        self.offset = 0
        self.filter = w.Text(placeholder="filter: text in the prompt or answer", continuous_update=False,
                             layout=w.Layout(width="18em"))
        narrow = w.Layout(width="6.5em")
        self.previous = w.Button(description="Prev", icon="chevron-left", tooltip="previous page", layout=narrow)
        self.next = w.Button(description="Next", icon="chevron-right", tooltip="next page", layout=narrow)
        self.export_button = w.Button(description="Export", icon="download", tooltip="write the project as JSONL",
                                      layout=narrow)
        self.position = w.Label()
        self.rows = w.VBox()
        self.entry_rows: dict[str, w.GridBox] = {}
        self.widget = w.VBox([w.HBox([self.filter, self.previous, self.next, self.position, self.export_button]),
                              self.rows], layout=w.Layout(margin="0 0 1em 2em"))
        self.filter.observe(lambda _: self._go(0), names="value")
        self.previous.on_click(lambda _: self._go(max(self.offset - PAGE_SIZE, 0)))
        self.next.on_click(lambda _: self._go(self.offset + PAGE_SIZE))
        self.export_button.on_click(lambda _: self.export())
        self.show()

    def _go(self, offset: int) -> None:
        self.offset = offset
        self.show()

    def show(self) -> None:
        """Read and draw the current page (one more entry than shown: whether there is a next page)."""
        try:
            page = self._cache.entries(self.project, self.offset, PAGE_SIZE + 1, self.filter.value.strip())
        except (DataformerError, OSError) as exc:
            self._status.value = _error_line(str(exc))
            return
        shown = page[:PAGE_SIZE]
        self.previous.disabled = self.offset == 0
        self.next.disabled = len(page) <= PAGE_SIZE
        what = f" matching {self.filter.value.strip()!r}" if self.filter.value.strip() else ""
        self.position.value = (f"entries {self.offset + 1}-{self.offset + len(shown)}{what}" if shown
                               else f"no entries{what}")
        titles = ["tokens", "stored", "used by"]
        texts = {e.key: [tokens(e.prompt_tokens, e.completion_tokens), when(e.created), plural(len(e.projects),
                                                                                              "project")]
                 for e in shown}
        # Prompts and answers share what the fitted columns leave, in proportion 2 : 3.
        layout = _grid(["minmax(8em, 2fr)", "minmax(8em, 3fr)", *_widths(titles, list(texts.values())), "6.5em"])
        self.entry_rows = {e.key: self._row(e, texts[e.key], layout) for e in shown}
        header = w.GridBox(_titles(["prompt", "answer", *titles], numbers=range(2, 3)), layout=layout)
        self.rows.children = [header, *self.entry_rows.values()] if shown else []

    def _row(self, entry: Entry, texts: list[str], layout: w.Layout) -> w.GridBox:
        delete = w.Button(description="Delete", icon="trash", layout=w.Layout(width="6.3em"))
        delete.on_click(lambda _: self.delete(entry.key))
        answer = _answer_of(entry.response)
        return w.GridBox([w.HTML(_cell(entry.prompt or "(not recorded)")), w.HTML(_cell(answer)),
                          *_cells(texts, numbers=range(0, 1)), delete], layout=layout)

    def delete(self, key: str) -> None:
        """Drop one response from the project (kept for the other projects that use it)."""
        try:
            self._cache.remove(self.project, key)
        except (DataformerError, OSError) as exc:
            self._status.value = _error_line(str(exc))
            return
        self._status.value = html.escape(f"Removed one response from {self.project}.")

    def export(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the project to ``path`` as JSONL; the path. Without one, to ``<project>.jsonl`` in
        the working directory, or ``<project>-2.jsonl`` (and so on) if that exists: nothing is
        overwritten."""
        target = os.fspath(path or _free_name(self.project))
        try:
            count = self._cache.export(self.project, target)
        except (DataformerError, OSError) as exc:
            self._status.value = _error_line(str(exc))
            return target
        self._status.value = html.escape(f"Exported {plural(count, 'response')} of {self.project} to "
                                         f"{os.path.abspath(target)}.")
        return target


def _free_name(project: str) -> str:
    """``<project>.jsonl``, or the first ``<project>-N.jsonl`` that does not exist, in the working
    directory (a name with a path in it, from a tampered cache, keeps only its last part)."""
    stem = os.path.basename(project.replace("\\", "/")) or "project"
    for n in range(1, 10_000):
        name = f"{stem}.jsonl" if n == 1 else f"{stem}-{n}.jsonl"
        if not os.path.lexists(name):
            return name
    raise DataformerError(f"every name {stem}-N.jsonl is taken here: pass a path to export()")


def _error_line(message: str) -> str:
    return f"<span style='color:#b00'>Error: {html.escape(message)}</span>"


def _answer_of(response: dict[str, Any]) -> str:
    try:
        text = response_text(response)
    except (KeyError, IndexError, TypeError, AttributeError):
        text = None
    return text if text is not None else json.dumps(response, ensure_ascii=False)


def _cell(text: str, limit: int = 200) -> str:
    shown = text if len(text) <= limit else text[:limit - 1] + "…"
    return f"<div style='white-space:pre-wrap;line-height:1.3'>{html.escape(shown)}</div>"
