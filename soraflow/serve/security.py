"""What stands between the network and the model: the API key, a per-client rate limit, a body size limit,
and a same-origin check.

The key is checked on every route, the page and the API docs included, as ``Authorization: Bearer KEY``
or ``X-API-Key: KEY``, or, for a browser, as the session cookie that ``POST /login`` sets after
checking the key once (HttpOnly, SameSite=Strict, so another site cannot submit jobs with it).
The cookie holds an HMAC of the key, not the key.

A server on 127.0.0.1 without a key is still reachable from any web page its user opens: a page on
another site can make the browser POST a multipart form (no CORS preflight), and a DNS name rebound to
127.0.0.1 makes it same-origin. So a request that changes something must not come from another origin,
and a server bound to loopback answers only to loopback host names.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ApiError

COOKIE = "soraflow_session"
OPEN_PATHS = frozenset({"/login"})  # checks the key itself
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def session_token(api_key: str) -> str:
    return hmac.new(api_key.encode(), b"soraflow serve session", hashlib.sha256).hexdigest()


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _cookie(scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    for part in (raw or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _refuse(send, status: int, message: str, type: str, headers: list | None = None) -> None:
    """An error answer in the API's JSON shape, from a middleware (outside FastAPI's handlers)."""
    body = json.dumps({"error": {"message": message, "type": type, "param": None, "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>soraflow: API key</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}
input{font-size:1rem;padding:.4rem;width:100%%;box-sizing:border-box;margin:.5rem 0}</style></head>
<body><h1>soraflow</h1><p>This server needs its API key.%s</p>
<form method="post" action="/login"><input type="password" name="api_key" placeholder="API key" autofocus>
<input type="submit" value="Sign in"></form></body></html>"""


class ApiKeyMiddleware:
    """Refuses every request without the key (401, JSON; the page gets a sign-in form)."""

    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key
        self.token = session_token(api_key) if api_key else None

    def authorized(self, scope) -> bool:
        auth = _header(scope, b"authorization") or ""
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else _header(scope, b"x-api-key")
        if given is not None and hmac.compare_digest(given.encode(), self.api_key.encode()):
            return True
        cookie = _cookie(scope, COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.api_key is None or scope["path"] in OPEN_PATHS or self.authorized(scope):
            return await self.app(scope, receive, send)
        if scope["path"] == "/" and "text/html" in (_header(scope, b"accept") or ""):
            body = (LOGIN_PAGE % "").encode()
            headers = [(b"content-type", b"text/html; charset=utf-8")]
            await send({"type": "http.response.start", "status": 401,
                        "headers": headers + [(b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})
        await _refuse(send, 401, "this server needs its API key: send 'Authorization: Bearer KEY' (or X-API-Key)",
                      "authentication_error", [(b"www-authenticate", b"Bearer")])


class SameOriginMiddleware:
    """403 for a state-changing request from another origin (CSRF) and, when bound to loopback, for a
    Host header that is not a loopback name (DNS rebinding). Clients that are not browsers send no Origin."""

    def __init__(self, app, loopback_only: bool):
        self.app, self.loopback_only = app, loopback_only

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = _header(scope, b"host") or ""
        if self.loopback_only and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return await _refuse(send, 403, f"this server answers to localhost only, not to host {host!r}",
                                 "permission_error")
        origin = _header(scope, b"origin")
        if scope["method"] not in SAFE_METHODS and origin is not None and urlsplit(origin).netloc != host:
            return await _refuse(send, 403, f"cross-site request from {origin!r} refused", "permission_error")
        await self.app(scope, receive, send)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int, what: str):
        super().__init__(413, f"the request body is over the limit of {limit / 2**20:.3g} MiB ({what})")


class BodyLimitMiddleware:
    """Refuses a body over its route's limit: by Content-Length up front, or while it streams in.
    ``limit_for(method, path) -> (bytes, what the limit is made of)``."""

    def __init__(self, app, limit_for):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, what = self.limit_for(scope["method"], scope["path"])
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await BodyTooLarge(limit, what).response()(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, what)
            return message

        await self.app(scope, limited, send)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests a minute, bursts of up to ``per_minute``.
    ``per_minute`` 0 turns it off."""

    def __init__(self, per_minute: float, *, clock=time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self.buckets: dict[str, _Bucket] = {}
        self.lock = threading.Lock()

    def take(self, client: str, what: str = "requests") -> None:
        """Spend one token of ``client``'s bucket, or raise a 429 with Retry-After."""
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        with self.lock:
            now = self.clock()
            bucket = self.buckets.setdefault(client, _Bucket(self.per_minute, now))
            bucket.tokens = min(self.per_minute, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = math.ceil((1.0 - bucket.tokens) / rate)
            if len(self.buckets) > 10_000:  # forget clients whose buckets are full again
                self.buckets = {k: b for k, b in self.buckets.items()
                                if b.tokens + (now - b.updated) * rate < self.per_minute}
        raise ApiError(429, f"too many {what} from this client (limit {self.per_minute:g} a minute); "
                            f"retry in {wait} s", "rate_limit_error", headers={"Retry-After": str(wait)})


__all__ = ["ApiKeyMiddleware", "SameOriginMiddleware", "BodyLimitMiddleware", "BodyTooLarge", "RateLimiter", "COOKIE", "LOGIN_PAGE",
           "is_loopback", "session_token"]
