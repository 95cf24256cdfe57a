"""The web app's files as the local gateway serves them (pai_local.web), without sockets: the
Content-Security-Policy and the other security headers, content types, config.json, paths that
try to leave web/, and API routes winning over files. Plus static checks of web/ itself."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from pai_local.functions import InlineFunctions
from pai_local.gateway import AuthorizerCache, GatewayApp, RouteTable
from pai_local.template import Route
from pai_local.web import CSP_FILE, WEB_ROOT, WebApp, content_security_policy, origin_of

PINNED_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name.lower()), None)


# -- the policy --------------------------------------------------------------------------------------


def test_the_policy_is_the_one_in_web_csp_json() -> None:
    assert content_security_policy() == PINNED_POLICY
    assert WebApp().policy == PINNED_POLICY
    assert json.loads(CSP_FILE.read_text())["directives"]["script-src"] == ["'self'"]


def test_other_origins_are_added_to_connect_src_only() -> None:
    policy = content_security_policy(["https://stream.example", "https://api.example", "https://stream.example"])
    assert "connect-src 'self' https://stream.example https://api.example;" in policy
    assert policy.replace(" https://stream.example https://api.example", "") == PINNED_POLICY


def test_a_chat_stream_url_reaches_config_and_policy() -> None:
    web = WebApp(chat_stream_url="https://abc123.lambda-url.eu-west-1.on.aws/")
    assert web.config == {"apiUrl": "", "chatStreamUrl": "https://abc123.lambda-url.eu-west-1.on.aws"}
    assert "connect-src 'self' https://abc123.lambda-url.eu-west-1.on.aws;" in web.policy


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x.example", "/relative", "https://"])
def test_only_absolute_http_urls_are_origins(url: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        origin_of(url)


# -- files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "file", "content_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/index.html", "index.html", "text/html; charset=utf-8"),
        ("/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "app.css", "text/css; charset=utf-8"),
        ("/js/markdown.js", "js/markdown.js", "text/javascript; charset=utf-8"),
        ("/favicon.svg", "favicon.svg", "image/svg+xml"),
    ],
)
def test_files_are_served_with_their_type_and_the_security_headers(path: str, file: str, content_type: str) -> None:
    reply = WebApp().answer("GET", path)
    assert reply is not None
    body = (WEB_ROOT / file).read_bytes()
    assert (reply.status, reply.body) == (200, body)
    assert header(reply.headers, "Content-Type") == content_type
    assert header(reply.headers, "Content-Length") == str(len(body))
    assert header(reply.headers, "Content-Security-Policy") == PINNED_POLICY
    assert header(reply.headers, "X-Content-Type-Options") == "nosniff"
    assert header(reply.headers, "Referrer-Policy") == "no-referrer"


def test_config_json_is_generated() -> None:
    reply = WebApp().answer("GET", "/config.json")
    assert reply is not None
    assert json.loads(reply.body) == {"apiUrl": "", "chatStreamUrl": None}
    assert header(reply.headers, "Content-Type") == "application/json"
    assert header(reply.headers, "Cache-Control") == "no-store"
    assert header(reply.headers, "Content-Security-Policy") == PINNED_POLICY


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/js/../../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/js/%2e%2e/%2e%2e/pyproject.toml",
        "/..%2fpyproject.toml",
        "/js%5c..%5c..%5cpyproject.toml",
        "//etc/passwd",
        "/js//markdown.js",
        "/./index.html",
        "/csp.json",  # under web/, but not a part of the page
        "/js",
        "/nothing.js",
        "/index.html%00.js",
        "/%ff.js",
        "/.git/config",
    ],
)
def test_nothing_outside_the_page_is_served(path: str) -> None:
    assert WebApp().answer("GET", path) is None


def test_a_link_out_of_the_web_root_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "web"
    root.mkdir()
    (root / "csp.json").write_text(CSP_FILE.read_text())
    (tmp_path / "secret.js").write_text("secret")
    (root / "inside.js").symlink_to(tmp_path / "secret.js")
    (root / "page.js").write_text("ok")
    web = WebApp(root)
    assert web.answer("GET", "/inside.js") is None
    assert web.answer("GET", "/page.js") is not None


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_only_get_and_head_are_answered(method: str) -> None:
    assert WebApp().answer(method, "/") is None


# -- through the gateway -----------------------------------------------------------------------------

ROUTES = [Route("POST", "/memory", "handlers.memory.handler"), Route("GET", "/health", "handlers.memory.handler")]


def through_gateway(method: str, path: str) -> tuple[str, dict[str, str], bytes]:
    app = GatewayApp(RouteTable(ROUTES), InlineFunctions(), AuthorizerCache(), web=WebApp())
    environ: dict[str, Any] = EnvironBuilder(path=path, method=method).get_environ()
    environ["pai.target"] = path
    environ["pai.headers"] = []
    environ["pai.content_lengths"] = []
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        answer.update(status=status, headers=dict(headers))

    body = b"".join(app(environ, start_response))  # type: ignore[arg-type]
    return answer["status"], answer["headers"], body


def test_the_gateway_serves_the_page_at_the_root() -> None:
    status, headers, body = through_gateway("GET", "/")
    assert status == "200 OK"
    assert body == (WEB_ROOT / "index.html").read_bytes()
    assert headers["Content-Security-Policy"] == PINNED_POLICY


def test_head_has_the_headers_and_no_body() -> None:
    status, headers, body = through_gateway("HEAD", "/app.js")
    assert (status, body) == ("200 OK", b"")
    assert headers["Content-Length"] == str(len((WEB_ROOT / "app.js").read_bytes()))
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/memory", "405 Method Not Allowed", "method_not_allowed"),  # an API route wins over any file
        ("GET", "/missing.js", "404 Not Found", "route_not_found"),
        ("GET", "/../pyproject.toml", "404 Not Found", "route_not_found"),
        ("POST", "/", "404 Not Found", "route_not_found"),
    ],
)
def test_what_the_page_does_not_answer_is_the_gateways_json(method: str, path: str, status: str, code: str) -> None:
    answered, headers, body = through_gateway(method, path)
    assert answered == status
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == code


# -- web/ itself -------------------------------------------------------------------------------------


def web_files(suffix: str) -> list[Path]:
    return sorted(WEB_ROOT.rglob(f"*{suffix}"))


def test_every_file_the_page_loads_is_there() -> None:
    index = (WEB_ROOT / "index.html").read_text()
    referenced = re.findall(r'(?:src|href)="([^"#][^"]*)"', index)
    assert set(referenced) >= {"app.js", "app.css", "favicon.svg"}
    for name in referenced:
        assert (WEB_ROOT / name).is_file(), name
    for script in web_files(".js"):
        for imported in re.findall(r'from "(\./[^"]+)"', script.read_text()):
            assert (script.parent / imported).resolve().is_file(), (script, imported)


def test_the_page_uses_no_other_origin_and_no_inline_code() -> None:
    index = (WEB_ROOT / "index.html").read_text()
    assert "<script>" not in index  # every script is a file ('self'); an inline one would be refused
    assert "style=" not in index
    assert not re.search(r"\son[a-z]+=", index)
    for file in [WEB_ROOT / "index.html", *web_files(".css")]:
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", file.read_text()), file


@pytest.mark.parametrize("script", web_files(".js"), ids=lambda path: str(path.relative_to(WEB_ROOT)))
def test_no_script_turns_text_into_html(script: Path) -> None:
    """Text reaches the DOM as text nodes only (web/js/dom.js, web/js/markdown.js)."""
    source = script.read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "DOMParser",
    ):
        assert sink not in source, (script, sink)
