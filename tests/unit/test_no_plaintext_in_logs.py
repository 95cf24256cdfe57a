"""Nothing the user stored or said may reach a log line, on success or on any error path."""

from __future__ import annotations

import json
import logging

import pytest

import handlers.chat
import handlers.memory
from pai_core.errors import UpstreamUnavailable
from tests.fakes import FakeContainer, FakeLambdaContext
from tests.unit.test_chat_stream import event

SECRET = "Zq-secret-7781 my bank PIN"


def call(module: object, route: str, body: dict[str, object]) -> int:
    request = event(body)
    request["routeKey"] = f"POST {route}"
    request["rawPath"] = route
    request["requestContext"]["http"]["path"] = route  # type: ignore[index]
    return int(module.handler(request, FakeLambdaContext())["statusCode"])  # type: ignore[attr-defined]


def test_no_plaintext_in_logs_on_any_path(
    fake_container: FakeContainer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert call(handlers.memory, "/memory", {"action": "store", "content": SECRET, "metadata": {"pin": SECRET}}) == 201
    assert call(handlers.chat, "/chat", {"message": SECRET}) == 200
    fake_container.embedder.fail_with = RuntimeError("embedding failed")
    assert call(handlers.memory, "/memory", {"action": "store", "content": SECRET}) == 500
    fake_container.embedder.fail_with = None
    fake_container.memory_repository.fail_with = UpstreamUnavailable("DynamoDB is unavailable")
    assert call(handlers.memory, "/memory", {"action": "store", "content": SECRET}) == 503
    fake_container.chat_model.fail_with = UpstreamUnavailable("model down")
    assert call(handlers.chat, "/chat", {"message": SECRET}) == 503

    captured = capsys.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "unhandled error" in logged  # the 500 was logged, with its traceback
    assert "Zq-secret-7781" not in logged
    assert json.dumps(SECRET)[1:-1] not in logged
