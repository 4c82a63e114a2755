"""``CachePanel``: an ipywidgets view of cached projects, with delete buttons."""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as w

from ._format import human_size, plural, projects_table, tokens, when
from .cache import FULL, ClearReport, ProjectInfo, ResponseCache
from .errors import DataformerError
from .settings import CACHE_DIR_ENV, DEFAULT_CACHE_DIR, resolve

_ROW = w.Layout(grid_template_columns="minmax(10em, 2fr) 7em 7em 11em 8em 11em 12em", align_items="center")


class CachePanel:
    """Projects in a response cache: responses, size, last used, and a Delete button each.

    ``CachePanel(cache)`` with a :class:`ResponseCache`, a directory, or anything with a
    ``cache`` attribute (an ``AsyncLLM``); ``CachePanel(cache_dir=...)`` or ``CachePanel()``
    for the configured directory. It refreshes itself after every
    ``generate`` or clear into the same directory in this kernel, and on Refresh for changes
    made by other processes. Deleting asks for confirmation in place.
    """

    def __init__(self, cache: ResponseCache | str | os.PathLike[str] | Any = None, *,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        if cache is not None and not isinstance(cache, (ResponseCache, str, os.PathLike)):
            cache = cache.cache  # an AsyncLLM, or anything else that holds a cache
        self._cache: ResponseCache | None = cache if isinstance(cache, ResponseCache) else None
        directory = cache if isinstance(cache, (str, os.PathLike)) else cache_dir
        self._cache_dir = os.fspath(resolve(CACHE_DIR_ENV, directory or None, DEFAULT_CACHE_DIR))
        self.header = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.delete_all_button = w.Button(description="Delete all", button_style="danger", icon="trash")
        self.header_actions = w.HBox([self.refresh_button, self.delete_all_button])
        self.rows = w.VBox()
        self.status = w.HTML()
        self.widget = w.VBox([w.HBox([self.header, self.header_actions]), self.rows, self.status])
        self.project_rows: dict[str, w.GridBox] = {}
        self.refresh_button.on_click(lambda _: self.refresh())
        self.delete_all_button.on_click(lambda _: self._ask(self.header_actions, FULL))
        self._subscribed = False
        self.summary = ""  # the header as plain text, for the static fallback
        self.refresh()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live widget where a kernel is attached; the same table as static HTML and text for
        terminals, saved notebooks and nbval (which would otherwise show ``VBox(children=...)``)."""
        static = projects_table(self._cache.projects() if self._cache is not None else [], self.summary)
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
        where = str(cache.directory if cache else "")
        self.header.value = f"<b>Cache</b> <code>{html.escape(where)}</code>: {html.escape(unique)} · {on_disk}"
        self.summary = f"Cache {where}: {unique} · {on_disk}"
        self.project_rows = {p.name: self._row(p) for p in projects}
        if projects:
            titles = ("project", "responses", "size", "tokens in / out", "tokens saved", "last used", "")
            header = w.GridBox([w.HTML(f"<b>{t}</b>") for t in titles], layout=_ROW)
            self.rows.children = [header, *self.project_rows.values()]
        else:
            self.rows.children = [w.HTML("The cache holds no projects yet: run <code>generate</code> to fill it.")]
        self.delete_all_button.disabled = not projects

    def _read(self) -> list[ProjectInfo]:
        if self._cache is None:
            self._cache = ResponseCache(self._cache_dir)
        if not self._cache.directory.is_dir():
            raise DataformerError(f"the cache directory {self._cache.directory} no longer exists")
        if not self._subscribed:
            self._cache.subscribe(self.refresh)
            self._subscribed = True
        return self._cache.projects()

    def _row(self, project: ProjectInfo) -> w.GridBox:
        delete = w.Button(description="Delete", button_style="warning", icon="trash")
        actions = w.HBox([delete])
        delete.on_click(lambda _: self._ask(actions, project.name))
        cells = [w.Label(project.name), w.Label(str(project.responses)), w.Label(human_size(project.bytes)),
                 w.Label(tokens(project.prompt_tokens, project.completion_tokens)),
                 w.Label(f"{project.saved_tokens:,}"), w.Label(when(project.last_used)), actions]
        return w.GridBox(cells, layout=_ROW)

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
        self._set_buttons_disabled(True)
        try:
            assert self._cache is not None
            if not self._cache.directory.is_dir():
                raise DataformerError(f"the cache directory {self._cache.directory} no longer exists")
            report = self._cache.clear(target)
        except (DataformerError, OSError) as exc:
            self._error(str(exc))
            return
        finally:
            self._set_buttons_disabled(False)
        self.refresh()
        self.status.value = html.escape(_freed(report))

    def _set_buttons_disabled(self, disabled: bool) -> None:
        for button in self.header_actions.children:
            button.disabled = disabled
        for row in self.project_rows.values():
            for button in row.children[-1].children:
                button.disabled = disabled

    def _error(self, message: str) -> None:
        self.status.value = f"<span style='color:#b00'>Error: {html.escape(message)}</span>"


def _freed(report: ClearReport) -> str:
    text = f"Freed {plural(report.responses_deleted, 'response')} ({human_size(report.bytes_freed)})"
    if report.kept_shared:
        text += f"; kept {report.kept_shared} still used by other projects"
    return text + "."
