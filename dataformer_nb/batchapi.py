"""The providers' batch APIs, spoken over HTTP: submit, read the status, download, cancel.

Two protocols:

- ``openai``: OpenAI's Batch API (https://platform.openai.com/docs/api-reference/batch), which
  Together and Groq serve too: the requests as a JSONL file uploaded to ``/files``
  (``purpose=batch``), a batch created from it at ``/batches``, results in an output file and an
  error file, at most 50,000 requests and 200 MB a file;
- ``anthropic``: Message Batches (https://docs.anthropic.com/en/api/creating-message-batches):
  the requests in the body of ``POST /messages/batches``, results at ``.../{id}/results``, at
  most 100,000 requests and 256 MB a batch.

Each request's ``custom_id`` is its cache key (64 hex digits: within both services' limits), so
a result finds its request without a mapping of our own. Nothing here knows the cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import httpx

from ._format import printable, server_message
from ._json import loads_or_none
from .batchledger import BatchRecord, is_batch_id
from .errors import BatchError
from .transport import DEFAULT_MAX_REPLY_BYTES, ReplyTooLargeError, read_capped, retryable_status

DOWNLOAD_MAX_BYTES = 2**31  # an output file of 50,000 long answers passes the 64 MiB cap on replies
LIST_PAGES = 10  # pages of the batch list searched for a batch whose creation was not heard back
AGAIN = "a re-run submits it again"


@dataclass(frozen=True)
class BatchStatus:
    """A batch's state as its service reports it."""

    state: str  # the service's own word: in_progress, completed, ended, ...
    ended: bool  # no more results will come
    total: int
    done: int  # answered, well or not
    failed: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    note: str = ""  # why a batch failed as a whole
    fraction: float | None = None  # done, as a fraction, from a service that gives no counts (Together)


class LineResult(NamedTuple):
    """One request's outcome in a batch's results: the reply's body, or what went wrong."""

    custom_id: str
    body: Any  # the provider's reply (its own shape), or None
    error: str | None  # None when ``body`` is a reply
    cause: str = ""  # the failure's category, for summaries


class BatchAPI:
    """One batch service (a protocol at a base URL), reached with one key's headers."""

    protocol: ClassVar[str]  # the batch protocol it speaks (a wire format names it: WireFormat.batch_protocol)
    max_requests: ClassVar[int]
    max_bytes: ClassVar[int]

    def __init__(self, client: httpx.AsyncClient, base: str, line_path: str, headers: Mapping[str, str],
                 name: str, redact: Callable[[str], str]) -> None:
        self._client, self.base, self.line_path = client, base, line_path
        # the JSON Content-Type of chat requests would mislabel a file upload
        self._headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        self._name, self._redact = name, redact

    def line(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        """The request ``body`` as one line of the batch's input, under ``custom_id``."""
        raise NotImplementedError

    def batch_bytes(self, lines: list[bytes]) -> int:
        """What a batch of these lines weighs against ``max_bytes``."""
        return sum(len(line) + 1 for line in lines)

    async def submit(self, lines: list[bytes], record: BatchRecord, recorded: Callable[[], None]) -> str:
        """Create a batch of ``lines``; its id. ``recorded`` saves ``record`` when it learns more."""
        raise NotImplementedError

    async def find(self, record: BatchRecord) -> str | None:
        """The id of the batch ``record`` was submitting, if the service created it (a run stopped
        before hearing back), else None."""
        return None

    async def status(self, batch_id: str) -> BatchStatus:
        """The batch's state as the service reports it now."""
        raise NotImplementedError

    async def results(self, batch_id: str, status: BatchStatus) -> Iterator[LineResult]:
        """One LineResult per result line of an ended batch: a line that cannot be read fails only its request."""
        raise NotImplementedError

    async def cancel(self, batch_id: str) -> BatchStatus:
        """Ask the service to cancel the batch; its state after the request."""
        raise NotImplementedError

    async def _call(self, method: str, path: str, doing: str, *, max_bytes: int = DEFAULT_MAX_REPLY_BYTES,
                    **kwargs: Any) -> bytes:
        """The body of the service's reply, decoded and at most ``max_bytes`` (a gzip bomb stops at
        the cap, whatever the transport), or a BatchError saying what failed (``transient`` when
        worth retrying)."""
        url = self.base + path
        headers = kwargs.pop("headers", self._headers)
        try:
            async with self._client.stream(method, url, headers=headers, extensions={"max_reply_bytes": max_bytes},
                                           **kwargs) as response:
                status = response.status_code
                content = await read_capped(response.aiter_bytes(), max_bytes)
        except httpx.RequestError as exc:  # the transport's errors, and a body httpx cannot decode
            raise BatchError(self._redact(f"{self._name} at {url}: {doing} failed ({exc!r})"), transient=True) \
                from None
        except ReplyTooLargeError as exc:
            raise BatchError(f"{self._name} at {url}: {doing} failed: {exc}") from None
        if status >= 300:
            said = server_message(content)
            raise BatchError(self._redact(f"{self._name} at {url}: {doing} was refused (HTTP {status}: {said})"),
                             status=status, transient=retryable_status(status))
        return content

    async def _json(self, method: str, path: str, doing: str, **kwargs: Any) -> dict[str, Any]:
        data = loads_or_none(await self._call(method, path, doing, **kwargs))
        if not isinstance(data, dict):
            raise BatchError(f"{self._name} at {self.base + path}: {doing} got a reply that is not a JSON object",
                             transient=True)
        return data


class OpenAIBatches(BatchAPI):
    protocol = "openai"
    max_requests = 50_000
    max_bytes = 200 * 10**6  # "up to 200 MB" a file; counted in decimal to stay under it
    ENDED = ("completed", "failed", "expired", "cancelled")

    def line(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": self.line_path, "body": body},
                          ensure_ascii=False, separators=(",", ":")).encode()

    async def submit(self, lines: list[bytes], record: BatchRecord, recorded: Callable[[], None]) -> str:
        record.input_file_id = await self._upload(b"\n".join(lines) + b"\n", f"{record.local}.jsonl")
        recorded()
        created = await self._json("POST", "/batches", "creating the batch", json=self._creation(record))
        return _plain_id(self._batch(created).get("id"), "batch id", self._name)

    async def _upload(self, data: bytes, name: str) -> str:
        upload = await self._json("POST", "/files", "uploading the batch's requests", data={"purpose": "batch"},
                                  files={"file": (name, data, "application/jsonl")})
        return _plain_id(upload.get("id"), "file id", self._name)

    def _creation(self, record: BatchRecord) -> dict[str, Any]:
        # The metadata names our record: a run that stops before hearing back finds the batch by it.
        return {"input_file_id": record.input_file_id, "endpoint": self.line_path, "completion_window": "24h",
                "metadata": {"dataformer_nb": record.local}}

    def _batch(self, data: dict[str, Any]) -> dict[str, Any]:
        """The batch object in a reply."""
        return data

    async def find(self, record: BatchRecord) -> str | None:
        if record.input_file_id is None:  # never uploaded, so never created
            return None
        after = None
        for _ in range(LIST_PAGES):
            data = loads_or_none(await self._call("GET", "/batches", "listing batches",
                                           params={"limit": 100, **({"after": after} if after else {})}))
            items = data if isinstance(data, list) else data.get("data") if isinstance(data, dict) else None
            batches = [self._batch(b) for b in (items if isinstance(items, list) else []) if isinstance(b, dict)]
            for batch in batches:
                metadata = _object(batch.get("metadata"))
                if metadata.get("dataformer_nb") == record.local or batch.get("input_file_id") == record.input_file_id:
                    return _plain_id(batch.get("id"), "batch id", self._name)
            if not isinstance(data, dict) or not data.get("has_more") or not batches:
                return None
            after = batches[-1].get("id")
            if not is_batch_id(after):
                return None
        return None

    async def status(self, batch_id: str) -> BatchStatus:
        return self._status(self._batch(await self._json("GET", f"/batches/{batch_id}", f"reading batch {batch_id}")))

    async def cancel(self, batch_id: str) -> BatchStatus:
        return self._status(self._batch(await self._json("POST", f"/batches/{batch_id}/cancel",
                                                         f"cancelling batch {batch_id}")))

    async def results(self, batch_id: str, status: BatchStatus) -> Iterator[LineResult]:
        lines: list[bytes] = []
        for file_id in (status.output_file_id, status.error_file_id):
            if file_id:
                content = await self._call("GET", f"/files/{_plain_id(file_id, 'file id', self._name)}/content",
                                           f"downloading the results of batch {batch_id}", max_bytes=DOWNLOAD_MAX_BYTES)
                lines += content.splitlines()
        return (_openai_line(line) for line in lines if line.strip())

    def _status(self, data: dict[str, Any]) -> BatchStatus:
        state = _word(data.get("status")).lower()  # Together's are upper case
        counts = data.get("request_counts")
        errors = _object(data.get("errors")).get("data")
        errors = errors if isinstance(errors, list) else []
        note = "; ".join(_text(e.get("message", e)) for e in errors[:3] if isinstance(e, dict))
        note = note or (_text(data.get("error")) if data.get("error") else "")
        ended = state in self.ENDED
        output, error_file = _file_id(data.get("output_file_id")), _file_id(data.get("error_file_id"))
        if not isinstance(counts, dict):  # Together gives a percentage
            progress = data.get("progress")
            fraction = 1.0 if ended else progress / 100 if progress is not None and _finite(progress) else 0.0
            return BatchStatus(state, ended, 0, 0, 0, output, error_file, note, fraction=max(0.0, min(1.0, fraction)))
        completed, failed = _count(counts.get("completed")), _count(counts.get("failed"))
        return BatchStatus(state, ended, _count(counts.get("total")), completed + failed, failed, output, error_file,
                           note)


class GroqBatches(OpenAIBatches):
    max_bytes = 100 * 10**6  # https://console.groq.com/docs/batch: "up to 100 MB"


class TogetherBatches(OpenAIBatches):
    """Together's Batch API (https://docs.together.ai/docs/batch-inference): OpenAI's lines and
    files, but uploaded to ``/files/upload`` with ``purpose=batch-api``, a creation answered as
    ``{"job": ...}``, upper-case states and a percentage instead of counts."""

    max_bytes = 100 * 10**6

    async def _upload(self, data: bytes, name: str) -> str:
        upload = await self._json("POST", "/files/upload", "uploading the batch's requests",
                                  data={"purpose": "batch-api", "file_name": name, "file_type": "jsonl"},
                                  files={"file": (name, data, "application/jsonl")})
        return _plain_id(upload.get("id"), "file id", self._name)

    def _creation(self, record: BatchRecord) -> dict[str, Any]:
        return {"input_file_id": record.input_file_id, "endpoint": self.line_path}  # no metadata: found by its file

    def _batch(self, data: dict[str, Any]) -> dict[str, Any]:
        job = data.get("job")
        return job if isinstance(job, dict) else data


class AnthropicBatches(BatchAPI):
    protocol = "anthropic"
    max_requests = 100_000
    max_bytes = 256 * 10**6

    def line(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        return json.dumps({"custom_id": custom_id, "params": body}, ensure_ascii=False,
                          separators=(",", ":")).encode()

    def batch_bytes(self, lines: list[bytes]) -> int:
        return len(b'{"requests":[]}') + sum(len(line) + 1 for line in lines)

    async def submit(self, lines: list[bytes], record: BatchRecord, recorded: Callable[[], None]) -> str:
        content = b'{"requests":[' + b",".join(lines) + b"]}"
        created = await self._json("POST", "/messages/batches", "creating the batch", content=content,
                                   headers={**self._headers, "content-type": "application/json"})
        return _plain_id(created.get("id"), "batch id", self._name)

    async def status(self, batch_id: str) -> BatchStatus:
        return self._status(await self._json("GET", f"/messages/batches/{batch_id}", f"reading batch {batch_id}"))

    async def cancel(self, batch_id: str) -> BatchStatus:
        return self._status(await self._json("POST", f"/messages/batches/{batch_id}/cancel",
                                             f"cancelling batch {batch_id}"))

    async def results(self, batch_id: str, status: BatchStatus) -> Iterator[LineResult]:
        # From our base URL, not the reply's results_url: a reply must not choose where the key is sent.
        content = await self._call("GET", f"/messages/batches/{batch_id}/results",
                                   f"downloading the results of batch {batch_id}", max_bytes=DOWNLOAD_MAX_BYTES)
        return (_anthropic_line(line) for line in content.splitlines() if line.strip())

    def _status(self, data: dict[str, Any]) -> BatchStatus:
        state = _word(data.get("processing_status"))
        counts = _object(data.get("request_counts"))
        values = {name: _count(counts.get(name)) for name in ("processing", "succeeded", "errored", "canceled",
                                                               "expired")}
        total = sum(values.values())
        failed = values["errored"] + values["canceled"] + values["expired"]
        return BatchStatus(state, state == "ended", total, total - values["processing"], failed)


# The readers of a batch's result lines: each line is the service's word about one request, so
# whatever its shape, it fails only that request (never the batch's other, paid lines).

_UNREADABLE_LINE = "the service's result line for this request holds no reply or error that can be read"


def _openai_line(line: bytes) -> LineResult:
    data = loads_or_none(line)
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    if not isinstance(custom_id, str):
        return LineResult("", None, "a line of the results is not JSON with a custom_id", "malformed json")
    response, error = data.get("response"), data.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    if error is None and status == 200 and isinstance(response, dict):
        return LineResult(custom_id, response.get("body"), None)
    if isinstance(error, dict):  # the batch could not run it (expired, cancelled, ...)
        code = _word(error.get("code"), "error")
        return LineResult(custom_id, None, f"{code}: {_text(error.get('message', ''))}: {AGAIN}", f"batch {code}")
    if type(status) is not int:
        said = f": {_text(error)}" if error is not None else ""
        return LineResult(custom_id, None, f"{_UNREADABLE_LINE}{said}: {AGAIN}", "malformed json")
    body = response.get("body") if isinstance(response, dict) else None
    message = _object(_object(body).get("error")).get("message", body)
    return LineResult(custom_id, None, f"HTTP {status}: {_text(message)}", f"http {status}")


def _anthropic_line(line: bytes) -> LineResult:
    data = loads_or_none(line)
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(custom_id, str) or not isinstance(result, dict):
        return LineResult("", None, "a line of the results is not JSON with a custom_id and result", "malformed json")
    kind = _word(result.get("type"))
    if kind == "succeeded":
        return LineResult(custom_id, result.get("message"), None)
    if kind == "errored":
        error = _object(_object(result.get("error")).get("error"))
        said = error or result.get("error")
        return LineResult(custom_id, None, f"{_word(error.get('type'), 'error')}: "
                                           f"{_text(error.get('message', '') if error else said)}", "batch errored")
    return LineResult(custom_id, None, f"the batch ended without running it ({kind}): {AGAIN}", f"batch {kind}")


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _word(value: Any, default: str = "unknown") -> str:
    """A short word from a reply (a state, a code): printable, at most 40 characters."""
    return printable(value, 40) or default if isinstance(value, str) else default


def _text(value: Any) -> str:
    """What a service says, as it may be shown: printable, at most 300 characters."""
    if isinstance(value, str):
        return printable(value)
    try:
        return printable(json.dumps(value)[:1200])
    except (TypeError, ValueError, RecursionError):
        return "(unreadable)"


def _file_id(value: Any) -> str | None:
    """A file id as the service gave it (checked by ``_plain_id`` before it goes into a URL)."""
    return value if isinstance(value, str) and value else None


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and value == value and abs(value) < 1e300


class UnusableIdError(BatchError):
    """A service answered with an id that is not a plain identifier: what it names may exist (and
    be paid for), but the id is never put into a URL or a file name."""


def _plain_id(value: Any, what: str, name: str) -> str:
    """An id from a service's reply, checked before it goes into a URL or a file name."""
    if not is_batch_id(value):
        raise UnusableIdError(f"{name} answered with a {what} {str(value)[:60]!r} that is not a plain identifier")
    return value


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0
