"""Lambda SnapStart's runtime hooks (template parameter EnableSnapStart).

With SnapStart, Lambda runs a function's init once per published version, snapshots the execution
environment's memory, and starts later environments from that snapshot. What is worth having in it
is what every cold start would otherwise redo: the imports and the loaded embedding model. What must
not be in it is anything secret or anything that has to differ per environment, so before the
snapshot this module drops the composition root (the AWS clients and their credentials, the keyring
with any unwrapped branch key, the search index with any user's memories, the chat model's client,
the keys the authorizer found good) and the stems cached per process, and after a restore it reseeds
the `random` module (every environment restored from one snapshot would otherwise draw the same
numbers) and builds a fresh composition root around the model it kept.

The managed runtime calls the hooks through `snapshot_restore_py`, which exists only inside Lambda's
Python runtime: `register()` is a no-op anywhere else. The streamed chat's function runs its own
HTTP server behind the Lambda Web Adapter instead of the runtime's client; there the adapter calls
the same two functions over HTTP (handlers/chat_stream_server.py).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from pai_core import bootstrap
from pai_core.config import Settings

log = logging.getLogger("pai.snapstart")

# The loaded embedding model (an ONNX session and a tokenizer: no secret, no user data), kept across
# the snapshot so that a restored environment does not load it again.
_kept_embedder: Any = None


def before_snapshot() -> None:
    """Loads what is worth snapshotting, then drops everything secret or per environment."""
    global _kept_embedder  # noqa: PLW0603
    container = bootstrap.get_container()
    if _kept_embedder is None and container.settings.embedding_model_dir.is_dir():
        try:
            _kept_embedder = container.embedder
        except Exception as exc:  # the first request will say what is wrong, as without SnapStart
            log.warning("embedding model not loaded before the snapshot (%s)", type(exc).__name__)
    keyring = container.__dict__.get("keyring")  # functools.cached_property's storage: only if built
    if keyring is not None:
        keyring.drop_all_cached()
    bootstrap.set_container(None)
    from pai_core.search.lexical import _stem

    _stem.cache_clear()  # stems of words users wrote


def after_restore(*, build: Callable[[], bootstrap.Container] | None = None) -> None:
    """Fresh randomness and a fresh composition root (new clients, new credentials), with the model
    kept. `build` makes the root (default: from the environment, as at a cold start)."""
    random.seed()  # from os.urandom: each restored environment draws its own numbers
    container = build() if build is not None else bootstrap.Container(Settings.from_env())
    if _kept_embedder is not None:
        container.__dict__["embedder"] = _kept_embedder
    bootstrap.set_container(container)


def register() -> bool:
    """Registers the hooks with Lambda's Python runtime; False (and nothing done) outside it."""
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found]
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
