"""Formatting helpers shared by the summary, the cache reports, the magics and the panel."""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

_DOCS_LINK = re.compile(r"\s*For further information visit \S+")

if TYPE_CHECKING:
    from typing import Protocol

    class ProjectInfo(Protocol):
        """What the table shows of a project (the cache's ``ProjectInfo`` has it)."""

        @property
        def name(self) -> str: ...
        @property
        def responses(self) -> int: ...
        @property
        def bytes(self) -> int: ...
        @property
        def prompt_tokens(self) -> int: ...
        @property
        def completion_tokens(self) -> int: ...
        @property
        def saved_tokens(self) -> int: ...
        @property
        def cost(self) -> float | None: ...
        @property
        def last_used(self) -> datetime: ...
        @property
        def users(self) -> tuple[str, ...]: ...


def plural(n: int, word: str) -> str:
    """``n`` and the ``word``, in the plural unless ``n`` is 1: ``3 requests``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def batches(n: int) -> str:
    """``n batch`` or ``n batches``."""
    return f"{n} batch" if n == 1 else f"{n} batches"


def one_line(error: Exception, limit: int = 300) -> str:
    """An error's message on one line, at most ``limit`` characters (pydantic's docs link dropped)."""
    text = " ".join(_DOCS_LINK.sub("", str(error)).split())
    return text[:limit] + ("..." if len(text) > limit else "")


# Terminal escapes (colours, OSC 52 clipboard writes, titles) and other control characters: a
# server's text is shown in terminals and notebooks, where they would act, not read.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
def printable(text: str, limit: int = 300) -> str:
    """A server's ``text`` as it may be shown: escapes and every character that is not printable
    dropped (controls, bidi overrides such as U+202E that reorder what is shown, private-use and
    unassigned code points; tabs and newlines kept), stripped, at most ``limit`` characters."""
    text = _ESCAPES.sub("", text[:4 * limit])
    text = "".join(c for c in text if c.isprintable() or c in "\t\n").strip()
    return text[:limit] + ("..." if len(text) > limit else "")


def server_message(content: bytes, limit: int = 300) -> str:
    """What a server's error reply says: its ``error.message`` (OpenAI's and Anthropic's shape), else
    its text, at most ``limit`` characters, printable."""
    try:
        data = json.loads(content)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message", error) if isinstance(error, dict) else error
    except (ValueError, RecursionError):
        message = content[:4 * limit].decode("utf-8", errors="replace")
    return printable(message if isinstance(message, str) else repr(message)[:4 * limit], limit)


# Fenced blocks (``` or ~~~) and inline code spans: Markdown shows what is inside them as text.
_CODE = re.compile(r"(^[ ]{0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^[ ]{0,3}\2[ \t]*$|\Z)|(`+)(?!`).+?(?<!`)\3(?!`))",
                   re.MULTILINE | re.DOTALL)
_UNSAFE_LINK = re.compile(r"\]\(\s*<?\s*(?!https?:|mailto:|#|/)[A-Za-z][\w+.-]*:", re.IGNORECASE)


def safe_markdown(text: str) -> str:
    """A model's or server's ``text`` as Markdown that renders it, never runs it: HTML outside code
    is escaped (``<img onerror=...>`` shows as text; inside code it already does), and a link whose
    target is not a web address (``javascript:``) loses its target."""
    parts = []
    end = 0
    for code in _CODE.finditer(text):
        parts.append(html.escape(text[end:code.start()], quote=False))
        parts.append(code.group(0))
        end = code.end()
    parts.append(html.escape(text[end:], quote=False))
    return _UNSAFE_LINK.sub("](#unsafe-link:", "".join(parts))


def human_size(n: float) -> str:
    """A size in bytes as people read it: ``1.2 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def table_bundle(header: list[str], rows: list[list[str]], caption: str = "") -> dict[str, str]:
    """A table as a mime bundle: HTML for notebooks, aligned text for terminals."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left;white-space:pre-wrap'>{html.escape(str(c))}</td>"
                         for c in row) + "</tr>"
        for row in rows
    )
    caption_html = f"<caption style='text-align:left'>{wrapping_line(caption)}</caption>" if caption else ""
    return {"text/plain": "\n".join([*lines, caption]).rstrip(),
            "text/html": f"<table>{caption_html}<tr>{head}</tr>{body}</table>"}


def wrapping_line(line: str) -> str:
    """``line`` as HTML that wraps only before a " · " (each part whole, the dot starting the
    next line: a break after it would leave it dangling at the end of a line)."""
    return wrapping_html([html.escape(part) for part in line.split(" · ")])


def show_line(line: str) -> None:
    """Print ``line``; in a notebook, show it as HTML that wraps only before a " · " (a printed
    line wraps anywhere there, even inside a word), with the same text for terminals and files."""
    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    if getattr(shell, "kernel", None) is None:  # a terminal, a script, or IPython without a kernel
        print(line)
        return
    from IPython.display import display

    display({"text/plain": line, "text/html": wrapping_line(line)}, raw=True)


def wrapping_html(parts: list[str], separator: str = "· ") -> str:
    """HTML ``parts`` (escaped already) that wrap only between one another, each after the first
    opening with ``separator``."""
    return " ".join(f"<span style='white-space:nowrap'>{separator if i else ''}{part}</span>"
                    for i, part in enumerate(parts))


def when(moment: datetime) -> str:
    """A time as the tables show it: local, to the minute."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def projects_table(projects: Iterable[ProjectInfo], caption: str = "") -> dict[str, str]:
    """Cached projects as a table bundle (text and HTML): project, responses, size, the tokens of
    the responses it generated (prompt / completion), the tokens the cache saved it, last used."""
    projects = list(projects)
    priced = any(p.cost is not None for p in projects)
    shared = any(p.users for p in projects)  # a team cache: who used each project
    rows = [[p.name, str(p.responses), human_size(p.bytes), tokens(p.prompt_tokens, p.completion_tokens),
             f"{p.saved_tokens:,}", *([money(p.cost) if p.cost is not None else "-"] if priced else []),
             when(p.last_used), *([", ".join(p.users)] if shared else [])] for p in projects]
    header = ["project", "responses", "size", "tokens in / out", "tokens saved", *(["cost"] if priced else []),
              "last used", *(["used by"] if shared else [])]
    return table_bundle(header, rows, caption)


def tokens(prompt: int, completion: int) -> str:
    """Prompt and completion tokens as the tables show them: ``1,200 / 3,400``."""
    return f"{prompt:,} / {completion:,}"


def money(amount: float) -> str:
    """Dollars, with the digits a small amount needs: ``$0.000123``, ``$1.25``."""
    digits = 6 if amount < 0.01 else 4 if amount < 1 else 2
    return f"${amount:,.{digits}f}"
