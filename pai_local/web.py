"""The web app (web/) as the local gateway serves it beside the API: its static files, a generated
`config.json` telling the page where the API is, and on every answer the security headers a
deployment's CDN adds (the Content-Security-Policy comes from web/csp.json, the one definition).

Only GET and HEAD of files under web/ with a known type are answered here; anything else (API
routes, missing files, paths that try to leave web/) is left to the gateway, whose own answer is a
JSON 404 or 405.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pai_core.config import REPO_ROOT

WEB_ROOT = REPO_ROOT / "web"
CSP_FILE = WEB_ROOT / "csp.json"
CONFIG_PATH = "/config.json"

# What is served, by suffix: anything else under web/ (csp.json, notes) is not part of the page.
CONTENT_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def content_security_policy(connect_origins: Iterable[str] = (), *, csp_file: Path = CSP_FILE) -> str:
    """The policy of web/csp.json as a header value, with `connect_origins` (the API's or the chat
    stream's origin when the page is served from elsewhere) added to connect-src."""
    directives: dict[str, list[str]] = json.loads(csp_file.read_text(encoding="utf-8"))["directives"]
    extra = [origin for origin in dict.fromkeys(connect_origins) if origin not in directives["connect-src"]]
    directives = {**directives, "connect-src": [*directives["connect-src"], *extra]}
    return "; ".join(" ".join([name, *sources]) for name, sources in directives.items())


def security_headers(policy: str) -> list[tuple[str, str]]:
    return [
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ]


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL; None for "" (the page's own origin)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class WebReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class WebApp:
    """`api_url`: the API's base URL as the page should use it ("" = the page's own origin).
    `chat_stream_url`: where streamed chat goes instead (`{chat_stream_url}/chat`), or None."""

    def __init__(self, root: Path = WEB_ROOT, *, api_url: str = "", chat_stream_url: str | None = None) -> None:
        self._root = root.resolve()
        self._api_url = api_url
        self.use_chat_stream_url(chat_stream_url)

    def use_chat_stream_url(self, chat_stream_url: str | None) -> None:
        """Points streamed chat (config.json and the CSP's connect-src) at `chat_stream_url`: the
        Function URL starts after the gateway, whose origin its CORS names."""
        origins = [origin_of(self._api_url), origin_of(chat_stream_url or "")]
        self.policy = content_security_policy(
            [origin for origin in origins if origin is not None], csp_file=self._root / CSP_FILE.name
        )
        self.config = {
            "apiUrl": self._api_url.rstrip("/"),
            "chatStreamUrl": chat_stream_url.rstrip("/") if chat_stream_url else None,
        }

    def answer(self, method: str, path: str) -> WebReply | None:
        """The answer to GET or HEAD of `path` (the URL's path, still percent-encoded), or None when
        it is not the web app's to answer."""
        if method not in ("GET", "HEAD"):
            return None
        if path == CONFIG_PATH:
            body = json.dumps(self.config).encode("utf-8")
            return self._reply("application/json", body, cache="no-store")
        file = self._file(path)
        if file is None:
            return None
        return self._reply(CONTENT_TYPES[file.suffix], file.read_bytes(), cache="no-cache")

    def _file(self, path: str) -> Path | None:
        if path == "/":
            path = "/index.html"
        try:
            decoded = unquote(path, errors="strict")
        except UnicodeDecodeError:
            return None
        if not decoded.startswith("/") or "\\" in decoded or "\x00" in decoded:
            return None
        segments = decoded[1:].split("/")
        # No empty, dot or hidden segments: nothing outside web/ and nothing it keeps to itself.
        if any(not segment or segment.startswith(".") for segment in segments):
            return None
        file = self._root.joinpath(*segments).resolve()
        if not file.is_relative_to(self._root) or file.suffix not in CONTENT_TYPES or not file.is_file():
            return None
        return file

    def _reply(self, content_type: str, body: bytes, *, cache: str) -> WebReply:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
            *security_headers(self.policy),
        ]
        return WebReply(200, headers, body)
