"""Sending one POST and reading its reply whole, over aiohttp or any httpx transport.

Measured on loopback (``benchmarks/``): httpx's own transport costs about 12x the client
CPU of a bare aiohttp session; httpx's AsyncClient over an aiohttp transport about 2x;
building httpx's Request and Response objects alone, about a fifth of a request's cost.
So the default ``AiohttpTransport`` is an httpx transport (usable wherever httpx is,
mapping aiohttp's errors onto httpx's) whose ``AiohttpTransport.post`` skips httpx's
models; any other httpx transport (``transport="httpx"``, a ``MockTransport``) is driven
through httpx's interface by ``post``.
"""

from __future__ import annotations

import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Literal, NamedTuple

import httpx

if TYPE_CHECKING:
    import aiohttp


DEFAULT_MAX_REPLY_BYTES = 64 * 2**20
_RETRYABLE_STATUSES = frozenset({408, 409, 429})


def retryable_status(status: int) -> bool:
    """Whether an HTTP error status is worth asking again (a timeout, a conflict, a rate limit, a
    server error), online and in the batch APIs alike; other 4xx say the request is at fault."""
    return status in _RETRYABLE_STATUSES or status >= 500


class Reply(NamedTuple):
    status: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes


class ReplyTooLargeError(Exception):
    """A reply's decoded body passed the cap (a runaway or hostile server, a gzip bomb)."""


async def post(transport: httpx.AsyncBaseTransport, url: httpx.URL, content: bytes,
               headers: Mapping[str, str], timeout: float, max_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> Reply:
    """POST ``content`` and read the whole reply within ``timeout`` seconds, the whole exchange
    (a server dripping bytes cannot hold a request longer). Errors are httpx's
    ``TransportError``s, or ReplyTooLargeError past ``max_bytes`` decoded bytes."""
    if isinstance(transport, AiohttpTransport):
        return await transport.post(str(url), content, headers, timeout, max_bytes)
    import asyncio

    try:
        return await asyncio.wait_for(_post_httpx(transport, url, content, headers, timeout, max_bytes), timeout)
    except asyncio.TimeoutError as exc:
        raise httpx.ReadTimeout(f"no whole reply within {timeout:g} s") from exc


async def _post_httpx(transport: httpx.AsyncBaseTransport, url: httpx.URL, content: bytes,
                      headers: Mapping[str, str], timeout: float, max_bytes: int) -> Reply:
    request = httpx.Request("POST", url, content=content, headers=headers,
                            extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)})
    response = await transport.handle_async_request(request)
    try:
        body = await read_capped(response.aiter_bytes(), max_bytes)
    finally:
        await response.aclose()
    return Reply(response.status_code, response.headers, body)


async def read_capped(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The chunks joined, or ReplyTooLargeError once they pass ``max_bytes``."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise ReplyTooLargeError(f"the reply passed {max_bytes} bytes")
    return bytes(body)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp ``ClientSession`` of at most ``limit`` connections, behind httpx's interface."""

    def __init__(self, limit: int, ssl_context: ssl.SSLContext) -> None:
        self._limit = limit
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    async def post(self, url: str, content: bytes, headers: Mapping[str, str], timeout: float,
                   max_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> Reply:
        """POST and read the reply, all within ``timeout`` seconds."""
        return await self._send("POST", url, content, headers, (timeout, None), decompress=True, max_bytes=max_bytes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport interface over aiohttp: the request sent, its reply read whole (capped)."""
        timeout = request.extensions.get("timeout", {})
        status, headers, content = await self._send(
            request.method, str(request.url), await request.aread(),  # read: a multipart upload streams
            request.headers.multi_items(), (None, timeout.get("read")), decompress=False,  # httpx decodes the body
            # a batch's output file may pass the cap on replies; it says its own
            max_bytes=request.extensions.get("max_reply_bytes", DEFAULT_MAX_REPLY_BYTES),
        )
        return httpx.Response(status, headers=list(headers.items()), content=content, request=request)

    async def _send(self, method: str, url: str, content: bytes, headers: Mapping[str, str] | Iterable[tuple[str, str]],
                    timeouts: tuple[float | None, float | None], decompress: bool, max_bytes: int) -> Reply:
        import asyncio

        import aiohttp  # here, not at the top: it doubles the time to import dataformer_nb

        if timeouts not in self._timeouts:
            # a deadline for the whole exchange is one timer; a read timeout re-arms one per chunk
            total, read = timeouts
            self._timeouts[timeouts] = aiohttp.ClientTimeout(total=total, sock_connect=total or read, sock_read=read)
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl_context)
            # aiohttp looks proxies up on every request when trusting the environment: only if one is set
            self._session = aiohttp.ClientSession(connector=connector, trust_env=bool(urllib.request.getproxies()))
        try:
            async with self._session.request(
                method, url, data=content, headers=headers, allow_redirects=False,
                auto_decompress=decompress, timeout=self._timeouts[timeouts],
            ) as reply:
                return Reply(reply.status, reply.headers, await _read_reply(reply, decompress, max_bytes))
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout(f"no reply in time ({exc!r})") from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the aiohttp session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_reply(reply: aiohttp.ClientResponse, decompress: bool, max_bytes: int) -> bytes:
    """The body, at most ``max_bytes`` once decoded. A reply of known, uncompressed length is
    read in one call, as before the cap; others (chunked, gzip) are counted as they come."""
    length = reply.content_length
    encoded = decompress and reply.headers.get("Content-Encoding", "identity") != "identity"
    if length is not None and not encoded:
        if length > max_bytes:
            raise ReplyTooLargeError(f"the reply announced {length} bytes, more than {max_bytes}")
        return await reply.read()
    return await read_capped(reply.content.iter_chunked(2**16), max_bytes)


TransportChoice = Literal["aiohttp", "httpx"] | httpx.AsyncBaseTransport


def open_transport(choice: TransportChoice, connections: int) -> httpx.AsyncBaseTransport:
    """The transport ``choice`` names, for at most ``connections`` at once (a transport passed in
    is used as it is: its owner closes it).

    Requests go straight to the transport: httpx's AsyncClient layer costs more CPU per
    request than the aiohttp transport under it (benchmarks/).
    """
    if isinstance(choice, httpx.AsyncBaseTransport):
        return choice
    if choice == "aiohttp":
        return AiohttpTransport(connections, _ssl_context())
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncHTTPTransport(verify=_ssl_context(), limits=limits)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA store costs ~0.1 s of CPU: once per process, not once per generate.
    return httpx.create_ssl_context()
