"""How the local gateway runs functions, without sockets or processes: the template's functions and
their timeouts, and the messages an inline invocation produces."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from pai_local.functions import (
    Failed,
    FunctionSpec,
    InlineFunctions,
    Invocation,
    Message,
    Returned,
    Started,
    Wrote,
    functions_from_template,
)
from pai_local.template import Template


def test_every_function_of_the_template_with_its_timeout_and_memory() -> None:
    specs = {spec.name: spec for spec in functions_from_template(Template.load(Env="dev"))}
    assert specs == {
        "chat": FunctionSpec("chat", "handlers.chat.handler", 30.0, 512),
        "memory": FunctionSpec("memory", "handlers.memory.handler", 60.0, 1024),
        "search": FunctionSpec("search", "handlers.search.handler", 60.0, 2048),
        "authorizer": FunctionSpec("authorizer", "handlers.authorizer.handler", 10.0, 256),
        "documents": FunctionSpec("documents", "handlers.documents.handler", 29.0, 3008),
        "learning": FunctionSpec("learning", "handlers.learning.handler", 60.0, 1024),
        "document_ingest": FunctionSpec("document_ingest", "handlers.document_ingest.handler", 900.0, 3008),
    }
    routed = {route.handler for route in Template.load(Env="dev").routes()}
    assert routed <= {spec.handler for spec in specs.values()}


def test_a_timeout_can_be_replaced_by_name() -> None:
    specs = {spec.name: spec for spec in functions_from_template(Template.load(Env="dev"), timeouts={"chat": 2})}
    assert specs["chat"].timeout_seconds == 2.0
    assert specs["search"].timeout_seconds == 60.0


def _stream(event: dict[str, Any], context: Any) -> dict[str, Any]:
    context.response_stream.start(200, {"Content-Type": "text/event-stream"})
    context.response_stream.write("one")
    context.response_stream.write("")  # nothing to send
    context.response_stream.write("two")
    return {"statusCode": 200, "body": ""}


def _plain(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 201,
        "body": event["body"],
        "remaining": context.get_remaining_time_in_millis(),
        "streamed": context.response_stream is not None,
    }


def _broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("a bug")


@pytest.fixture
def handlers_module() -> Iterator[str]:
    module = types.ModuleType("pai_test_local_handlers")
    module.stream, module.plain, module.broken = _stream, _plain, _broken  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        yield module.__name__
    finally:
        del sys.modules[module.__name__]


def messages(invocation: Invocation) -> list[Message]:
    received = [invocation.next()]
    while not isinstance(received[-1], Returned | Failed):
        received.append(invocation.next())
    return received


def test_a_streamed_answer_arrives_as_start_writes_and_a_return(handlers_module: str) -> None:
    functions = InlineFunctions()
    received = messages(functions.invoke(f"{handlers_module}.stream", {}, response_stream=True))
    assert received == [Started(200, {"Content-Type": "text/event-stream"}), Wrote("one"), Wrote("two"), Returned(None)]


def test_only_a_streaming_invocation_gets_a_response_stream(handlers_module: str) -> None:
    # API Gateway invokes without one: a handler that would stream answers in one payload instead.
    (answer,) = messages(InlineFunctions().invoke(f"{handlers_module}.plain", {"body": "x"}))
    assert isinstance(answer, Returned) and answer.result is not None
    assert answer.result["streamed"] is False


def test_a_plain_answer_is_returned_with_the_time_left_in_its_context(handlers_module: str) -> None:
    (answer,) = messages(InlineFunctions(timeout_seconds=5).invoke(f"{handlers_module}.plain", {"body": "x"}))
    assert isinstance(answer, Returned) and answer.result is not None
    assert answer.result["body"] == "x"
    assert 0 < answer.result["remaining"] <= 5000


def test_a_handler_that_raises_is_a_failed_invocation(handlers_module: str, caplog: pytest.LogCaptureFixture) -> None:
    assert messages(InlineFunctions().invoke(f"{handlers_module}.broken", {})) == [Failed("error")]
    assert "handler pai_test_local_handlers.broken failed" in caplog.text
