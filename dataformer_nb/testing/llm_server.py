"""A real HTTP server on 127.0.0.1 that speaks OpenAI, Anthropic and Ollama, for tests.

Replies are ``Answer: <last user message>``. A prompt can be given a script of actions,
played one per request carrying it: ``ok``, ``429`` (with Retry-After), ``500``, ``400``,
``401``, ``drop`` (close the connection without a reply), ``malformed`` (200 with broken
JSON), ``slow`` (reply after ``slow_seconds``, past the client's timeout: counted in
``late``, not ``completed``), ``hold`` (wait until ``release()``), ``sigint`` (send SIGINT
to this process, then hold), ``kill`` (SIGKILL ``kill_pid``, then hold), ``raw:NAME`` (reply
with ``raw[NAME]``: status, headers, body bytes) and ``drip`` (a good reply, one byte every
``drip_seconds``). With ``vary`` set, the n-th reply to a prompt ends `` #n``, as a sampling
model varies its answers. ``/embeddings`` (and Ollama's ``/api/embed``) answer a vector made
from the input's text.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from ..images import content_text


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # the default 5 stalls bursts of connects on SYN retries
    daemon_threads = True


class FakeLLMServer:
    """A loopback server speaking the online APIs with scripted faults (see the module's
    documentation); a context manager."""
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.completed: Counter[str] = Counter()  # successful replies, by prompt
        self.late: Counter[str] = Counter()  # replies written after the client's timeout
        self.slow_seconds = 1.0
        self.kill_pid: int | None = None
        self.statuses: Counter[int] = Counter()
        self.scripts: dict[str, deque[str]] = {}
        self.retry_after = "0.01"
        self.raw: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.drip_seconds = 0.05
        self.required_key: str | None = None
        self.vary = False
        self.reply_with_prompt = False  # the reply's text is the prompt itself: JSON in, JSON out
        self.asked: Counter[str] = Counter()  # requests received, by prompt
        self.active = 0
        self.peak_active = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified as each request arrives
        self._released = threading.Event()
        self.holding = threading.Event()  # set when a "hold" begins
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def count(self) -> int:
        """Requests received so far."""
        return len(self.requests)

    def script(self, prompt: str, *actions: str) -> None:
        """Play ``actions`` (``ok``, ``429``, ``drop``, ...), one per request whose prompt is ``prompt``."""
        self.scripts[prompt] = deque(actions)

    def release(self) -> None:
        """Let every request held by a ``hold`` (or ``slow``) action go on."""
        self._released.set()

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` requests have arrived (False if ``timeout`` seconds pass first)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.requests) >= n, timeout)

    def _next_action(self, prompt: str) -> str:
        with self._lock:
            queue = self.scripts.get(prompt)
            return queue.popleft() if queue else "ok"


def prompt_of(body: dict[str, Any]) -> str:
    """The prompt of a request ``body``, whatever its format (the last user message, a prompt, an input)."""
    if "input" in body:
        return str(body["input"])
    if "messages" in body:
        users = [m["content"] for m in body["messages"] if m.get("role") == "user"]
        return content_text(users[-1]) if users else ""  # text and image parts: their text, [image WxH]
    return body.get("prompt", "")


def embedding_of(text: str) -> list[float]:
    """A vector made from ``text``, the same every time: the loopback server's embedding."""
    codes = [ord(c) for c in text] or [0]
    return [round((sum(codes[i::4]) % 97) / 97 + 0.01, 4) for i in range(4)]


def _reply(path: str, body: dict[str, Any], text: str) -> dict[str, Any]:
    path = path.partition("?")[0]
    model = body.get("model", "")
    if path.endswith(("/embeddings", "/api/embed")):
        given = body.get("input")
        inputs: list[Any] = [given] if isinstance(given, str) else list(given or [])
        if path.endswith("/api/embed"):
            return {"model": model, "embeddings": [embedding_of(t) for t in inputs], "prompt_eval_count": 2}
        return {"object": "list", "model": model, "usage": {"prompt_tokens": 2, "total_tokens": 2},
                "data": [{"object": "embedding", "index": i, "embedding": embedding_of(t)}
                         for i, t in enumerate(inputs)]}
    if path.endswith("/messages"):
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 5}}
    if path.endswith("/api/chat"):
        return {"model": model, "message": {"role": "assistant", "content": text}, "done": True,
                "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 5}
    if path.endswith("/api/generate"):
        return {"model": model, "response": text, "done": True, "prompt_eval_count": 3, "eval_count": 5}
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    if path.endswith("/chat/completions"):
        return {"id": "chatcmpl-1", "object": "chat.completion", "model": model, "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}]}
    return {"id": "cmpl-1", "object": "text_completion", "model": model, "usage": usage,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}


def _handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw)
            prompt = prompt_of(body)
            with server._lock:
                headers = httpx.Headers(self.headers.items())
                server.requests.append({"path": self.path, "headers": headers, "body": body})
                server._arrived.notify_all()
                server.active += 1
                server.peak_active = max(server.peak_active, server.active)
                server.asked[prompt] += 1
                answer = prompt if server.reply_with_prompt else \
                    f"Answer: {prompt}" + (f" #{server.asked[prompt]}" if server.vary else "")
            try:
                self._answer(body, prompt, server._next_action(prompt), answer)
            finally:
                with server._lock:
                    server.active -= 1

        def _answer(self, body: dict[str, Any], prompt: str, action: str, answer: str) -> None:
            if server.required_key and server.required_key not in (
                self.headers.get("Authorization", ""), f"Bearer {self.headers.get('x-api-key', '')}"
            ):
                action = "401"
            if action == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
                action = "hold"
            if action == "kill":
                assert server.kill_pid is not None
                os.kill(server.kill_pid, signal.SIGKILL)
                action = "hold"
            if action == "slow":
                server._released.wait(server.slow_seconds)
                with server._lock:
                    server.late[prompt] += 1
                self._send(200, json.dumps(_reply(self.path, body, answer)).encode(), {})
                return
            if action == "hold":
                server.holding.set()
                server._released.wait(60)
                self.close_connection = True
                return
            if action == "drop":
                self.close_connection = True
                return
            if action == "malformed":
                self._send(200, b'{"choices": [', {})
                return
            if action.startswith("raw:"):
                status, headers, payload = server.raw[action[4:]]
                self._send(status, payload, headers)
                return
            if action == "drip":
                self._drip(json.dumps(_reply(self.path, body, answer)).encode())
                return
            if action.isdigit():
                status = int(action)
                headers = {"Retry-After": server.retry_after} if status == 429 else {}
                payload = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
                self._send(status, payload, headers)
                return
            payload = json.dumps(_reply(self.path, body, answer)).encode()
            # Counted before writing: the client may read the reply before this thread runs on.
            with server._lock:
                server.completed[prompt] += 1
            if not self._send(200, payload, {}):
                with server._lock:
                    server.completed[prompt] -= 1

        def _drip(self, payload: bytes) -> None:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                for i in range(len(payload)):
                    if server._released.wait(server.drip_seconds):
                        break
                    self.wfile.write(payload[i:i + 1])
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True

        def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> bool:
            with server._lock:
                server.statuses[status] += 1
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
            except OSError:  # the client went away
                self.close_connection = True
                return False
            return True

    return Handler
