"""Unit tests run with no network: any attempt to open a socket fails the test."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pai_core.bootstrap import set_container
from tests.fakes import FakeContainer


class NetworkAccessInUnitTest(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise NetworkAccessInUnitTest(f"unit tests must not open sockets: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def fake_container() -> Iterator[FakeContainer]:
    """Handlers reach the domain through the composition root; this installs one built of fakes."""
    container = FakeContainer()
    set_container(container)  # type: ignore[arg-type]
    yield container
    set_container(None)
