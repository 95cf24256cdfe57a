"""The local harness's part of authentication, without sockets: the authorizer the gateway reads
from the template, its answer cache, the authorizer event, and `make run`'s saved key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import handlers.authorizer
from pai_core.auth import ApiKeys
from pai_core.bootstrap import set_container
from pai_local.gateway import AuthorizerCache, build_authorizer_event, build_event
from pai_local.stack import ensure_local_api_key
from pai_local.template import Authorizer, Template
from tests.fakes import FakeContainer, FakeLambdaContext, FixedClock, InMemoryApiKeyStore

AUTHORIZER = Authorizer(
    name="A", handler="handlers.authorizer.handler", identity_header="authorization", ttl_seconds=60
)


# -- the template, as the gateway reads it --------------------------------------------------------------


def test_protected_routes_carry_the_templates_authorizer_and_ttl() -> None:
    routes = {(r.method, r.path): r for r in Template.load(Env="dev", AuthCacheSeconds="7").routes()}
    assert routes[("GET", "/health")].authorizer is None
    # The template's TTL is 0 whatever AuthCacheSeconds says (that one is the authorizer's own cache):
    # an "unavailable" answer must not be cached (tests/unit/test_abuse_limits.py).
    expected = Authorizer(
        name="ApiKeyAuthorizer", handler="handlers.authorizer.handler", identity_header="authorization", ttl_seconds=0
    )
    assert {route.authorizer for key, route in routes.items() if key != ("GET", "/health")} == {expected}


def test_an_authorizer_the_gateway_cannot_emulate_is_refused() -> None:
    template = Template.load(Env="dev")
    template.resources["ApiKeyAuthorizer"]["Properties"]["EnableSimpleResponses"] = False
    with pytest.raises(ValueError, match="simple responses"):
        template.routes()


# -- the cache --------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("pai_local.gateway.time.monotonic", fake)
    return fake


def test_answers_are_cached_per_identity_for_the_ttl(clock: Clock) -> None:
    cache = AuthorizerCache()
    answer = {"isAuthorized": True, "context": {"userId": "alice"}}
    cache.put(AUTHORIZER, "Bearer a", answer)
    assert cache.get(AUTHORIZER, "Bearer a") == answer
    assert cache.get(AUTHORIZER, "Bearer b") is None
    clock.now += 59.9
    assert cache.get(AUTHORIZER, "Bearer a") == answer
    clock.now += 0.1
    assert cache.get(AUTHORIZER, "Bearer a") is None


def test_the_cache_can_be_cleared_or_switched_off(clock: Clock) -> None:
    cache = AuthorizerCache()
    cache.put(AUTHORIZER, "Bearer a", {"isAuthorized": True})
    cache.clear()
    assert cache.get(AUTHORIZER, "Bearer a") is None
    cache.ttl_override = 0
    cache.put(AUTHORIZER, "Bearer a", {"isAuthorized": True})
    assert cache.get(AUTHORIZER, "Bearer a") is None
    uncached = Authorizer(name="B", handler="x.y", identity_header="authorization", ttl_seconds=0)
    cache.ttl_override = None
    cache.put(uncached, "Bearer a", {"isAuthorized": True})
    assert cache.get(uncached, "Bearer a") is None


def test_the_cache_is_bounded_and_keeps_no_key(clock: Clock) -> None:
    cache = AuthorizerCache(max_entries=3)
    for index in range(5):
        cache.put(AUTHORIZER, f"Bearer secret-{index}", {"isAuthorized": True})
    assert [cache.get(AUTHORIZER, f"Bearer secret-{i}") is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert "secret" not in repr(cache.__dict__)


# -- the events ---------------------------------------------------------------------------------------------


def test_the_authorizer_event_is_a_v2_request_event_the_authorizer_reads() -> None:
    store = InMemoryApiKeyStore()
    container = FakeContainer(api_key_store=store)
    issued = container.api_keys.issue("alice")
    (route,) = [r for r in Template.load(Env="dev").routes() if r.path == "/memory"]
    headers = {"authorization": f"Bearer {issued.key}", "host": "127.0.0.1:8080"}
    event = build_authorizer_event(
        route,
        method="POST",
        target="/memory?x=1",
        headers=headers,
        identity=headers["authorization"],
        source_ip="127.0.0.1",
    )
    assert (event["version"], event["type"], event["routeKey"]) == ("2.0", "REQUEST", "POST /memory")
    assert event["identitySource"] == [headers["authorization"]]
    assert event["routeArn"].endswith("/$default/POST/memory")
    assert event["queryStringParameters"] == {"x": "1"}
    assert "body" not in event
    set_container(container)  # type: ignore[arg-type]
    try:
        answer = handlers.authorizer.handler(event, FakeLambdaContext())
    finally:
        set_container(None)
    assert answer["context"]["userId"] == "alice"
    passed_on = build_event(
        route,
        method="POST",
        target="/memory",
        headers=headers,
        body=b"{}",
        source_ip="127.0.0.1",
        authorizer_context=answer["context"],
    )
    assert passed_on["requestContext"]["authorizer"] == {"lambda": {"userId": "alice", "keyId": issued.info.key_id}}


# -- make run's key -------------------------------------------------------------------------------------------


def keys(store: InMemoryApiKeyStore | None = None) -> ApiKeys:
    return ApiKeys(store if store is not None else InMemoryApiKeyStore(), FixedClock())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_run_makes_a_key_and_saves_it_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / ".pai" / "api-key"
    service = keys()
    local = ensure_local_api_key(service, "local", path)
    assert local.created
    assert path.read_text() == local.key + "\n"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert service.identify(f"Bearer {local.key}").user_id == "local"
    assert local.key not in repr(local)


def test_later_runs_register_the_saved_key_again(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    first = ensure_local_api_key(keys(), "local", path)
    path.chmod(0o644)
    restarted = keys()  # the embedded emulator forgot everything
    again = ensure_local_api_key(restarted, "local", path)
    assert (again.key, again.created) == (first.key, False)
    assert restarted.identify(f"Bearer {first.key}").user_id == "local"
    assert mode(path) == 0o600
    same_emulator = ensure_local_api_key(restarted, "local", path)  # an emulator that remembers
    assert (same_emulator.key, same_emulator.created) == (first.key, False)


@pytest.mark.parametrize("problem", ["revoked", "another user", "garbage", "empty"])
def test_an_unusable_saved_key_is_replaced(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "api-key"
    store = InMemoryApiKeyStore()
    service = keys(store)
    first = ensure_local_api_key(service, "local" if problem != "another user" else "someone", path)
    if problem == "revoked":
        service.revoke(first.key.split("_")[1])
    elif problem == "garbage":
        path.write_text("not a key\n")
    elif problem == "empty":
        path.write_text("")
    replaced = ensure_local_api_key(service, "local", path)
    assert replaced.created
    assert replaced.key != first.key
    assert path.read_text().strip() == replaced.key
    assert service.identify(f"Bearer {replaced.key}").user_id == "local"
