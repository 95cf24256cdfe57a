"""Authentication end to end inside the process: the authorizer (handlers/authorizer.py) fed API
Gateway's v2 REQUEST authorizer events, and the functions' side (handlers/_http.authenticated_owner)
fed the events API Gateway passes on, with or without the authorizer's context."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import handlers.authorizer
import handlers.memory
from pai_core.auth import AuthFailure
from pai_core.bootstrap import set_container
from pai_core.config import Settings
from pai_core.errors import UpstreamUnavailable
from pai_core.ports import NoMetrics
from pai_local.template import Template
from tests.fakes import FakeContainer, FakeLambdaContext, as_user
from tests.unit.test_handlers import make_event

AUTHORIZER_EVENT = Path(__file__).parent / "events" / "apigw_v2_authorizer.json"
PROTECTED_ROUTES = [route for route in Template.load(Env="dev").routes() if route.authorizer is not None]
BODIES = {
    "POST /memory": {"action": "store", "content": "My cat is called Miso."},
    "POST /search": {"query": "cat"},
    "POST /chat": {"message": "What is my cat called?"},
}


def authorizer_event(authorization: str | None) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(AUTHORIZER_EVENT.read_text(encoding="utf-8"))
    if authorization is None:
        del event["headers"]["authorization"]
        event["identitySource"] = []
    else:
        event["headers"]["authorization"] = authorization
        event["identitySource"] = [authorization]
    return event


def authorize(authorization: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = handlers.authorizer.handler(authorizer_event(authorization), FakeLambdaContext())
    return answer


class UntouchableContainer:
    """A composition root any of whose parts (storage, KMS, model, limits, keys) fails the test
    when it is used: what an unauthenticated request may touch is nothing."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.touched: list[str] = []
        self.metrics = NoMetrics()  # counting a refusal is not touching anything of the user's

    def __getattr__(self, name: str) -> Any:
        self.touched.append(name)
        raise AssertionError(f"the container's {name} was used")


@pytest.fixture
def untouchable() -> Any:
    container = UntouchableContainer()
    set_container(container)  # type: ignore[arg-type]
    yield container
    set_container(None)


def handler_module(route_handler: str) -> Any:
    return importlib.import_module(route_handler.rsplit(".", 1)[0])


# -- the authorizer -----------------------------------------------------------------------------------


def test_a_valid_key_passes_the_user_on(fake_container: FakeContainer) -> None:
    issued = fake_container.api_keys.issue("alice")
    assert authorize(f"Bearer {issued.key}") == {
        "isAuthorized": True,
        "context": {"userId": "alice", "keyId": issued.info.key_id},
    }


def test_the_header_name_is_case_insensitive(fake_container: FakeContainer) -> None:
    issued = fake_container.api_keys.issue("alice")
    event = authorizer_event(None)
    event["headers"]["Authorization"] = f"Bearer {issued.key}"
    answer = handlers.authorizer.handler(event, FakeLambdaContext())
    assert answer["context"]["userId"] == "alice"


def test_it_never_denies_and_says_why(fake_container: FakeContainer) -> None:
    alice = fake_container.api_keys.issue("alice")
    revoked = fake_container.api_keys.issue("alice")
    fake_container.api_keys.revoke(revoked.info.key_id)
    unknown = "pai_" + "f" * 16 + alice.key[-44:]
    cases = {
        None: "missing",
        "": "missing",
        "Basic YWxpY2U6c2VjcmV0": "malformed",
        "Bearer not-a-key": "malformed",
        f"Bearer {unknown}": "invalid",
        f"Bearer {revoked.key}": "invalid",
    }
    for header, reason in cases.items():
        assert authorize(header) == {"isAuthorized": True, "context": {"authError": reason}}, header


def test_an_unreadable_key_store_is_said_so(fake_container: FakeContainer) -> None:
    issued = fake_container.api_keys.issue("alice")
    fake_container.api_key_store.fail_with = UpstreamUnavailable("DynamoDB is unavailable")
    assert authorize(f"Bearer {issued.key}") == {"isAuthorized": True, "context": {"authError": "unavailable"}}


def test_an_event_without_headers_is_missing(fake_container: FakeContainer) -> None:
    event = authorizer_event(None)
    del event["headers"]
    answer = handlers.authorizer.handler(event, FakeLambdaContext())
    assert answer["context"] == {"authError": "missing"}


def test_the_key_is_never_logged(
    fake_container: FakeContainer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = fake_container.api_keys.issue("alice")
    authorize(f"Bearer {issued.key}")
    fake_container.api_key_store.fail_with = UpstreamUnavailable("DynamoDB is unavailable")
    authorize(f"Bearer {issued.key}")
    captured = capsys.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "API keys cannot be checked" in logged
    assert issued.key.split("_", 2)[2] not in logged


# -- the functions' side --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", PROTECTED_ROUTES, ids=lambda route: f"{route.method} {route.path}")
def test_without_authorizer_context_every_protected_route_is_a_401_that_touches_nothing(
    route: Any, untouchable: UntouchableContainer
) -> None:
    event = make_event(f"{route.method} {route.path}", json.dumps(BODIES.get(f"{route.method} {route.path}", {})))
    del event["requestContext"]["authorizer"]
    response = handler_module(route.handler).handler(event, FakeLambdaContext())
    assert response["statusCode"] == 401, response
    assert response["headers"]["WWW-Authenticate"] == 'Bearer realm="pai"'
    error = json.loads(response["body"])["error"]
    assert error["code"] == "unauthorized"
    assert "API key" in error["message"]
    assert untouchable.touched == []


@pytest.mark.parametrize("route", PROTECTED_ROUTES, ids=lambda route: f"{route.method} {route.path}")
@pytest.mark.parametrize(
    "context",
    [
        {"authError": "missing"},
        {"authError": "malformed"},
        {"authError": "invalid"},
        {"authError": "something else"},
        {"authError": "invalid", "userId": "alice"},  # an error wins over a user
        {"keyId": "0123456789abcdef"},  # no user
        {"userId": ""},
        {"userId": "alice#bob"},  # '#' is never part of an owner
        {"userId": "x" * 129},
        {"userId": 42},
        {"userId": None},
    ],
)
def test_a_bad_authorizer_context_is_a_401_that_touches_nothing(
    route: Any, context: dict[str, Any], untouchable: UntouchableContainer
) -> None:
    event = make_event(f"{route.method} {route.path}", json.dumps(BODIES.get(f"{route.method} {route.path}", {})))
    event["requestContext"]["authorizer"] = {"lambda": context}
    response = handler_module(route.handler).handler(event, FakeLambdaContext())
    assert response["statusCode"] == 401, response
    assert json.loads(response["body"])["error"]["code"] == "unauthorized"
    assert untouchable.touched == []


def test_an_unavailable_key_store_is_a_503_that_touches_nothing(untouchable: UntouchableContainer) -> None:
    event = make_event("POST /memory", json.dumps(BODIES["POST /memory"]))
    event["requestContext"]["authorizer"] = {"lambda": {"authError": "unavailable"}}
    response = handlers.memory.handler(event, FakeLambdaContext())
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == "1"
    assert json.loads(response["body"])["error"]["code"] == "service_unavailable"
    assert untouchable.touched == []


def test_unknown_and_revoked_keys_read_the_same_to_the_caller(fake_container: FakeContainer) -> None:
    revoked = fake_container.api_keys.issue("alice")
    fake_container.api_keys.revoke(revoked.info.key_id)
    unknown = "pai_" + "f" * 16 + revoked.key[-44:]
    answers = []
    for key in (unknown, revoked.key):
        event = make_event("POST /memory", json.dumps(BODIES["POST /memory"]))
        event["requestContext"]["authorizer"] = {"lambda": authorize(f"Bearer {key}")["context"]}
        response = handlers.memory.handler(event, FakeLambdaContext())
        answers.append((response["statusCode"], response["body"]))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401
    assert fake_container.memory_repository.items == {}
    assert fake_container.embedder.calls == 0


def test_health_needs_no_key(fake_container: FakeContainer) -> None:
    event = make_event("GET /health", None)
    del event["requestContext"]["authorizer"]
    response = handlers.memory.handler(event, FakeLambdaContext())
    assert response["statusCode"] == 200


def test_the_user_is_the_keys_user_whatever_the_body_says(fake_container: FakeContainer) -> None:
    issued = fake_container.api_keys.issue("alice")
    context = authorize(f"Bearer {issued.key}")["context"]
    body = {**BODIES["POST /memory"], "userId": "bob", "owner": "bob", "ttl": 1}
    event = as_user(make_event("POST /memory", json.dumps(body)), "ignored")
    event["requestContext"]["authorizer"] = {"lambda": context}
    response = handlers.memory.handler(event, FakeLambdaContext())
    assert response["statusCode"] == 201
    memory_id = json.loads(response["body"])["id"]
    assert set(fake_container.memory_repository.items) == {("alice", memory_id)}


def test_messages_say_what_to_do() -> None:
    for reason in (AuthFailure.MISSING, AuthFailure.MALFORMED):
        event = make_event("POST /memory", "{}")
        event["requestContext"]["authorizer"] = {"lambda": {"authError": reason.value}}
        container = FakeContainer()
        set_container(container)  # type: ignore[arg-type]
        try:
            message = json.loads(handlers.memory.handler(event, FakeLambdaContext())["body"])["error"]["message"]
        finally:
            set_container(None)
        assert "Bearer" in message


def test_event_helper_is_what_api_gateway_sends() -> None:
    event = as_user(make_event("POST /memory", "{}"), "alice", key_id="00000000000000aa")
    assert event["requestContext"]["authorizer"] == {"lambda": {"userId": "alice", "keyId": "00000000000000aa"}}
