"""Sending one POST and reading its reply whole, over aiohttp or any httpx transport.

Measured on loopback (``benchmarks/``): httpx's own transport costs about 12x the client
CPU of a bare aiohttp session; httpx's AsyncClient over an aiohttp transport about 2x;
building httpx's Request and Response objects alone, about a fifth of a request's cost.
So the default :class:`AiohttpTransport` is an httpx transport (usable wherever httpx is,
mapping aiohttp's errors onto httpx's) whose :meth:`~AiohttpTransport.post` skips httpx's
models; any other httpx transport (``transport="httpx"``, a ``MockTransport``) is driven
through httpx's interface by :func:`post`.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import httpx

if TYPE_CHECKING:
    import aiohttp


class Reply(NamedTuple):
    status: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes


async def post(transport: httpx.AsyncBaseTransport, url: httpx.URL, content: bytes,
               headers: Mapping[str, str], timeout: float) -> Reply:
    """POST ``content`` and read the whole reply; errors are httpx's ``TransportError``s."""
    if isinstance(transport, AiohttpTransport):
        return await transport.post(str(url), content, headers, timeout)
    request = httpx.Request("POST", url, content=content, headers=headers,
                            extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)})
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return Reply(response.status_code, response.headers, response.content)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp ``ClientSession`` of at most ``limit`` connections, behind httpx's interface."""

    def __init__(self, limit: int, ssl_context: ssl.SSLContext) -> None:
        self._limit = limit
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    async def post(self, url: str, content: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        """POST and read the reply, all within ``timeout`` seconds."""
        return await self._send("POST", url, content, headers, (timeout, None), decompress=True)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        status, headers, content = await self._send(
            request.method, str(request.url), request.content, request.headers.multi_items(),
            (None, timeout.get("read")), decompress=False,  # httpx decodes the body itself
        )
        return httpx.Response(status, headers=headers.items(), content=content, request=request)

    async def _send(self, method: str, url: str, content: bytes, headers: Mapping[str, str] | Iterable[tuple[str, str]],
                    timeouts: tuple[float | None, float | None], decompress: bool) -> Reply:
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
                method, url, data=content, headers=headers, allow_redirects=False,  # type: ignore[arg-type]
                auto_decompress=decompress, timeout=self._timeouts[timeouts],
            ) as reply:
                return Reply(reply.status, reply.headers, await reply.read())
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout(f"no reply in time ({exc!r})") from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
