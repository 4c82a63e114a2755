"""What ``generate`` returns: one result per request, in request order, and a summary."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._format import money, plural, table_bundle, tokens
from ._json import is_count
from .errors import BatchPending, ConfigurationError, RequestFailedError
from .images import content_text
from .providers import hide_credentials, response_text

if TYPE_CHECKING:
    import pandas

    from .batchledger import BatchJob

_SECRET_FIELDS = ("api_key",)


def redact(request: Mapping[str, Any]) -> dict[str, Any]:
    """``request`` without its secrets (a key, a password in a URL), for display and export."""
    return {k: "***" if k in _SECRET_FIELDS else hide_credentials(v) if k == "url" and isinstance(v, str) else v
            for k, v in request.items()}


class GenerationResult:
    """One request and what came of it.

    It also unpacks like dataformer's ``[request, response]`` pair:
    ``request, response = result`` and ``result[1]["choices"]`` both work.
    """

    __slots__ = ("_response", "cached", "error", "metadata", "parsed", "request")

    def __init__(self, request: Mapping[str, Any], response: dict[str, Any] | bytes | None, cached: bool = False,
                 error: RequestFailedError | None = None, metadata: Any = None, parsed: Any = None) -> None:
        self.request = request
        # JSON bytes until first asked for: 10^5 decoded responses take ~200 MB, their JSON a quarter.
        self._response = response
        self.cached = cached
        self.error = error
        self.metadata = metadata
        self.parsed: Any = parsed  # with schema=: the reply as a model instance (or a dict for a JSON Schema)

    @property
    def response(self) -> dict[str, Any] | None:
        """The response in OpenAI's shape, or None if the request failed."""
        if isinstance(self._response, bytes):
            self._response = json.loads(self._response.decode())
        return self._response  # type: ignore[return-value]

    @property
    def text(self) -> str | None:
        """The reply's text (the first choice), or None if the request failed."""
        if isinstance(self._response, bytes):  # read without keeping the decoded response
            return response_text(json.loads(self._response.decode()))
        return response_text(self._response)

    @property
    def usage(self) -> dict[str, Any] | None:
        """The response's ``usage`` (prompt, completion, total tokens), or None."""
        return (self.response or {}).get("usage")

    @property
    def ok(self) -> bool:
        """Whether a response came back (from the server or the cache)."""
        return self.error is None

    @property
    def pending(self) -> bool:
        """Whether the request waits in a provider batch (``batch=True, wait=False``): ``error`` is
        then a ``dataformer_nb.errors.BatchPending`` naming the batch, not a failure."""
        return isinstance(self.error, BatchPending)

    @property
    def embedding(self) -> list[float] | None:
        """The vector of an embedding request (its first input's), or None."""
        data = (self.response or {}).get("data")
        return data[0].get("embedding") if isinstance(data, list) and data else None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.request, self.response))

    def __eq__(self, other: object) -> bool:
        """Equal to dataformer's ``[request, response]`` pair (a list or tuple) with the same
        contents, and to another result with the same request, response, and outcome."""
        if isinstance(other, GenerationResult):
            return (self.request, self.response, self.cached, str(self.error)) == \
                (other.request, other.response, other.cached, str(other.error))
        if isinstance(other, (list, tuple)):
            return list(other) == [self.request, self.response]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __getitem__(self, index: int) -> Any:
        return (self.request, self.response)[index]

    def __len__(self) -> int:
        return 2

    def __repr__(self) -> str:
        if self.error is not None:
            return f"<GenerationResult failed: {self.error}>"
        text = self.text or ""
        shown = text if len(text) <= 60 else text[:57] + "..."
        return f"<GenerationResult{' cached' if self.cached else ''} {shown!r}>"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: the request (without keys), response, text, cached, error, metadata."""
        return {
            "request": redact(self.request),
            "response": self.response,
            "text": self.text,
            "cached": self.cached,
            "error": None if self.error is None else str(self.error),
            "metadata": self.metadata,
        }


@dataclass
class GenerationSummary:
    """How a ``generate`` call went: ``sent`` (fresh responses), ``cached``, ``failed`` by cause;
    ``requests_sent`` and ``attempts`` count what went over the wire (retries included), and
    ``invalid_replies`` the replies that failed the schema."""

    project: str
    sent: int = 0
    cached: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    server_limits: str = ""  # what the servers said (or 429s taught) of their rate limits
    prompt_tokens: int = 0  # of the responses received in this run
    completion_tokens: int = 0
    saved_tokens: int = 0  # what the responses served from the cache cost when they were generated
    cost: float | None = None  # of the responses received, where every model used has a price
    pending: int = 0  # waiting in provider batches (generate(batch=True, wait=False))
    batches: tuple[str, ...] = ()  # the provider batches this run submitted or collected
    # What went over the wire, paid for or not: the requests sent at least once, every attempt
    # (retries included), and the replies that came back but failed the schema.
    requests_sent: int = 0
    attempts: int = 0
    invalid_replies: int = 0

    @property
    def failed(self) -> int:
        """Requests that failed for good (by cause in ``failures``)."""
        return sum(self.failures.values())

    @property
    def total(self) -> int:
        """Every request of the call: sent, cached, failed or pending."""
        return self.sent + self.cached + self.failed + self.pending

    def __str__(self) -> str:
        text = f"{plural(self.total, 'request')}: {self.sent} sent, {self.cached} cached, {self.failed} failed"
        if self.failures:
            text += " (" + ", ".join(f"{cause}: {n}" for cause, n in self.failures.most_common()) + ")"
        if self.pending:
            text += f", {self.pending} pending"
        if self.batches:
            more = len(self.batches) - 3
            shown = ", ".join(self.batches[:3]) + (f" and {more} more" if more > 0 else "")
            text += f" · {'batch' if len(self.batches) == 1 else 'batches'} {shown}"
        if self.attempts > self.sent:  # retries, failures or invalid replies: say what was really sent
            text += f" · over the wire: {plural(self.requests_sent, 'request')}, {plural(self.attempts, 'attempt')}"
            text += f", {self.invalid_replies} failed the schema" if self.invalid_replies else ""
        limits = f" · server limits: {self.server_limits}" if self.server_limits else ""
        used = ""
        if self.prompt_tokens or self.completion_tokens or self.saved_tokens:
            used = f" · tokens {tokens(self.prompt_tokens, self.completion_tokens)}"
            used += f" ({self.saved_tokens:,} saved)" if self.saved_tokens else ""
            used += f", {money(self.cost)}" if self.cost is not None else ""
        return f"{text} · project {self.project}{used}{limits}"


@dataclass(frozen=True)
class Plan:
    """What ``generate`` would do with a batch, worked out without sending or writing anything.

    Tokens are estimates (no tokenizer is downloaded); ``completion_budget`` is what the
    requests' ``max_tokens`` allow, the most they can generate. ``cost`` is at most that, when
    every model to be used has a price; ``seconds`` is the time the limits known now impose
    (None: nothing known limits it, so it goes as fast as the server answers).
    """

    project: str
    requests: int
    cached: int
    to_send: int
    prompt_tokens: int
    completion_budget: int
    cost: float | None
    seconds: float | None

    def rows(self) -> list[list[str]]:
        """The plan as (what, how much) rows, as ``%%generate --dry-run`` shows it."""
        time = "no limit known" if self.seconds is None else f"{self.seconds:,.0f} s under the known limits"
        return [
            ["requests", f"{self.requests:,}"],
            ["cached (nothing to pay)", f"{self.cached:,}"],
            ["to send", f"{self.to_send:,}"],
            ["prompt tokens (estimated)", f"{self.prompt_tokens:,}"],
            ["completion budget (max_tokens)", f"{self.completion_budget:,}" if self.completion_budget else "not set"],
            ["cost, at most", "no price for a model" if self.cost is None else money(self.cost)],
            ["time", time],
        ]

    def __str__(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self.rows())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return table_bundle(["plan", f"project {self.project}"], self.rows(), caption="nothing sent, nothing written")


class Results(list[GenerationResult]):
    """A list of ``GenerationResult`` in request order, with its ``summary``."""

    def __init__(self, results: list[GenerationResult], summary: GenerationSummary,
                 batches: list[BatchJob] | None = None) -> None:
        super().__init__(results)
        self.summary = summary
        self.batches = batches or []  # with batch=True: the provider batches that hold these requests

    def __repr__(self) -> str:
        # Shortened like pandas: a list of 10^5 results is unreadable (and asyncio.run reprs it).
        if len(self) <= 10:
            return f"Results({list.__repr__(self)})"
        shown = ", ".join(map(repr, self[:5])) + f", ... {len(self) - 10} more ..., " + ", ".join(map(repr, self[-5:]))
        return f"Results([{shown}], {self.summary})"

    @property
    def texts(self) -> list[str | None]:
        """Each result's text, in request order (None where a request failed or is pending)."""
        return [r.text for r in self]

    @property
    def failed(self) -> list[GenerationResult]:
        """The results that hold an error (pending ones included: ``result.pending`` tells them)."""
        return [r for r in self if r.error is not None]

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per result (``GenerationResult.to_dict``), secrets redacted: for
        ``json.dumps`` or a DataFrame."""
        return [r.to_dict() for r in self]

    def to_list(self) -> list[list[Any]]:
        """dataformer's return value: ``[request, response]`` per result (plus its metadata, when
        the request had some), plain lists ``json.dumps`` takes. A result is not a list itself: it
        keeps its response as JSON bytes until read (10^5 decoded responses cost ~200 MB)."""
        return [[r.request, r.response] + ([r.metadata] if r.metadata is not None else []) for r in self]

    def to_pandas(self) -> pandas.DataFrame:
        """One row per result: prompt, text, cached, error (the whole message), cause (its short
        category: ``timeout``, ``http 500``, ``batch pending``, ...), metadata, and the fields of a
        structured output, with pandas' nullable types where a failure leaves a hole (an int field
        stays an int column, ``<NA>`` where the request failed). Needs pandas."""
        import pandas

        rows = [{"prompt": prompt_of(r.request), "text": r.text, "cached": r.cached,
                 "error": None if r.error is None else str(r.error), "metadata": r.metadata, **_fields(r.parsed),
                 "cause": None if r.error is None else r.error.cause}
                for r in self]
        frame = pandas.DataFrame(rows)
        fields = [c for c in frame.columns if c not in ("prompt", "text", "cached", "error", "metadata", "cause")]
        if fields:
            frame[fields] = frame[fields].convert_dtypes()
        return frame

    def to_polars(self) -> Any:
        """A polars DataFrame of the rows ``to_dataset`` has. Needs polars
        (``pip install "dataformer_nb[polars]"``)."""
        polars = _optional("polars", "polars")
        return polars.DataFrame(self._table_rows(), infer_schema_length=None)

    def to_dataset(self) -> Any:
        """A Hugging Face ``datasets.Dataset``, ready for ``push_to_hub``: one row per result with
        prompt, text, cached, error, cause, prompt_tokens, completion_tokens, metadata (as JSON
        text: its shape may differ from row to row) and the fields of a structured output. Needs
        datasets (``pip install "dataformer_nb[datasets]"``)."""
        datasets = _optional("datasets", "datasets")
        return datasets.Dataset.from_list(self._table_rows())

    def _table_rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in self:
            usage = r.usage if r.error is None else None
            counts = usage if isinstance(usage, dict) else {}
            prompt = prompt_of(r.request)
            rows.append({"prompt": prompt if prompt is None or isinstance(prompt, str) else json.dumps(prompt),
                         "text": r.text, "cached": r.cached, "error": None if r.error is None else str(r.error),
                         "cause": None if r.error is None else r.error.cause,
                         "prompt_tokens": _count_or_none(counts.get("prompt_tokens")),
                         "completion_tokens": _count_or_none(counts.get("completion_tokens")),
                         "metadata": None if r.metadata is None else json.dumps(r.metadata, default=str),
                         **_fields(r.parsed)})
        return rows

    def to_jsonl(self, path: str | os.PathLike[str]) -> None:
        """Write one JSON record per line (see ``GenerationResult.to_dict``)."""
        with open(path, "w", encoding="utf-8") as f:
            for record in self.to_records():
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _count_or_none(value: Any) -> int | None:
    return value if is_count(value) else None


def _optional(module: str, extra: str) -> Any:
    """``module`` imported, or ConfigurationError saying which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigurationError(f"{module} is not installed: pip install \"dataformer_nb[{extra}]\"") from None


def cost_of(price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Dollars for these tokens at ``price`` (per 1M prompt tokens, per 1M completion tokens);
    None without a price."""
    return None if price is None else (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


def _fields(parsed: Any) -> dict[str, Any]:
    """A structured output's fields, as columns of their own."""
    if hasattr(parsed, "model_dump"):
        return parsed.model_dump()
    return dict(parsed) if isinstance(parsed, dict) else {}


def prompt_of(request: Mapping[str, Any]) -> Any:
    """What a request asks: its last user message, its prompt, or its input (embeddings)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        # Parts (text and images) as text, images as [image 512x512]: never their base64.
        return (content_text(users[-1]) if isinstance(users[-1], list) else users[-1]) if users else None
    return request.get("prompt", request.get("input"))
