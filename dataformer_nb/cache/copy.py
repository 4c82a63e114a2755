"""``python -m dataformer_nb cache copy SRC DST``: every response of one store into another (a
directory or a PostgreSQL URL, either way), with memberships and accounting.

Idempotent and resumable: responses go over a page per transaction, each merged (a response
already there gains the projects it lacks), so a copy killed halfway and run again finishes the
job without duplicating anything; the projects' tokens, savings and costs are added once per
source (the destination records which stores it copied), and their response counts and bytes
are recounted from the rows. The cache key is the same in both stores, so every key hits after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import Store


@dataclass(frozen=True)
class CopyReport:
    """What a copy did: the responses it read from the source, and where it wrote them."""

    responses: int
    source: str
    destination: str

    def __str__(self) -> str:
        return f"copied {self.responses:,} responses from {self.source} to {self.destination}"


def copy_store(source: Store, destination: Store, page: int = 1000,
               progress: Callable[[int], None] | None = None) -> CopyReport:
    """Copy every response of ``source`` into ``destination`` (see the module's documentation);
    ``progress`` is told the number copied after each page."""
    if source.location == destination.location:
        from ..errors import ConfigurationError

        raise ConfigurationError(f"cache copy: {source.location} is both the source and the destination: "
                                 "name two different caches")
    copied = 0
    for rows in source.all_rows(page):
        destination.merge_rows(rows)
        copied += len(rows)
        if progress is not None:
            progress(copied)
    destination.merge_accounting(source.location, source.project_records())
    destination.notify()
    return CopyReport(copied, source.location, destination.location)
