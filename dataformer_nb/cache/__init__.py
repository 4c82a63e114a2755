"""The response cache: one diskcache ``Cache`` (SQLite) in ``cache_dir``, JSON only, by project.

- :mod:`.store`: :class:`ResponseCache`, responses and their projects, accounting, browsing,
  export, listeners;
- :mod:`.records`: the records kept beside responses, and the checks of what is read back;
- :mod:`.disk`: the ``Disk`` that stores JSON only; :mod:`.rows`: batched reads of its table;
- :mod:`.migrations`: the named migrations of the stored format;
- :mod:`.writer`: fresh responses committed in groups, on a thread of its own.

It knows nothing of HTTP.
"""

from .records import ClearReport, Entry, Hits, NewResponse, ProjectInfo, clear_names
from .store import FULL, ResponseCache, normalize_project

__all__ = ["FULL", "ClearReport", "Entry", "Hits", "NewResponse", "ProjectInfo", "ResponseCache", "clear_names",
           "normalize_project"]
