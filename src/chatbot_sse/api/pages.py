"""`GET /` and `GET /static/{name}`: the web chat page, served from the package's `web/` files.

One router holds both, so including it is all an app has to do. The files are few and
small: each is read once (in a worker thread, by FastAPI's threadpool for sync routes) and
kept with a content hash used as a strong ETag, so browsers revalidate cheaply. Only names
found in `web/` with a known type are served; a path can never leave that folder.

The page's Content-Security-Policy allows only same-origin scripts, styles and fetches, and
no inline script at all: the page is written so that user or model text is never HTML.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter(include_in_schema=False)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


@functools.cache
def _web_files() -> dict[str, StaticFile]:
    """Every servable file of `chatbot_sse/web`, by name, read once per process."""
    files: dict[str, StaticFile] = {}
    for entry in (resources.files("chatbot_sse") / "web").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in MEDIA_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[entry.name] = StaticFile(body, MEDIA_TYPES[suffix], etag)
    return files


def _serve(request: Request, name: str, extra: dict[str, str]) -> Response:
    found = _web_files().get(name)
    if found is None:
        return Response(
            b'{"error": {"code": "not_found", "message": "No such file."}}',
            status_code=404,
            media_type="application/json",
        )
    headers = {
        **SECURITY_HEADERS,
        **extra,
        "ETag": found.etag,
        # Revalidate every time: a deploy must never leave a browser on old scripts.
        "Cache-Control": "no-cache",
    }
    if found.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


@router.get("/")
def index(request: Request) -> Response:
    """The chat page, with the CSP that keeps user and model text from ever running."""
    return _serve(request, "index.html", {"Content-Security-Policy": CONTENT_SECURITY_POLICY})


@router.get("/static/{name}")
def static(request: Request, name: str) -> Response:
    """A file of the page: scripts, the stylesheet, the icon (the page itself only at `/`)."""
    return _serve(request, "" if name == "index.html" else name, {})
