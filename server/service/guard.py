"""The server's front door: what every request passes before a route (or FastAPI's body parser)
sees it. A pure ASGI middleware, so it can answer without reading the body:

- the bearer token is checked from the headers first: a write (any method but GET/HEAD/OPTIONS)
  without the right token is refused before one byte of its body is read, and with
  SIQ_PROTECT_READS so are reads, the API description (/openapi.json, /docs, /redoc) and
  /metrics included; /healthz and /readyz stay open for orchestrators;
- a body over SIQ_MAX_BODY_BYTES is refused with 413: from Content-Length at once, or while
  it streams in when the length is not declared; a route that takes large bodies (POST
  /datasets: an archive) has its own bound and deadline (`large_bodies`);
- a body that has not all arrived SIQ_BODY_TIMEOUT_S after its headers is answered 408: one
  deadline for the whole body, not per read, so a sender that trickles a byte now and then
  is cut off as surely as one that stops (uvicorn has no read timeout of its own, so a slow
  sender would hold a connection forever);
- HEAD is GET without the body (RFC 9110): the GET route answers it, its dependencies (the
  read token with SIQ_PROTECT_READS) included, and the guard sends only the headers;
- an exception no handler took becomes a plain 500 that names no internals, and the
  connection stays usable (Starlette's last-resort handler re-raises, which makes uvicorn
  drop the keep-alive connection).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from shared.errors import AuthError, SIQError, error_body

__all__ = ["Guard", "BodyBound", "token_problem", "OPEN_PATHS", "PROTECTED_READ_PATHS"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class BodyBound:
    """How large a request body may be and how long it may take to arrive, and the
    settings that say so (named in the 413 and 408 answers)."""

    max_bytes: int
    timeout_s: float
    size_setting: str
    timeout_setting: str = "SIQ_BODY_TIMEOUT_S"

    def too_large(self) -> str:
        return f"the request body is over the {self.max_bytes}-byte limit ({self.size_setting})"


OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_problem(token: str | None, authorization: str | None) -> AuthError | None:
    """Why a request with this `Authorization` header may not pass a server whose token is
    `token` (None: it may). 401 without credentials, 403 with the wrong ones."""
    if token is None:
        return None
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return AuthError("this server needs 'Authorization: Bearer <SIQ_API_TOKEN>'", 401)
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return AuthError("the bearer token is not this server's SIQ_API_TOKEN", 403)
    return None


# reads that SIQ_PROTECT_READS guards here because no route dependency does
PROTECTED_READ_PATHS = frozenset({"/openapi.json", "/docs", "/redoc", "/metrics"})


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        protect_reads: bool,
        max_body_bytes: int,
        body_timeout_s: float,
        large_bodies: Mapping[tuple[str, str], BodyBound] | None = None,
    ) -> None:
        """`large_bodies`: (method, path) -> the bound of a route that takes more than
        `max_body_bytes` or longer than `body_timeout_s`."""
        self.app = app
        self.token = token
        self.protect_reads = protect_reads
        self.bound = BodyBound(max_body_bytes, body_timeout_s, "SIQ_MAX_BODY_BYTES")
        self.large_bodies = dict(large_bodies or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        bound = self.large_bodies.get((scope["method"], scope["path"]), self.bound)
        refusal = self._refusal(scope, headers, bound)
        if refusal is not None:
            await _answer(send, refusal.http_status, error_body(refusal), _auth_headers(refusal))
            return
        started = refused = False
        head = scope["method"] == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:  # the guard answered already; what the app says next goes nowhere
                return
            started = started or message["type"] == "http.response.start"
            if head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        async def refuse(status: int, code: str, message: str) -> Message:
            # FastAPI turns any exception while it reads a body into a 400, so the guard
            # answers itself and tells the app the client has gone
            nonlocal refused
            if not started and not refused:
                refused = True
                await _answer(send, status, _body(status, code, message))
            return {"type": "http.disconnect"}

        try:
            await self.app(scope, self._limited(receive, refuse, bound), tracking_send)
        except Exception:
            if refused:
                return
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if not started:
                message = "internal error; the server log has the details"
                await _answer(send, 500, _body(500, "internal_error", message))

    def _refusal(self, scope: Scope, headers: dict[str, str], bound: BodyBound) -> SIQError | None:
        path, method = scope["path"], scope["method"]
        if path not in OPEN_PATHS:
            needs_token = method not in _READ_METHODS or (
                self.protect_reads and path in PROTECTED_READ_PATHS
            )
            if needs_token and (problem := token_problem(self.token, headers.get("authorization"))):
                return problem
        length = headers.get("content-length")
        if (
            length is not None
            and length.isascii()
            and length.isdigit()
            and int(length) > bound.max_bytes
        ):
            err = SIQError(bound.too_large())
            err.code, err.http_status = "body_too_large", 413
            return err
        return None

    def _limited(
        self,
        receive: Receive,
        refuse: Callable[[int, str, str], Awaitable[Message]],
        bound: BodyBound,
    ) -> Receive:
        received, complete = 0, False
        deadline = asyncio.get_running_loop().time() + bound.timeout_s  # the whole body's

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # later calls wait for a disconnect: no deadline on those
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                late = (
                    f"the request body did not arrive within {bound.timeout_s:g} s "
                    f"({bound.timeout_setting}, for the whole body; {received} bytes came)"
                )
                return await refuse(408, "body_timeout", late)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > bound.max_bytes:
                    return await refuse(413, "body_too_large", bound.too_large())
                complete = not message.get("more_body", False)
            return message

        return limited_receive


def _body(status: int, code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "field": None}}


def _auth_headers(err: SIQError) -> list[tuple[bytes, bytes]]:
    return [(b"www-authenticate", b"Bearer")] if err.http_status == 401 else []


async def _answer(
    send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *(headers or []),
    ]
    if status in (408, 413):  # the rest of the body is not read: don't reuse the connection
        all_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": payload})
