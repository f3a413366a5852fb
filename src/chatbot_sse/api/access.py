"""Who is asking, and may they: API keys and the per-client rate limit, as pure ASGI.

With `API_KEYS` set, every request but the public ones (`PUBLIC_PATHS`, the
page's `/static/` files; CORS preflights never get this far) must carry one
of the keys, as `Authorization: Bearer <key>` or `X-API-Key: <key>`, else it
gets 401 with `WWW-Authenticate` (in OpenAI's error shape under `/v1/`). Keys
are compared as SHA-256 digests with `hmac.compare_digest`, against every
configured key whatever matched, so timing tells nothing about any of them;
neither the keys nor their digests are ever logged.

A request's *owner* is a truncated SHA-256 of its key: conversations store it
and only that owner finds them (`request_owner`). Without keys there is no
owner (None): the unguessable conversation id is the capability.

The rate limit (`RATE_LIMIT_PER_MINUTE`) counts requests per client, the owner
or, without keys, the client's IP (`client_identity`; behind a proxy, let
uvicorn/gunicorn trust its `X-Forwarded-For` with `FORWARDED_ALLOW_IPS`), in
one-minute windows kept in the store, so every worker and instance shares
them. `/metrics` needs a key like the API but is not rate limited. If the store
cannot count, the request goes through (it fails on its own if it needs the
store): a limiter must not turn a store hiccup into an outage.

Pure ASGI, like every middleware here: it answers before the app or passes
`receive` and `send` through untouched, so streams are unaffected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from chatbot_sse.api.errors import chat_error_response
from chatbot_sse.errors import ChatError, RateLimited, StoreUnavailable, Unauthorized
from chatbot_sse.observability.logging import get_logger
from chatbot_sse.observability.metrics import Metrics

log = get_logger(__name__)

PUBLIC_PATHS = frozenset({"/", "/health"})
PUBLIC_PREFIXES = ("/static/",)
UNLIMITED_PATHS = PUBLIC_PATHS | {"/metrics"}
RATE_WINDOW_SECONDS = 60.0


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def owner_of(digest: bytes) -> str:
    """The owner id stored with conversations: 128 bits of the key's SHA-256, in hex."""
    return digest[:16].hex()


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries: `Authorization: Bearer …` first, else `X-API-Key`."""
    api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.strip()
    return api_key


class ApiKeys:
    """The configured keys, held only as digests."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(key.encode()) for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def owner(self, presented: bytes) -> str | None:
        """The owner id if `presented` is a configured key, else None; constant time."""
        digest = _digest(presented)
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, digest)
        return owner_of(digest) if found else None


def request_owner(connection: HTTPConnection) -> str | None:
    """The owner of this request (None when the server has no API keys)."""
    owner: str | None = connection.scope.get("state", {}).get("owner")
    return owner


def client_identity(connection: HTTPConnection) -> str:
    """Whom limits count against: the owner, else the client's IP."""
    state = connection.scope.get("state", {})
    identity: str | None = state.get("client")
    if identity is None:
        identity = _identity(connection.scope, state.get("owner"))
    return identity


def _identity(scope: Scope, owner: str | None) -> str:
    if owner is not None:
        return f"key:{owner}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class AccessMiddleware:
    def __init__(self, app: ASGIApp, keys: ApiKeys, rate_limit: int, metrics: Metrics) -> None:
        self.app = app
        self.keys = keys
        self.rate_limit = rate_limit  # requests per minute per client; 0: none
        self.metrics = metrics

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The inner app's own awaitable when nothing is left to wait for: no frame of this
        middleware stays in the chain of coroutines a streaming response resumes at every
        wake-up. Only a request counted against a rate limit (the store is asked) or
        rejected goes through `_check`."""
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        path: str = scope["path"]
        if is_public(path):
            return self.app(scope, receive, send)
        try:
            identity = self._admit(scope)
        except ChatError as exc:
            return self._reject(exc, path, scope, receive, send)
        if self.rate_limit and path not in UNLIMITED_PATHS:
            return self._check(identity, path, scope, receive, send)
        return self.app(scope, receive, send)

    def _admit(self, scope: Scope) -> str:
        """Who is asking (their key's owner, else their address), into the scope's state;
        `Unauthorized` without a valid key where keys are required."""
        owner = None
        if self.keys.enabled:
            presented = presented_key(scope["headers"])
            owner = None if presented is None else self.keys.owner(presented)
            if owner is None:
                reason = "an API key is required" if presented is None else "invalid API key"
                raise Unauthorized(reason, key_given=presented is not None)
        identity = _identity(scope, owner)
        state = scope.setdefault("state", {})
        state["owner"] = owner
        state["client"] = identity
        return identity

    async def _check(
        self, identity: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        rejected: ChatError | None = None
        try:
            await self._count(scope, identity)
        except ChatError as exc:
            rejected = exc
        if rejected is not None:
            # Answered after the handler, not in it: compiled (mypyc), a coroutine suspended
            # in an `except` block leaves its exception current for other tasks.
            try:
                await self._reject(rejected, path, scope, receive, send)
            finally:  # a frame holding its own traceback would be a cycle
                rejected = None
            return
        await self.app(scope, receive, send)

    async def _reject(
        self, exc: ChatError, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.metrics.rejected(exc.code)
        log.info("request_rejected", reason=exc.code, path=path)
        response = chat_error_response(exc, openai=path.startswith("/v1/"))
        await response(scope, receive, send)

    async def _count(self, scope: Scope, identity: str) -> None:
        store = scope["app"].state.store
        try:
            allowed, retry_after = await store.hit(identity, RATE_WINDOW_SECONDS, self.rate_limit)
        except StoreUnavailable:
            log.warning("rate_limit_unavailable", exc_info=True)
            return
        if not allowed:
            raise RateLimited(
                f"more than {self.rate_limit} requests per minute; retry later",
                retry_after=retry_after,
            )
