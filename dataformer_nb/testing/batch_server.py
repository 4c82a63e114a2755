"""A local fake of the providers' batch APIs, for demos and tests: no key, no network, no bill.

One HTTP server on 127.0.0.1 speaks both protocols dataformer_nb submits batches with:

- OpenAI's (and Groq's): ``POST /v1/files`` (multipart, ``purpose=batch``),
  ``POST /v1/batches``, ``GET /v1/batches[/{id}]``, ``POST /v1/batches/{id}/cancel``,
  ``GET /v1/files/{id}/content`` (output and error files, JSONL); with ``dialect="together"``,
  Together's variant: ``POST /v1/files/upload`` (``purpose=batch-api``), a creation answered
  ``{"job": ...}``, upper-case states and a ``progress`` percentage instead of counts;
- Anthropic's Message Batches: ``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``,
  ``POST /v1/messages/batches/{id}/cancel``, ``GET /v1/messages/batches/{id}/results``.

Each request of a batch is answered ``Answer: <last user message>``; one whose prompt contains
``FAIL`` fails (HTTP 400 in OpenAI's error file, ``errored`` in Anthropic's results). A batch
works through its requests over ``process_seconds`` (the counts grow as it goes), or, with
``hold=True``, waits until ``release`` (or ``max_hold_seconds``). It refuses a batch of more
than ``max_requests`` requests or a file of more than ``max_file_bytes``, as the real services do. The counters
(``uploads``, ``creations``, ``polls``, ``cancels``, ``downloads``) say what clients did.

    with FakeBatchServer() as server:
        llm = AsyncLLM(url=server.url, model="fake", batch_poll_interval=0.5)
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_FILE_BYTES = 200 * 2**20
ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_MAX_BYTES = 256 * 2**20
UNKNOWN_MODEL = "no-such-model"  # a batch asking for it fails validation as a whole


@dataclass
class _Job:
    """One batch on the fake service."""

    id: str
    protocol: str  # "openai" | "anthropic"
    lines: list[dict[str, Any]]  # OpenAI: {"custom_id", "url", "body"}; Anthropic: {"custom_id", "params"}
    created: float
    input_file_id: str | None = None
    endpoint: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    cancelled_at: float | None = None  # cancelling: what was done by then is all that is done
    cancel_noticed: bool = False  # the batch ends at the first look after the cancel
    ended: bool = False
    invalid: str = ""  # why validation failed the whole batch (OpenAI style): a line asked for an unknown model
    output_file_id: str | None = None
    error_file_id: str | None = None


class FakeBatchServer:
    """The fake batch service; a context manager that serves on 127.0.0.1 while open."""

    def __init__(self, *, process_seconds: float = 1.0, hold: bool = False, key: str | None = None,
                 max_requests: int | None = None, max_file_bytes: int | None = None,
                 max_hold_seconds: float = 60.0, dialect: str = "openai") -> None:
        self.dialect = dialect
        self.process_seconds = process_seconds
        self.max_hold_seconds = max_hold_seconds
        self.key = key  # if set, requests without it are refused (401)
        self.max_requests = max_requests
        self.max_file_bytes = max_file_bytes
        self.uploads = self.creations = self.polls = self.cancels = self.downloads = 0
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, _Job] = {}
        self.polled = threading.Event()  # set at each poll of a batch's status
        self.lose_create_reply = False  # the next batch is created, but its reply is a 502 (a lost reply)
        self.lose_files = False  # output files are gone (404), as they are after the days a service keeps them
        # (custom_id, result line) -> the line written instead: a hostile or broken service's results
        self.rewrite_line: Callable[[str, str], str] | None = None
        # (method, path, status, reply) -> (status, headers, body) sent instead, or None to send the reply
        self.rewrite_reply: Callable[[str, str, int, Any], tuple[int, dict[str, str], bytes] | None] | None = None
        self._held = hold
        self._released_at: float | None = None
        self._ids: dict[str, Iterator[int]] = defaultdict(lambda: itertools.count(1))  # one count per kind
        self._lock = threading.RLock()
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeBatchServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> FakeBatchServer:
        """Serve in a background thread (for a notebook, where no ``with`` block spans cells)."""
        return self.__enter__()

    def close(self) -> None:
        """Stop the server and its thread."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def release(self) -> None:
        """Let held batches start working (from now on, over ``process_seconds``)."""
        with self._lock:
            self._held = False
            self._released_at = time.monotonic()

    def lines_received(self) -> int:
        """Requests received in all batches."""
        with self._lock:
            return sum(len(job.lines) for job in self.jobs.values())

    # The state of a job, computed when asked: no thread per batch.

    def _done(self, job: _Job) -> int:
        """How many of ``job``'s requests are answered by now."""
        # Held batches let go after max_hold_seconds anyway: a client that never releases fails a test, not hangs it.
        release = job.created + self.max_hold_seconds if self._held else self._released_at or 0.0
        start = max(job.created, release)
        now = job.cancelled_at or time.monotonic()
        if now < start:
            return 0
        fraction = 1.0 if self.process_seconds <= 0 else (now - start) / self.process_seconds
        return max(0, min(len(job.lines), int(len(job.lines) * fraction)))

    def _answers(self, job: _Job) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(custom_id, HTTP status, body) of each request answered so far."""
        if job.invalid:
            return
        for line in job.lines[:self._done(job)]:
            params = line["body"] if job.protocol == "openai" else line["params"]
            prompt = _prompt(params)
            if "FAIL" in prompt:
                yield line["custom_id"], 400, {"error": {"type": "invalid_request_error",
                                                         "message": f"this request was refused: {prompt}"}}
            elif job.protocol == "anthropic":
                yield line["custom_id"], 200, {
                    "id": f"msg_{line['custom_id'][:8]}", "type": "message", "role": "assistant",
                    "model": params.get("model", ""), "content": [{"type": "text", "text": f"Answer: {prompt}"}],
                    "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 5}}
            else:
                yield line["custom_id"], 200, _openai_reply(line.get("url", ""), params, prompt)

    def _finish(self, job: _Job) -> None:
        """End ``job`` if its time has come: write its output (and error) file."""
        if job.ended or (self._done(job) < len(job.lines) and not job.cancel_noticed):
            return
        job.ended = True
        if job.protocol != "openai":
            return
        ok: list[str] = []
        failed: list[str] = []
        for custom_id, status, body in self._answers(job):
            line = {"id": f"batch_req_{next(self._ids['line'])}", "custom_id": custom_id, "error": None,
                    "response": {"status_code": status, "request_id": f"req_{custom_id[:8]}", "body": body}}
            (ok if status == 200 else failed).append(self._rewritten(custom_id, json.dumps(line)))
        if ok:
            job.output_file_id = self._store_file("\n".join(ok) + "\n")
        if failed:
            job.error_file_id = self._store_file("\n".join(failed) + "\n")

    def _rewritten(self, custom_id: str, line: str) -> str:
        return line if self.rewrite_line is None else self.rewrite_line(custom_id, line)

    def _store_file(self, text: str) -> str:
        file_id = f"file-{next(self._ids['file'])}"
        self.files[file_id] = text.encode()
        return file_id

    def _openai_batch(self, job: _Job) -> dict[str, Any]:
        self._finish(job)
        answers = list(self._answers(job))
        failed = sum(1 for _, status, _ in answers if status != 200)
        if job.invalid:
            status = "failed"
        elif job.ended:
            status = "cancelled" if job.cancelled_at is not None else "completed"
        else:
            status = "cancelling" if job.cancelled_at is not None else "in_progress"
        if self.dialect == "together":
            return {"id": job.id, "input_file_id": job.input_file_id, "status": status.upper(),
                    "progress": 100.0 * len(answers) / max(1, len(job.lines)), "endpoint": job.endpoint,
                    "output_file_id": job.output_file_id, "error_file_id": job.error_file_id, "error": None}
        errors = ({"object": "list", "data": [{"code": "model_not_found", "message": job.invalid}]}
                  if job.invalid else None)
        return {"id": job.id, "object": "batch", "endpoint": job.endpoint, "errors": errors,
                "input_file_id": job.input_file_id, "completion_window": "24h", "status": status,
                "output_file_id": job.output_file_id, "error_file_id": job.error_file_id,
                "created_at": int(job.created), "metadata": job.metadata,
                "request_counts": {"total": len(job.lines), "completed": len(answers) - failed, "failed": failed}}

    def _anthropic_batch(self, job: _Job) -> dict[str, Any]:
        self._finish(job)
        answers = list(self._answers(job))
        errored = sum(1 for _, status, _ in answers if status != 200)
        left = len(job.lines) - len(answers)
        ended = job.ended
        status = "ended" if ended else "canceling" if job.cancelled_at is not None else "in_progress"
        return {"id": job.id, "type": "message_batch", "processing_status": status,
                "created_at": "2026-01-01T00:00:00Z",
                "request_counts": {"processing": 0 if ended else left, "succeeded": len(answers) - errored,
                                   "errored": errored, "canceled": left if ended else 0, "expired": 0},
                "results_url": f"{self.url}/messages/batches/{job.id}/results" if ended else None}

    # Endpoints: each returns (status, body); body is a dict (JSON) or bytes.

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        """Answer one HTTP request as the batch APIs do (the server's handler calls it)."""
        if self.key is not None and self.key not in (headers.get("x-api-key"),
                                                     (headers.get("authorization") or "").removeprefix("Bearer ")):
            return 401, {"error": {"type": "authentication_error", "message": "invalid api key"}}
        route = urlsplit(path).path.removeprefix("/v1").rstrip("/")
        parts = route.strip("/").split("/")
        with self._lock:
            if method == "POST" and route == ("/files/upload" if self.dialect == "together" else "/files"):
                return self._upload(headers, body)
            if method == "GET" and parts[0] == "files" and parts[-1] == "content" and len(parts) == 3:
                self.downloads += 1
                data = None if self.lose_files else self.files.get(parts[1])
                return (200, data) if data is not None else _not_found(parts[1])
            if route == "/batches":
                return self._create_openai(body) if method == "POST" else self._list(path)
            if parts[0] == "batches" and len(parts) >= 2:
                return self._one(parts[1], parts[2:], method, "openai")
            if route == "/messages/batches" and method == "POST":
                return self._create_anthropic(body)
            if parts[:2] == ["messages", "batches"] and len(parts) >= 3:
                return self._one(parts[2], parts[3:], method, "anthropic")
        return 404, {"error": {"type": "not_found_error", "message": f"no route {method} {path}"}}

    def _upload(self, headers: Any, body: bytes) -> tuple[int, Any]:
        fields = _multipart(headers.get("content-type", ""), body)
        purpose = b"batch-api" if self.dialect == "together" else b"batch"
        if fields.get("purpose") != purpose or "file" not in fields:
            return 400, {"error": {"message": f"expected multipart fields purpose={purpose.decode()} and file"}}
        data = fields["file"]
        if self.max_file_bytes is not None and len(data) > self.max_file_bytes:
            return 400, {"error": {"message": f"file of {len(data)} bytes is over the {self.max_file_bytes} limit"}}
        self.uploads += 1
        file_id = self._store_file(data.decode())
        return 200, {"id": file_id, "object": "file", "bytes": len(data), "purpose": "batch"}

    def _create_openai(self, body: bytes) -> tuple[int, Any]:
        request = json.loads(body)
        data = self.files.get(request.get("input_file_id", ""))
        if data is None:
            return _not_found(request.get("input_file_id"))
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        if self.max_requests is not None and len(lines) > self.max_requests:
            return 400, {"error": {"message": f"{len(lines)} requests is over the {self.max_requests} per batch limit"}}
        if len({line["custom_id"] for line in lines}) != len(lines):
            return 400, {"error": {"message": "custom_id values must be unique within a batch"}}
        job = self._new_job("batch", "openai", lines)
        job.input_file_id, job.endpoint = request["input_file_id"], request.get("endpoint", "")
        job.metadata = request.get("metadata") or {}
        unknown = [n for n, line in enumerate(lines, 1) if line.get("body", {}).get("model") == UNKNOWN_MODEL]
        if unknown:
            job.invalid, job.ended = f"line {unknown[0]}: the model {UNKNOWN_MODEL!r} does not exist", True
        if self.dialect == "together":
            return self._created({"job": self._openai_batch(job), "warning": ""})
        return self._created(self._openai_batch(job))

    def _create_anthropic(self, body: bytes) -> tuple[int, Any]:
        if self.max_file_bytes is not None and len(body) > self.max_file_bytes:
            return 413, {"error": {"type": "request_too_large", "message": "the batch is too large"}}
        lines = json.loads(body).get("requests") or []
        if self.max_requests is not None and len(lines) > self.max_requests:
            return 400, {"error": {"message": f"{len(lines)} requests is over the {self.max_requests} per batch limit"}}
        return self._created(self._anthropic_batch(self._new_job("msgbatch", "anthropic", lines)))

    def _created(self, batch: dict[str, Any]) -> tuple[int, Any]:
        if self.lose_create_reply:
            self.lose_create_reply = False
            return 502, {"error": {"message": "bad gateway (the batch was created all the same)"}}
        return 200, batch

    def _new_job(self, prefix: str, protocol: str, lines: list[dict[str, Any]]) -> _Job:
        self.creations += 1
        job = _Job(f"{prefix}_{next(self._ids[prefix])}", protocol, lines, time.monotonic())
        self.jobs[job.id] = job
        return job

    def _list(self, path: str) -> tuple[int, Any]:
        after = parse_qs(urlsplit(path).query).get("after", [None])[0]
        jobs = [job for job in reversed(self.jobs.values()) if job.protocol == "openai"]
        if after is not None:
            ids = [job.id for job in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        page = jobs[:20]
        if self.dialect == "together":  # a plain list of every job
            return 200, [self._openai_batch(job) for job in jobs]
        return 200, {"object": "list", "data": [self._openai_batch(job) for job in page],
                     "has_more": len(jobs) > len(page)}

    def _one(self, batch_id: str, rest: list[str], method: str, protocol: str) -> tuple[int, Any]:
        job = self.jobs.get(batch_id)
        if job is None or job.protocol != protocol:
            return _not_found(batch_id)
        show = self._openai_batch if protocol == "openai" else self._anthropic_batch
        if method == "POST" and rest == ["cancel"]:
            self.cancels += 1
            if job.cancelled_at is None:
                job.cancelled_at = time.monotonic()
            state = show(job)  # cancelling now; ended at the next look
            job.cancel_noticed = True
            return 200, state
        if method == "GET" and rest == ["results"] and protocol == "anthropic":
            if not job.ended:
                return 400, {"error": {"type": "invalid_request_error", "message": "the batch has not ended"}}
            self.downloads += 1
            return 200, self._anthropic_results(job)
        if method == "GET" and not rest:
            self.polls += 1
            self.polled.set()
            return 200, show(job)
        return 404, {"error": {"message": f"no route {method} .../{batch_id}/{'/'.join(rest)}"}}

    def _anthropic_results(self, job: _Job) -> bytes:
        lines = []
        answered = set()
        for custom_id, status, body in self._answers(job):
            answered.add(custom_id)
            result = ({"type": "succeeded", "message": body} if status == 200 else
                      {"type": "errored", "error": {"type": "error", "error": body["error"]}})
            lines.append(self._rewritten(custom_id, json.dumps({"custom_id": custom_id, "result": result})))
        lines += [json.dumps({"custom_id": line["custom_id"], "result": {"type": "canceled"}})
                  for line in job.lines if line["custom_id"] not in answered]
        return ("\n".join(lines) + "\n").encode()


def _prompt(params: dict[str, Any]) -> str:
    if "input" in params:
        return str(params["input"])
    messages = params.get("messages") or []
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    return str(users[-1]) if users else str(params.get("prompt", ""))


def _openai_reply(url: str, params: dict[str, Any], prompt: str) -> dict[str, Any]:
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    if url.endswith("/embeddings"):
        vector = [round((sum(map(ord, prompt)) % 97) / 97 + 0.01, 4), 0.5]
        return {"object": "list", "model": params.get("model", ""), "usage": {"prompt_tokens": 2, "total_tokens": 2},
                "data": [{"object": "embedding", "index": 0, "embedding": vector}]}
    if url.endswith("/chat/completions"):
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": f"Answer: {prompt}"},
                                  "finish_reason": "stop"}
        kind = "chat.completion"
    else:
        choice, kind = {"index": 0, "text": f"Answer: {prompt}", "finish_reason": "stop"}, "text_completion"
    return {"id": "chatcmpl-batch", "object": kind, "model": params.get("model", ""), "usage": usage,
            "choices": [choice]}


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and name:
            fields[name] = payload if isinstance(payload, bytes) else b""
    return fields


def _not_found(what: Any) -> tuple[int, Any]:
    return 404, {"error": {"type": "not_found_error", "message": f"{what!r} was not found"}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _handler(server: FakeBatchServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def _answer(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reply = server.handle(method, self.path, headers, body)
            data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            extra: dict[str, str] = {}
            rewritten = server.rewrite_reply and server.rewrite_reply(method, self.path, status, reply)
            if rewritten:
                status, extra, data = rewritten
            self.send_response(status)
            self.send_header("Content-Type", "application/jsonl" if isinstance(reply, bytes) else "application/json")
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
