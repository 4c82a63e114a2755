"""Reading a project's responses page by page, for both stores: all of them, JSONL, pandas.

A store gives ``Browsing.entries`` (one page, read through the records' checks) and
``Browsing.has_project``; everything built on pages lives here, once.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._shape import response_text
from ..errors import CacheError
from ..names import normalize_project
from .records import Entry, _text_or_none


class Browsing:
    """Iteration, export and pandas over a store's pages of entries."""

    @property
    def location(self) -> str:
        """Where the store lives, as messages name it: a directory, or host and database."""
        raise NotImplementedError

    def entries(self, project: str, offset: int = 0, limit: int = 50, contains: str | None = "") -> list[Entry]:
        raise NotImplementedError

    def has_project(self, project: str) -> bool:
        """Whether ``project`` (a valid name) is in the store."""
        raise NotImplementedError

    def iter_entries(self, project: str, contains: str | None = "", page: int = 500) -> Iterator[Entry]:
        """Every response ``project`` uses (see ``entries``), a page at a time."""
        offset = 0
        while True:
            batch = self.entries(project, offset, page, contains)
            yield from batch
            if len(batch) < page:
                return
            offset += page

    def export(self, project: str, path: str | os.PathLike[str], overwrite: bool = False) -> int:
        """Write ``project``'s responses to ``path`` as JSONL (one ``Entry.to_dict`` a line);
        the number written.

        An existing file is replaced only with ``overwrite=True``, and never through a symbolic
        link; the lines go to a temporary file beside it, renamed over ``path`` once complete,
        so a failure (an unknown project, a full disk) leaves ``path`` as it was.
        """
        project = normalize_project(project)
        if not self.has_project(project):
            raise CacheError(f"no project named {project!r} in the cache in {self.location}: "
                             "llm.cache.projects() lists them")
        target = Path(path)
        if target.is_symlink():
            raise CacheError(f"{target} is a symbolic link: export writes only to a plain path; pass another path")
        if target.exists() and not (overwrite and target.is_file()):
            raise CacheError(f"{target} exists: pass overwrite=True to replace it, or another path"
                             if target.is_file() else f"{target} exists and is not a file: pass another path")
        count = 0
        try:
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.",
                                             suffix=".tmp", delete=False) as f:
                temporary = Path(f.name)
                try:
                    for entry in self.iter_entries(project):
                        f.write(json.dumps(entry.to_dict(), ensure_ascii=False) + "\n")
                        count += 1
                except BaseException:
                    f.close()
                    temporary.unlink(missing_ok=True)
                    raise
            os.replace(temporary, target)
        except OSError as exc:
            raise CacheError(f"{project} could not be exported to {target} ({exc.strerror or exc}): "
                             "check that its folder exists and can be written") from exc
        return count

    def to_pandas(self, project: str) -> Any:
        """``project``'s responses as a DataFrame: key, prompt, text, tokens, created, projects."""
        import pandas

        return pandas.DataFrame([
            {"key": e.key, "prompt": e.prompt, "text": _text_or_none(response_text, e.response),
             "prompt_tokens": e.prompt_tokens, "completion_tokens": e.completion_tokens, "created": e.created,
             "projects": list(e.projects)}
            for e in self.iter_entries(project)
        ])
