"""pai_core.auth: issuing, listing, revoking and checking API keys, against the in-memory store."""

from __future__ import annotations

import hashlib
import re

import pytest

from pai_core.auth import (
    ApiKeyRejected,
    ApiKeys,
    AuthFailure,
    auth_failure_error,
    key_digest,
    parse_bearer,
)
from pai_core.config import Settings
from pai_core.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from tests.fakes import FixedClock, InMemoryApiKeyStore

KEY_FORMAT = re.compile(r"^pai_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")


@pytest.fixture
def store() -> InMemoryApiKeyStore:
    return InMemoryApiKeyStore()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def keys(store: InMemoryApiKeyStore, clock: FixedClock) -> ApiKeys:
    return ApiKeys(store, clock)


def bearer(key: str) -> str:
    return f"Bearer {key}"


# -- issuing -----------------------------------------------------------------------------------------


def test_an_issued_key_is_random_and_only_its_digest_is_stored(keys: ApiKeys, store: InMemoryApiKeyStore) -> None:
    issued = keys.issue("alice", "laptop")
    assert KEY_FORMAT.match(issued.key)
    _, key_id, secret = issued.key.split("_", 2)
    assert issued.info.key_id == key_id
    assert (issued.info.user_id, issued.info.label, issued.info.revoked_at) == ("alice", "laptop", None)
    stored = store.keys[key_id]
    assert stored.digest == hashlib.sha256(issued.key.encode()).digest()
    assert secret not in repr(stored) and issued.key not in repr(issued)  # never in a log line by accident
    assert len(secret) * 6 >= 256  # URL-safe base64: 6 bits a character


def test_keys_never_repeat(keys: ApiKeys) -> None:
    issued = [keys.issue("alice") for _ in range(50)]
    assert len({i.key for i in issued}) == len({i.info.key_id for i in issued}) == 50


def test_a_taken_key_id_is_drawn_again(
    keys: ApiKeys, store: InMemoryApiKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = keys.issue("alice").info.key_id
    draws = iter([taken, "00000000000000ff"])
    monkeypatch.setattr("pai_core.auth.secrets.token_hex", lambda _: next(draws))
    assert keys.issue("bob").info.key_id == "00000000000000ff"
    assert store.keys[taken].info.user_id == "alice"


@pytest.mark.parametrize("user_id", ["", "a#b", "a b", "x" * 129, "ünï", "a/b"])
def test_user_ids_are_owners_and_never_hold_a_hash_sign(keys: ApiKeys, user_id: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        keys.issue(user_id)
    assert raised.value.field == "userId"


@pytest.mark.parametrize("user_id", ["alice", "a.b@example.com", "x" * 128, "A-Z_0-9"])
def test_every_accepted_user_id_is_a_valid_owner(keys: ApiKeys, user_id: str) -> None:
    assert keys.issue(user_id).info.user_id == Settings(owner=user_id).owner


@pytest.mark.parametrize("label", ["x" * 129, "tab\there", "new\nline"])
def test_labels_are_short_and_printable(keys: ApiKeys, label: str) -> None:
    with pytest.raises(InvalidInput):
        keys.issue("alice", label)


# -- identifying -------------------------------------------------------------------------------------


def test_a_valid_key_identifies_its_user_with_one_read(keys: ApiKeys, store: InMemoryApiKeyStore) -> None:
    issued = keys.issue("alice")
    store.reads = 0
    principal = keys.identify(bearer(issued.key))
    assert (principal.user_id, principal.key_id) == ("alice", issued.info.key_id)
    assert store.reads == 1


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_is_case_insensitive_and_spaces_around_are_ignored(keys: ApiKeys, scheme: str) -> None:
    issued = keys.issue("alice")
    assert keys.identify(f"  {scheme}   {issued.key}  ").user_id == "alice"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_header_is_missing(keys: ApiKeys, header: str | None) -> None:
    with pytest.raises(ApiKeyRejected) as raised:
        keys.identify(header)
    assert raised.value.reason == AuthFailure.MISSING
    assert raised.value.code == "unauthorized"


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "pai_0123456789abcdef_" + "a" * 43,  # no scheme
        "Bearer pai_0123456789abcdef_" + "a" * 42,  # secret too short
        "Bearer pai_0123456789abcdef_" + "a" * 44,
        "Bearer pai_0123456789ABCDEF_" + "a" * 43,  # key id in upper case
        "Bearer sk_0123456789abcdef_" + "a" * 43,
        "Bearer pai_0123456789abcdef_" + "a" * 42 + "=",
        "Bearer pai_0123456789abcdef_" + "a" * 21 + " " + "a" * 21,
        "Bearer pai_0123456789abcdef_" + "ä" * 43,
    ],
)
def test_malformed_headers_are_refused_without_a_read(keys: ApiKeys, store: InMemoryApiKeyStore, header: str) -> None:
    with pytest.raises(ApiKeyRejected) as raised:
        keys.identify(header)
    assert raised.value.reason == AuthFailure.MALFORMED
    assert store.reads == 0


def test_unknown_wrong_and_revoked_keys_get_the_same_answer(keys: ApiKeys) -> None:
    issued = keys.issue("alice")
    revoked = keys.issue("alice")
    keys.revoke(revoked.info.key_id)
    _, key_id, secret = issued.key.split("_", 2)
    wrong_secret = f"pai_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    unknown_id = f"pai_{'f' * 16}_{secret}"
    messages = set()
    for key in (wrong_secret, unknown_id, revoked.key):
        with pytest.raises(ApiKeyRejected) as raised:
            keys.identify(bearer(key))
        assert raised.value.reason == AuthFailure.INVALID
        messages.add(raised.value.message)
    assert len(messages) == 1
    assert keys.identify(bearer(issued.key)).user_id == "alice"  # the other key still works


def test_a_digest_moved_to_another_key_id_does_not_work(keys: ApiKeys, store: InMemoryApiKeyStore) -> None:
    alice, bob = keys.issue("alice"), keys.issue("bob")
    # Someone copies alice's digest onto bob's record: bob's key no longer matches, alice's key
    # presented with bob's key id does not either (the digest covers the key id).
    _, _, alice_secret = alice.key.split("_", 2)
    bob_record = store.keys[bob.info.key_id]
    store.keys[bob.info.key_id] = type(bob_record)(bob_record.info, store.keys[alice.info.key_id].digest)
    for key in (bob.key, f"pai_{bob.info.key_id}_{alice_secret}"):
        with pytest.raises(ApiKeyRejected):
            keys.identify(bearer(key))


def test_a_store_failure_is_not_a_401(keys: ApiKeys, store: InMemoryApiKeyStore) -> None:
    issued = keys.issue("alice")
    store.fail_with = UpstreamUnavailable("DynamoDB is unavailable")
    with pytest.raises(UpstreamUnavailable):
        keys.identify(bearer(issued.key))


def test_parse_bearer_returns_the_key_and_its_id() -> None:
    key = "pai_0123456789abcdef_" + "a_-" * 14 + "b"
    assert parse_bearer(f"Bearer {key}") == (key, "0123456789abcdef")
    assert key_digest(key) == hashlib.sha256(key.encode()).digest()


# -- the authorizer's vocabulary -----------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(AuthFailure))
def test_every_failure_travels_as_a_string_and_back(reason: AuthFailure) -> None:
    error = auth_failure_error(str(reason))
    if reason == AuthFailure.UNAVAILABLE:
        assert isinstance(error, UpstreamUnavailable)
    else:
        assert isinstance(error, ApiKeyRejected)
        assert error.reason == reason


@pytest.mark.parametrize("reason", ["", "denied", "MISSING", "null"])
def test_an_unknown_failure_is_an_invalid_key(reason: str) -> None:
    error = auth_failure_error(reason)
    assert isinstance(error, ApiKeyRejected)
    assert error.reason == AuthFailure.INVALID


# -- listing and revoking ------------------------------------------------------------------------------


def test_listing_shows_keys_oldest_first_and_revoked_ones_too(keys: ApiKeys, clock: FixedClock) -> None:
    first = keys.issue("alice", "laptop")
    clock.advance(minutes=1)
    second = keys.issue("alice", "phone")
    clock.advance(minutes=1)
    keys.issue("bob")
    keys.revoke(first.info.key_id)
    listed = keys.list_keys("alice")
    assert [i.key_id for i in listed] == [first.info.key_id, second.info.key_id]
    assert [i.revoked for i in listed] == [True, False]
    assert listed[0].revoked_at == clock.now()
    assert len(keys.list_keys()) == 3


def test_revoking_twice_keeps_the_first_time(keys: ApiKeys, clock: FixedClock) -> None:
    issued = keys.issue("alice")
    first = keys.revoke(issued.info.key_id).revoked_at
    clock.advance(hours=1)
    assert keys.revoke(issued.info.key_id).revoked_at == first


def test_revoking_an_unknown_or_malformed_key_id(keys: ApiKeys) -> None:
    with pytest.raises(NotFound):
        keys.revoke("0123456789abcdef")
    with pytest.raises(InvalidInput):
        keys.revoke("pai_0123456789abcdef")


def test_revoke_all_revokes_only_that_users_live_keys(keys: ApiKeys) -> None:
    alice = [keys.issue("alice") for _ in range(3)]
    bob = keys.issue("bob")
    keys.revoke(alice[0].info.key_id)
    assert keys.revoke_all("alice") == 2
    assert keys.revoke_all("alice") == 0
    for issued in alice:
        with pytest.raises(ApiKeyRejected):
            keys.identify(bearer(issued.key))
    assert keys.identify(bearer(bob.key)).user_id == "bob"


# -- registering a saved key again -----------------------------------------------------------------------


def test_register_is_idempotent(keys: ApiKeys, store: InMemoryApiKeyStore) -> None:
    issued = keys.issue("local")
    forgetful = ApiKeys(InMemoryApiKeyStore(), FixedClock())  # an emulator that started afresh
    for service in (keys, forgetful, forgetful):
        info = service.register(issued.key, "local", "make run")
        assert (info.key_id, info.user_id) == (issued.info.key_id, "local")
    assert forgetful.identify(bearer(issued.key)).user_id == "local"


def test_register_refuses_another_users_or_another_keys_id(keys: ApiKeys) -> None:
    issued = keys.issue("alice")
    with pytest.raises(Conflict):
        keys.register(issued.key, "mallory")
    _, key_id, secret = issued.key.split("_", 2)
    with pytest.raises(Conflict):
        keys.register(f"pai_{key_id}_{secret[::-1]}", "alice")
    with pytest.raises(InvalidInput):
        keys.register("not-a-key", "alice")


def test_register_reports_a_revoked_key(keys: ApiKeys) -> None:
    issued = keys.issue("local")
    keys.revoke(issued.info.key_id)
    assert keys.register(issued.key, "local").revoked
