"""Named profiles (`pai configure`): an API URL and key for each stack a person talks to, say the
local one and a deployment, in one file readable by its owner only.

The file is JSON: `{"default": "local", "profiles": {"local": {"url": ..., "apiKey": ..., "streamUrl": ...}}}`
(`streamUrl`, optional: where streamed chats go, a deployment's ChatStreamUrl), at
PAI_CONFIG, else $XDG_CONFIG_HOME/pai/config.json, else ~/.config/pai/config.json.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ConfigError(ValueError):
    """A config file or profile that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Profile:
    url: str
    api_key: str | None = field(repr=False)
    stream_url: str | None = None


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get("PAI_CONFIG"):
        return Path(environ["PAI_CONFIG"]).expanduser()
    base = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "pai" / "config.json"


def load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"default": None, "profiles": {}}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("profiles", {}), dict):
        raise ConfigError(f'{path}: expected {{"default": ..., "profiles": {{...}}}}')
    data.setdefault("profiles", {})
    data.setdefault("default", None)
    return data


def profile(data: dict[str, Any], name: str, path: Path) -> Profile:
    entry = data["profiles"].get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        known = ", ".join(sorted(data["profiles"])) or "none yet: run `pai configure`"
        raise ConfigError(f"no profile {name!r} in {path} (profiles: {known})")
    key = entry.get("apiKey")
    stream = entry.get("streamUrl")
    return Profile(
        url=entry["url"].rstrip("/"),
        api_key=key if isinstance(key, str) and key else None,
        stream_url=stream.rstrip("/") if isinstance(stream, str) and stream else None,
    )


def save(path: Path, data: dict[str, Any]) -> None:
    """Written whole to a new file created 0600 (in a 0700 directory), then moved into place, so the
    key is never readable by others, not even for a moment."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
    os.chmod(partial, 0o600)  # O_CREAT's mode does not apply to a file that was already there
    os.replace(partial, path)


def key_id(key: str | None) -> str:
    """What may be shown of a key: PAI keys read `pai_<key id>_<secret>`, and the id is what
    `make keys list` shows; anything else shows as set or not."""
    if not key:
        return "no key"
    parts = key.split("_")
    return f"key id {parts[1]}" if len(parts) >= 3 and parts[0] == "pai" else "key set"
