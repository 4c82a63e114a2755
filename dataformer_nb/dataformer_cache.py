"""Importing a dataformer 0.0.2 cache directory, so that the responses a dataformer user paid
for are hits here, not paid again: ``python -m dataformer_nb cache import-dataformer DIR``.

dataformer kept its cache as ``request_N.jsonl`` files (one line per response:
``[{hash: index}, request, response]``, plus the request's metadata) and ``association.jsonl``
(``{"request_N": [hashes], ..., "project_requests": {project: ["request_N", ...]}}``). Its
requests are stored without their provider, URL and key (it removed them before sending), so the
import is told which provider or server they went to; each request is then keyed as
dataformer_nb keys it (``AsyncLLM.cache_key``: the same request sent here hits), a request
repeated within the cache becoming that many samples, as here.

Chosen over reading dataformer's directory at every run: one import, then every behaviour here
(projects, clearing, the panel, the team cache) applies to those responses, and no run pays for
reading an unbounded second format. The directory is untrusted input: files are read without
following links, regular files only, lines size-capped; a line that is not a response (a failure
dataformer kept as a list of messages, a garbled line) is counted and skipped; the import is
idempotent (the same responses land under the same keys).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import open_untrusted
from ._json import dumpb, loads_or_none
from .errors import ConfigurationError, DataformerError
from .names import normalize_project
from .slots import prompt_text

if TYPE_CHECKING:
    from .llms import AsyncLLM

MAX_FILE_BYTES = 2 * 1024**3
MAX_LINE_BYTES = 64 * 1024 * 1024
_REQUEST_FILE = re.compile(r"request_(\d{1,9})\.jsonl")


@dataclass
class ImportReport:
    """What an import did: responses stored per project, and the lines skipped (and why)."""

    imported: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        stored = ", ".join(f"{project}: {n:,}" for project, n in sorted(self.imported.items())) or "nothing"
        skipped = ", ".join(f"{why}: {n:,}" for why, n in sorted(self.skipped.items()))
        return f"imported {sum(self.imported.values()):,} responses ({stored})" + (
            f"; skipped {sum(self.skipped.values()):,} lines ({skipped})" if skipped else "")


def read_dataformer_cache(directory: str | os.PathLike[str], report: ImportReport
                          ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(project, request, response)`` of each response in dataformer's cache ``directory``,
    file by file in dataformer's order; what cannot be read is counted in ``report.skipped``."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigurationError(f"{directory}: no such directory (dataformer's default was .cache/dataformer)")
    files = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _REQUEST_FILE.fullmatch(p.name)))
    if not files:
        raise ConfigurationError(f"{directory} holds no request_N.jsonl files: is it a dataformer 0.0.2 cache?")
    owners = _projects_of(root, report)
    for _, path in files:
        project = owners.get(path.stem, "dataformer")
        try:
            lines = _lines(path)
            for line in lines:
                entry = loads_or_none(line)
                if not (isinstance(entry, list) and len(entry) >= 3 and isinstance(entry[1], dict)):
                    report.skipped["not a cache line"] += 1
                elif not isinstance(entry[2], dict):
                    report.skipped["a failed request"] += 1  # dataformer kept its errors' messages
                else:
                    request = dict(entry[1])
                    if len(entry) > 3 and entry[3] is not None:
                        request["metadata"] = entry[3]
                    yield project, request, entry[2]
        except (OSError, ValueError) as exc:
            report.skipped[f"{path.name} unreadable ({exc})"] += 1


def _projects_of(root: Path, report: ImportReport) -> dict[str, str]:
    """request_N -> the project dataformer's association file gave it (the first that names it)."""
    path = root / "association.jsonl"
    if not path.exists():
        return {}
    try:
        data = loads_or_none(b"".join(_lines(path)))
    except (OSError, ValueError):
        data = None
    projects = data.get("project_requests") if isinstance(data, dict) else None
    if not isinstance(projects, dict):
        report.skipped["association.jsonl unreadable: its files imported into project dataformer"] += 1
        return {}
    owners: dict[str, str] = {}
    for project, names in projects.items():
        try:
            name = normalize_project(project)
        except ConfigurationError:
            report.skipped[f"project {str(project)[:40]!r} is not a valid name"] += 1
            continue
        for stem in names if isinstance(names, list) else []:
            if isinstance(stem, str):
                owners.setdefault(stem.removesuffix(".jsonl"), name)
    return owners


def _lines(path: Path) -> Iterator[bytes]:
    """``path``'s non-empty lines (``_files.open_untrusted``: no link, a regular file, size-capped)."""
    with open_untrusted(path, MAX_FILE_BYTES) as f:
        while line := f.readline(MAX_LINE_BYTES + 1):
            if len(line) > MAX_LINE_BYTES:
                raise ValueError(f"a line longer than {MAX_LINE_BYTES:,} bytes")
            if line.strip():
                yield line


def import_dataformer_cache(directory: str | os.PathLike[str], llm: AsyncLLM) -> ImportReport:
    """Store every response of dataformer's cache ``directory`` in ``llm``'s cache, keyed as ``llm``
    (its provider or URL, model and sampling parameters) keys the same requests, in the project
    dataformer gave each. Returns what was imported and skipped."""
    from .cache import NewResponse

    report = ImportReport()
    seen: Counter[str] = Counter()  # a request repeated: its k-th copy is sample k, as here
    batch: dict[str, list[NewResponse]] = {}
    for project, request, response in read_dataformer_cache(directory, report):
        try:
            first = llm.cache_key(request)
        except DataformerError as exc:
            report.skipped[f"not a request here ({str(exc)[:60]})"] += 1
            continue
        sample = seen[first]
        seen[first] += 1
        key = llm.cache_key(request, sample=sample) if sample else first
        batch.setdefault(project, []).append(NewResponse.with_usage(key, dumpb(response), response.get("usage"),
                                                                    prompt_text(request)))
        if sum(map(len, batch.values())) >= 1000:  # a page at a time: projects are few
            _store(llm, batch, report)
    _store(llm, batch, report)
    return report


def _store(llm: AsyncLLM, batch: dict[str, list[Any]], report: ImportReport) -> None:
    for project, items in batch.items():
        llm.cache.put_many(items, project)
        report.imported[project] += len(items)
    batch.clear()
