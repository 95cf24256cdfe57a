"""scripts/webapp.py, what deploy.py publishes of web/: content types (the page is served with
nosniff, so a wrong one breaks it), cache policy, which files go, config.json, the origins the CSP
is narrowed to, the order of uploads and the invalidation. Against a recording stand-in for the S3
and CloudFront clients; the round trip on moto's server is tests/integration/test_deploy_web.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pai_core.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import webapp


class RecordingS3:
    def __init__(self, existing: list[str]) -> None:
        self.objects: dict[str, dict[str, Any]] = {key: {} for key in existing}
        self.order: list[str] = []
        self.deleted: list[str] = []

    def upload_file(self, filename: str, bucket: str, key: str, ExtraArgs: dict[str, str]) -> None:
        self.objects[key] = {"body": Path(filename).read_bytes(), **ExtraArgs}
        self.order.append(key)

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str, CacheControl: str) -> None:
        self.objects[Key] = {"body": Body, "ContentType": ContentType, "CacheControl": CacheControl}
        self.order.append(Key)

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        keys = list(self.objects)

        class Pages:
            def paginate(self, *, Bucket: str) -> list[dict[str, Any]]:
                return [{"Contents": [{"Key": key} for key in keys]}]

        return Pages()

    def delete_objects(self, *, Bucket: str, Delete: dict[str, Any]) -> None:
        for item in Delete["Objects"]:
            self.deleted.append(item["Key"])
            del self.objects[item["Key"]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("lib/markdown.mjs", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("config.json", "application/json; charset=utf-8"),
        ("icons/pai.svg", "image/svg+xml; charset=utf-8"),
        ("favicon.ico", "image/x-icon"),
        ("shot.PNG", "image/png"),
        ("manifest.webmanifest", "application/manifest+json; charset=utf-8"),
        ("unknown.bin", "application/octet-stream"),
    ],
)
def test_content_types(name: str, expected: str) -> None:
    assert webapp.content_type(name) == expected


def test_entry_points_are_revalidated_and_assets_kept_briefly() -> None:
    assert webapp.cache_control("index.html") == "no-cache"
    assert webapp.cache_control("config.json") == "no-cache"
    assert webapp.cache_control("app.js") == webapp.cache_control("app.css") == "public, max-age=300"


def test_which_files_are_the_page(tmp_path: Path) -> None:
    for name in (
        "index.html",
        "app.js",
        "css/app.css",
        "config.json",
        "csp.json",
        "build.py",
        "README.md",
        ".env",
        "x/.git/y",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert [f.key for f in webapp.web_files(tmp_path)] == ["app.js", "css/app.css", "index.html"]
    assert webapp.web_files(tmp_path / "missing") == []


def test_config_names_the_api_and_the_stream() -> None:
    api = "https://abc123.execute-api.eu-west-1.amazonaws.com"
    assert webapp.config_document({"ApiUrl": api}) == {"apiUrl": api, "chatStreamUrl": None}
    stream = "https://xyz.lambda-url.eu-west-1.on.aws/"  # a Function URL ends with "/"
    assert webapp.config_document({"ApiUrl": api, "ChatStreamUrl": stream}) == {
        "apiUrl": api,
        "chatStreamUrl": "https://xyz.lambda-url.eu-west-1.on.aws",
    }


def test_connect_origins_come_from_the_outputs_and_only_well_formed_ones() -> None:
    outputs = {
        "ApiUrl": "https://abc123.execute-api.eu-west-1.amazonaws.com",
        "ChatStreamUrl": "https://xyz.lambda-url.eu-west-1.on.aws/",
        "WebAppUrl": "https://d111.cloudfront.net",
    }
    assert (
        webapp.connect_origins(outputs)
        == "https://abc123.execute-api.eu-west-1.amazonaws.com https://xyz.lambda-url.eu-west-1.on.aws"
    )
    # moto leaves the API's id unresolved; an emulator's plain-HTTP or odd URL is no CSP source either.
    assert webapp.connect_origins({"ApiUrl": "https://${HttpApi}.execute-api.us-east-1.amazonaws.com"}) == ""
    assert webapp.connect_origins({"ApiUrl": "http://127.0.0.1:4566"}) == ""
    assert webapp.connect_origins({}) == ""


def test_publish_uploads_every_file_then_the_html_and_removes_the_rest(tmp_path: Path) -> None:
    for name in ("index.html", "app.js", "app.css"):
        (tmp_path / name).write_text(name)
    s3 = RecordingS3(existing=["old.js", "app.js", "config.json"])
    config = {"apiUrl": "https://abc123.execute-api.eu-west-1.amazonaws.com", "chatStreamUrl": None}
    removed = webapp.publish(s3, "pai-web-1-dev", webapp.web_files(tmp_path), config)
    assert removed == 1 and s3.deleted == ["old.js"]
    assert s3.order.index("index.html") > max(s3.order.index("app.js"), s3.order.index("app.css"))
    assert json.loads(s3.objects["config.json"]["body"]) == config
    assert {key: (o["ContentType"], o["CacheControl"]) for key, o in s3.objects.items()} == {
        "index.html": ("text/html; charset=utf-8", "no-cache"),
        "app.js": ("text/javascript; charset=utf-8", "public, max-age=300"),
        "app.css": ("text/css; charset=utf-8", "public, max-age=300"),
        "config.json": ("application/json; charset=utf-8", "no-cache"),
    }


def test_invalidation_covers_every_path() -> None:
    calls: list[dict[str, Any]] = []

    class CloudFront:
        def create_invalidation(self, **request: Any) -> dict[str, Any]:
            calls.append(request)
            return {"Invalidation": {"Id": "I2J0I21PCUYOIK"}}

    assert webapp.invalidate(CloudFront(), "E2QWRUHEXAMPLE") == "I2J0I21PCUYOIK"
    (call,) = calls
    assert call["DistributionId"] == "E2QWRUHEXAMPLE"
    assert call["InvalidationBatch"]["Paths"] == {"Quantity": 1, "Items": ["/*"]}
