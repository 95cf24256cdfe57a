"""Publish the web app (web/) to the stack's bucket: every file with its content type and cache
policy, config.json written from the stack's outputs, files no longer in web/ removed, and the
CloudFront cache invalidated. Used by deploy.py after the stack is up."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

CONFIG_KEY = "config.json"
# The page is a few small files without content hashes in their names: browsers revalidate the
# entry points on every load, and keep the rest for minutes, so a deploy shows within that long.
NO_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=300"
# Sent with nosniff (CloudFront's response headers policy): a script or style sheet with the wrong
# type is refused by the browser, so every type the page can use is named here.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".webmanifest": "application/manifest+json; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".svg": "image/svg+xml; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
}
# What lives beside the page in web/ but is not part of it: build and test scripts, notes, and the
# CSP's definition (web/csp.json), which reaches browsers as CloudFront's header instead.
NOT_SERVED = {".py", ".sh", ".md"}
NOT_SERVED_KEYS = {CONFIG_KEY, "csp.json"}
_ORIGIN_HOST = re.compile(r"^[a-z0-9.-]+$")


@dataclass(frozen=True)
class WebFile:
    key: str
    path: Path
    content_type: str
    cache_control: str


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def cache_control(key: str) -> str:
    return NO_CACHE if key == CONFIG_KEY or key.endswith(".html") else ASSET_CACHE


def web_files(root: Path) -> list[WebFile]:
    """Every file under root that the page serves, by its key (its path from root). A config.json
    there is the local one: deploy writes the deployment's own instead."""
    if not root.is_dir():
        return []
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        key = relative.as_posix()
        if key in NOT_SERVED_KEYS or path.suffix.lower() in NOT_SERVED:
            continue
        files.append(WebFile(key=key, path=path, content_type=content_type(key), cache_control=cache_control(key)))
    return files


def config_document(outputs: dict[str, str]) -> dict[str, str | None]:
    """What the page reads from its own origin to find the API (the contract with web/), base URLs
    without a trailing slash as the local gateway writes them (a Function URL ends with one)."""
    stream = outputs.get("ChatStreamUrl") or None
    return {"apiUrl": outputs["ApiUrl"].rstrip("/"), "chatStreamUrl": stream.rstrip("/") if stream else None}


def connect_origins(outputs: dict[str, str]) -> str:
    """The origins the page calls, for its CSP's connect-src: the API's and the streamed chat's, as
    the template's WebConnectOrigins takes them. An output that is not an https URL with a plain host
    name (an emulator's unresolved one) is left out: the template then falls back to the region's
    API Gateway and Function URL domains."""
    origins = []
    for name in ("ApiUrl", "ChatStreamUrl"):
        parts = urlsplit(outputs.get(name) or "")
        host = parts.hostname or ""
        if parts.scheme == "https" and parts.port is None and _ORIGIN_HOST.match(host):
            origins.append(f"https://{host}")
    return " ".join(dict.fromkeys(origins))


def publish(s3: Any, bucket: str, files: list[WebFile], config: dict[str, str | None]) -> int:
    """Upload the files and config.json, then remove what web/ no longer has. The HTML goes last,
    so a page that is already new never names a script that is not there yet."""
    ordered = sorted(files, key=lambda f: f.key.endswith(".html"))
    for item in ordered:
        s3.upload_file(
            str(item.path),
            bucket,
            item.key,
            ExtraArgs={"ContentType": item.content_type, "CacheControl": item.cache_control},
        )
    s3.put_object(
        Bucket=bucket,
        Key=CONFIG_KEY,
        Body=json.dumps(config, indent=2).encode("utf-8") + b"\n",
        ContentType=content_type(CONFIG_KEY),
        CacheControl=NO_CACHE,
    )
    keep = {item.key for item in files} | {CONFIG_KEY}
    stale = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
        if obj["Key"] not in keep
    ]
    for start in range(0, len(stale), 1000):
        batch = stale[start : start + 1000]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
    return len(stale)


def invalidate(cloudfront: Any, distribution_id: str) -> str:
    """Drop every cached path, so the new files are served at once (the first 1,000 paths a month
    are free; "/*" counts as one)."""
    answer = cloudfront.create_invalidation(
        DistributionId=distribution_id,
        InvalidationBatch={"Paths": {"Quantity": 1, "Items": ["/*"]}, "CallerReference": f"pai-{time.time_ns()}"},
    )
    return str(answer["Invalidation"]["Id"])


def deploy_web(target: Any, outputs: dict[str, str], root: Path) -> None:
    """Publish web/ to the stack's bucket and say where the page is; nothing when the stack has no
    web app (WebApp=false)."""
    bucket = outputs.get("WebBucketName")
    if not bucket:
        print("no web app in this stack (WebApp=false)", flush=True)
        return
    files = web_files(root)
    if not any(f.key == "index.html" for f in files):
        print(f"no {root}/index.html: only {CONFIG_KEY} is published", flush=True)
    removed = publish(target.client("s3"), bucket, files, config_document(outputs))
    print(f"published {len(files)} web files and {CONFIG_KEY} to s3://{bucket}, {removed} old ones removed", flush=True)
    distribution = outputs.get("WebDistributionId")
    if not distribution:
        print(f"no CloudFront distribution ({target.where()} makes none): nothing to invalidate", flush=True)
        return
    try:
        print(f"invalidating CloudFront {distribution} /*: {invalidate(target.client('cloudfront'), distribution)}")
    except (ClientError, BotoCoreError) as exc:
        if not target.emulated:
            raise
        print(f"{target.where()} has no CloudFront ({exc}): nothing to invalidate", flush=True)
