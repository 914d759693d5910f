"""What stands between the network and the model: the API key, a per-client rate limit, a body size limit.

The key is checked on every route, the page and the API docs included, as ``Authorization: Bearer KEY``
or ``X-API-Key: KEY``, or, for a browser, as the session cookie that ``POST /login`` sets after
checking the key once (HttpOnly, SameSite=Strict, so another site cannot submit jobs with it).
The cookie holds an HMAC of the key, not the key.
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
        else:
            body = json.dumps({"error": {
                "message": "this server needs its API key: send 'Authorization: Bearer KEY' (or X-API-Key)",
                "type": "authentication_error", "param": None, "code": 401}}).encode()
            headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        await send({"type": "http.response.start", "status": 401,
                    "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


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


__all__ = ["ApiKeyMiddleware", "BodyLimitMiddleware", "BodyTooLarge", "RateLimiter", "COOKIE", "LOGIN_PAGE",
           "is_loopback", "session_token"]
