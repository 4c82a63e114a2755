"""Prompts over rows of data, and answers written back as a column: what ``%%generate --over
DATA --into COLUMN`` and ``AsyncLLM.generate_over`` share.

The data may be a pandas DataFrame, a polars DataFrame, a Hugging Face ``datasets.Dataset``, a
Series or array, or any iterable of strings or dicts. None of those libraries is imported here:
each is recognised by what it has, so importing dataformer_nb never loads them.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .results import Results


@dataclass
class Rows:
    """The rows of a batch: ``(fields, item)`` pairs read lazily, what they are called, and the
    table they come from (for writing the answers back), if they come from one."""

    items: Iterable[tuple[Mapping[str, Any], Any]]
    name: str
    frame: Any = None


def table_kind(value: Any) -> str | None:
    """"pandas", "polars" or "dataset" for a table of those libraries, else None."""
    module = type(value).__module__.partition(".")[0]
    if module == "polars" and hasattr(value, "to_dicts"):
        return "polars"
    if module == "datasets" and hasattr(value, "column_names"):
        return "dataset"
    if hasattr(value, "to_dict") and hasattr(value, "columns") and hasattr(value, "copy"):
        return "pandas"
    return None


def rows_of(value: Any, name: str, column: str = "", *, where: str | None = None) -> Rows:
    """One row per item of ``value``, called ``name`` (on the progress bar); with ``column``, that
    column of a table is each row's ``{item}``. ConfigurationError, its message starting with
    ``where`` (default ``name``), if ``value`` is none of the kinds above, or has no such column."""
    where = name if where is None else where
    kind = table_kind(value)
    if kind is not None:
        columns = _columns(value, kind)
        if column and column not in columns:
            raise ConfigurationError(f"{where}: no column {column!r}; its columns: {', '.join(map(str, columns))}")
        records: Iterable[Mapping[str, Any]] = (value.to_dict("records") if kind == "pandas" else
                                                 value.to_dicts() if kind == "polars" else value)
        return Rows(((row, row[column] if column else row) for row in records), name, value)
    if column:
        raise ConfigurationError(f"{where}: a {type(value).__name__} is not a table with columns")
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{where}: a {type(value).__name__} is not a list, DataFrame (pandas or polars), "
                                 "Dataset, Series, generator or other iterable of strings or dicts")
    values = value.tolist() if hasattr(value, "tolist") else value  # a Series or an array
    return Rows(((item if isinstance(item, Mapping) else {}, item) for item in values), name)


def fill_template(template: str, fields: Mapping[str, Any], where: str) -> str:
    """``template`` with its ``{name}`` fields filled from ``fields``; ConfigurationError naming
    the field that ``where`` (the rows, or the notebook) does not define."""
    try:
        return string.Formatter().vformat(template, (), fields)
    except KeyError as exc:
        raise ConfigurationError(f"{{{exc.args[0]}}} in the prompt is not defined in {where}: define it, "
                                 "or write {{ and }} for literal braces") from None
    except (IndexError, ValueError, AttributeError) as exc:
        raise ConfigurationError(f"the prompt template cannot be filled ({exc}): write {{{{ and }}}} for literal "
                                 "braces") from None


def _columns(table: Any, kind: str) -> list[Any]:
    return list(table.column_names if kind == "dataset" else table.columns)


def check_into(frame: Any, inplace: bool) -> str:
    """``frame``'s kind (see ``table_kind``); ConfigurationError, before anything is sent, if the
    answers could not be written into it."""
    kind = table_kind(frame)
    if kind is None:
        raise ConfigurationError("the answers can be written as a column only into a DataFrame (pandas or polars) "
                                 "or a Dataset: leave out into=/--into to get the results")
    if inplace and kind != "pandas":
        raise ConfigurationError(f"a {type(frame).__name__} cannot be changed in place: leave out inplace/--inplace "
                                 "and keep the table it returns")
    return kind


def write_into(frame: Any, results: Results, column: str, inplace: bool = False) -> Any:
    """``frame`` (or a copy) with the answers as ``column``: missing where a request failed (NaN
    in pandas, null in polars and Datasets), and ``column_error`` saying why (kept up to date if
    a previous run made it). Only a pandas DataFrame can be changed in place."""
    kind = check_into(frame, inplace)
    answers = [r.text if r.error is None else None for r in results]
    errors = [None if r.error is None else str(r.error) for r in results]
    columns = _columns(frame, kind)
    with_errors = any(errors) or f"{column}_error" in columns
    if kind == "pandas":
        target = frame if inplace else frame.copy()
        target[column] = [math.nan if a is None else a for a in answers]
        if with_errors:
            target[f"{column}_error"] = errors
        return target
    new = {column: answers, **({f"{column}_error": errors} if with_errors else {})}
    if kind == "polars":
        import polars

        return frame.with_columns([polars.Series(name, values, dtype=polars.Utf8) for name, values in new.items()])
    kept = frame.remove_columns([name for name in new if name in columns])
    for name, values in new.items():
        kept = kept.add_column(name, values)
    return kept
