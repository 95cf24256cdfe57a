"""Abuse limits before authentication (issue 16, part 3): a value that is not shaped like a PAI key
costs no table read (nor even a composition root), and "the key store is unavailable" is never
remembered, neither by API Gateway (its authorizer cache is off) nor by the authorizer (it
remembers good keys only), locally exactly as in AWS."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from typing import Any

import pytest

from pai_core.auth import MAX_AUTHORIZATION_CHARS, ApiKeyRejected, ApiKeys, AuthFailure, KnownKeys
from pai_core.bootstrap import set_container
from pai_core.config import Settings
from pai_core.errors import UpstreamUnavailable
from pai_local.gateway import AuthorizerCache
from pai_local.template import Template
from tests.fakes import FakeContainer, FixedClock, InMemoryApiKeyStore
from tests.unit.test_authentication import UntouchableContainer, authorize

SECRET = "A" * 43  # the shape of a secret (43 URL-safe base64 characters), not one
WELL_FORMED = f"pai_{'0' * 16}_{SECRET}"


def _random_text(length: int) -> str:
    return "".join(secrets.choice(string.printable.strip()) for _ in range(length))


MALFORMED = {
    "random": f"Bearer {_random_text(40)}",
    "random, key-length": f"Bearer {_random_text(len(WELL_FORMED))}",
    "random, no scheme": _random_text(71),
    "too long": f"Bearer {WELL_FORMED}{'A' * 300}",
    "far too long": "Bearer " + "A" * 100_000,
    "over the header bound": "Bearer " + " " * MAX_AUTHORIZATION_CHARS + WELL_FORMED,
    "wrong prefix": f"Bearer pak_{'0' * 16}_{SECRET}",
    "no prefix": f"Bearer {'0' * 16}_{SECRET}",
    "upper-case key id": f"Bearer pai_{'A' * 16}_{SECRET}",
    "short key id": f"Bearer pai_{'0' * 15}_{SECRET}",
    "short secret": f"Bearer pai_{'0' * 16}_{SECRET[:-1]}",
    "long secret": f"Bearer pai_{'0' * 16}_{SECRET}A",
    "secret outside the alphabet": f"Bearer pai_{'0' * 16}_{SECRET[:-1]}+",
    "non-ASCII": f"Bearer pai_{'0' * 16}_{SECRET[:-1]}é",
    "empty Bearer": "Bearer",
    "Bearer and spaces": "Bearer     ",
    "another scheme": f"Basic {WELL_FORMED}",
    "key without scheme": WELL_FORMED,
    "two keys": f"Bearer {WELL_FORMED} {WELL_FORMED}",
}


@pytest.fixture
def untouchable() -> Iterator[UntouchableContainer]:
    container = UntouchableContainer()
    set_container(container)  # type: ignore[arg-type]
    yield container
    set_container(None)


@pytest.mark.parametrize("header", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_key_is_refused_before_the_container_is_touched(
    header: str, untouchable: UntouchableContainer
) -> None:
    assert authorize(header) == {"isAuthorized": True, "context": {"authError": "malformed"}}
    assert untouchable.touched == []  # no client built, no table read


@pytest.mark.parametrize("header", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_key_costs_no_table_read(header: str) -> None:
    store = InMemoryApiKeyStore()
    keys = ApiKeys(store, FixedClock(), known=KnownKeys(max_age_seconds=60))
    with pytest.raises(ApiKeyRejected) as refused:
        keys.identify(header)
    assert refused.value.reason == AuthFailure.MALFORMED
    assert store.reads == 0


def test_a_well_formed_unknown_key_costs_one_read_every_time() -> None:
    store = InMemoryApiKeyStore()
    keys = ApiKeys(store, FixedClock(), known=KnownKeys(max_age_seconds=60))
    for expected_reads in (1, 2):  # refusals are not remembered: an unknown key may be issued later
        with pytest.raises(ApiKeyRejected) as refused:
            keys.identify(f"Bearer {WELL_FORMED}")
        assert refused.value.reason == AuthFailure.INVALID
        assert store.reads == expected_reads


# -- good keys remembered, "unavailable" never ---------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_good_key_is_read_once_per_cache_age() -> None:
    store, ticks = InMemoryApiKeyStore(), Ticks()
    keys = ApiKeys(store, FixedClock(), known=KnownKeys(max_age_seconds=60, clock=ticks))
    issued = keys.issue("alice")
    for _ in range(3):
        assert keys.identify(f"Bearer {issued.key}").user_id == "alice"
    assert store.reads == 1
    keys.revoke(issued.info.key_id)
    ticks.now += 59.9
    assert keys.identify(f"Bearer {issued.key}").user_id == "alice"  # a revoked key, within the age
    ticks.now += 0.1
    with pytest.raises(ApiKeyRejected):
        keys.identify(f"Bearer {issued.key}")
    assert store.reads == 2


def test_an_unavailable_key_store_is_asked_again_at_the_next_request() -> None:
    store = InMemoryApiKeyStore()
    keys = ApiKeys(store, FixedClock(), known=KnownKeys(max_age_seconds=60))
    issued = keys.issue("alice")
    store.fail_with = UpstreamUnavailable("DynamoDB is unavailable")
    with pytest.raises(UpstreamUnavailable):
        keys.identify(f"Bearer {issued.key}")
    store.fail_with = None
    assert keys.identify(f"Bearer {issued.key}").user_id == "alice"
    assert store.reads == 2
    # Once known good, an outage of the store does not refuse the key within the cache's age.
    store.fail_with = UpstreamUnavailable("DynamoDB is unavailable")
    assert keys.identify(f"Bearer {issued.key}").user_id == "alice"


def test_the_known_keys_are_bounded_and_hold_no_key() -> None:
    store = InMemoryApiKeyStore()
    known = KnownKeys(max_age_seconds=60, max_entries=2)
    keys = ApiKeys(store, FixedClock(), known=known)
    issued = [keys.issue(f"user{i}") for i in range(3)]
    for key in issued:
        keys.identify(f"Bearer {key.key}")
    assert len(known) == 2
    assert not any(key.key in repr(vars(known)) for key in issued)
    keys.identify(f"Bearer {issued[0].key}")  # the oldest went first: read again
    assert store.reads == 4


@pytest.mark.parametrize(("age", "entries"), [(0, 10), (-1, 10), (60, 0)])
def test_a_cache_that_would_remember_nothing_is_refused(age: float, entries: int) -> None:
    with pytest.raises(ValueError, match="no cache"):
        KnownKeys(max_age_seconds=age, max_entries=entries)


def test_the_authorizer_never_answers_unavailable_twice_for_one_outage(fake_container: Any) -> None:
    container: FakeContainer = fake_container
    container.api_keys = ApiKeys(container.api_key_store, container.clock, known=KnownKeys(max_age_seconds=60))
    issued = container.api_keys.issue("alice")
    container.api_key_store.fail_with = UpstreamUnavailable("DynamoDB is unavailable")
    assert authorize(f"Bearer {issued.key}")["context"] == {"authError": "unavailable"}
    container.api_key_store.fail_with = None  # the store is back: the very next request sees it
    assert authorize(f"Bearer {issued.key}")["context"] == {"userId": "alice", "keyId": issued.info.key_id}


def test_the_cache_age_is_a_setting_and_0_turns_it_off() -> None:
    assert Settings.from_env({}).auth_cache_seconds == 60
    assert Settings.from_env({"PAI_AUTH_CACHE_SECONDS": "0"}).auth_cache_seconds == 0
    with pytest.raises(ValueError, match="PAI_AUTH_CACHE_SECONDS"):
        Settings.from_env({"PAI_AUTH_CACHE_SECONDS": "3601"})


# -- API Gateway's cache, and the local gateway's emulation of it -----------------------------------


@pytest.mark.parametrize("seconds", ["0", "60", "3600"])
def test_api_gateway_caches_no_authorizer_answer_whatever_the_parameter(seconds: str) -> None:
    template = Template.load(Env="dev", AuthCacheSeconds=seconds)
    assert template.resolve(template.properties("ApiKeyAuthorizer")["AuthorizerResultTtlInSeconds"]) == 0
    (authorizer,) = {route.authorizer for route in template.routes() if route.authorizer is not None}
    assert authorizer is not None and authorizer.ttl_seconds == 0
    # The local gateway reads the same TTL, so it too asks the authorizer on every request.
    cache = AuthorizerCache()
    cache.put(authorizer, f"Bearer {WELL_FORMED}", {"isAuthorized": True, "context": {"authError": "unavailable"}})
    assert cache.get(authorizer, f"Bearer {WELL_FORMED}") is None
    variables = template.properties("AuthorizerFunction")["Environment"]["Variables"]
    assert variables["PAI_AUTH_CACHE_SECONDS"] == {"Ref": "AuthCacheSeconds"}
