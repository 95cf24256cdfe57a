"""SnapStart's runtime hooks (handlers/_snapstart.py), called directly: nothing secret or per
environment survives before_snapshot; after_restore builds a fresh composition root around the
kept model and reseeds `random`."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers import _snapstart
from pai_core import bootstrap
from pai_core.bootstrap import Container, set_container
from pai_core.config import Settings
from pai_core.crypto.keyring import BranchKey
from pai_core.search.lexical import tokenize


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    built = Container(Settings(embedding_model_dir=tmp_path / "no-model"))
    set_container(built)
    yield built
    set_container(None)
    _snapstart._kept_embedder = None


def test_before_snapshot_drops_branch_keys_clients_and_the_composition_root(container: Container) -> None:
    keyring = container.keyring
    keyring._remember(BranchKey("alice", 1, bytes(32)), active=True)
    tokenize("cats were running")
    assert keyring.cached_keys() == 1

    _snapstart.before_snapshot()

    assert keyring.cached_keys() == 0
    assert bootstrap._container is None  # its clients, credentials and caches go with it
    from pai_core.search.lexical import _stem

    assert _stem.cache_info().currsize == 0


def test_before_snapshot_keeps_a_loaded_model_and_after_restore_puts_it_in_a_new_root(
    container: Container,
) -> None:
    model = object()
    _snapstart._kept_embedder = model
    _snapstart.before_snapshot()
    _snapstart.after_restore()
    restored = bootstrap.get_container()
    assert restored is not container
    assert restored.embedder is model
    assert "keyring" not in restored.__dict__ and "dynamodb" not in restored.__dict__  # built on first use


def test_after_restore_reseeds_random(container: Container) -> None:
    random.seed(1234)
    as_snapshotted = [random.random() for _ in range(4)]
    random.seed(1234)
    _snapstart.after_restore()
    assert [random.random() for _ in range(4)] != as_snapshotted


def test_outside_lambdas_runtime_registering_is_a_no_op() -> None:
    assert _snapstart.register() is False
