from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pai_core.crypto import (
    BranchKeyring,
    EnvelopeCipher,
    KeyMaterialDestroyed,
    KeyringPolicy,
    RecordContext,
    WrappedBranchKey,
    serialize_context,
)
from pai_core.crypto.envelope import HEADER_BYTES, NONCE_BYTES, TAG_BYTES
from pai_core.errors import IntegrityError
from tests.fakes import FakeKeyService, InMemoryBranchKeyStore, fake_cipher, fake_keyring


def context(record_id: str = "m1", *, owner: str = "alice", attribute: str = "content") -> RecordContext:
    return RecordContext(
        partition={"table": "pai-knowledge-dev", "owner": owner}, record={"id": record_id, "attribute": attribute}
    )


@pytest.fixture
def cipher() -> EnvelopeCipher:
    return fake_cipher()


def test_round_trip(cipher: EnvelopeCipher) -> None:
    frame = cipher.encrypt(b"my cat is called Miso", context())
    assert b"Miso" not in frame
    assert cipher.decrypt(frame, context()) == b"my cat is called Miso"


def test_every_encryption_uses_a_fresh_nonce(cipher: EnvelopeCipher) -> None:
    frames = {cipher.encrypt(b"same text", context()) for _ in range(50)}
    assert len(frames) == 50


def test_frame_layout_is_versioned_with_key_version_salt_nonce_and_tag(cipher: EnvelopeCipher) -> None:
    frame = cipher.encrypt(b"abc", context())
    assert frame[0] == 2
    assert int.from_bytes(frame[1:5], "big") == 1  # the user's first branch key
    assert len(frame) == HEADER_BYTES + NONCE_BYTES + 3 + TAG_BYTES


@pytest.mark.parametrize(
    "moved_to",
    [
        context("m2"),  # another record
        context(owner="mallory"),  # another user
        context(attribute="metadata"),  # another attribute
        RecordContext(
            partition={"table": "pai-conversations-dev", "owner": "alice"}, record={"id": "m1", "attribute": "content"}
        ),  # another table
    ],
    ids=["record", "owner", "attribute", "table"],
)
def test_ciphertext_moved_elsewhere_fails(cipher: EnvelopeCipher, moved_to: RecordContext) -> None:
    frame = cipher.encrypt(b"secret", context())
    with pytest.raises(IntegrityError):
        cipher.decrypt(frame, moved_to)


def test_every_single_bit_flip_fails(cipher: EnvelopeCipher) -> None:
    """Version, key version, salt, nonce, ciphertext and tag: no bit of the frame is unauthenticated."""
    frame = cipher.encrypt(b"flip me", context())
    for bit in range(len(frame) * 8):
        tampered = bytearray(frame)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            cipher.decrypt(bytes(tampered), context())


def test_every_truncation_fails(cipher: EnvelopeCipher) -> None:
    frame = cipher.encrypt(b"cut me", context())
    for length in range(len(frame)):
        with pytest.raises(IntegrityError):
            cipher.decrypt(frame[:length], context())


def test_context_serialization_is_order_independent_and_unambiguous() -> None:
    assert serialize_context({"a": "1", "b": "2"}) == serialize_context({"b": "2", "a": "1"})
    # A separator smuggled into a value cannot make two different contexts collide.
    assert serialize_context({"a": "1", "b": "2"}) != serialize_context({"a": "1\x00b\x002"})
    assert serialize_context({"ab": "c"}) != serialize_context({"a": "bc"})


def test_record_context_rejects_keys_given_twice_and_needs_an_owner() -> None:
    with pytest.raises(ValueError, match="owner"):
        RecordContext(partition={"owner": "a"}, record={"owner": "b"})
    with pytest.raises(ValueError, match="owner"):
        RecordContext(partition={"table": "t"}, record={"id": "1"})


@settings(max_examples=200, deadline=None)
@given(
    plaintext=st.binary(max_size=2048),
    record=st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda k: k not in {"table", "owner"}), st.text(max_size=40), max_size=4
    ),
)
def test_round_trip_any_bytes_any_context(plaintext: bytes, record: dict[str, str]) -> None:
    cipher = fake_cipher()
    ctx = RecordContext(partition={"table": "t", "owner": "o"}, record=record)
    assert cipher.decrypt(cipher.encrypt(plaintext, ctx), ctx) == plaintext


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_kms_call_per_user_however_many_records() -> None:
    kms = FakeKeyService()
    cipher = fake_cipher(kms)
    for i in range(100):
        cipher.encrypt(b"x", context(f"m{i}"))
    assert (kms.generated, kms.decrypted) == (1, 0)  # 100 stores, one branch key made
    cipher.encrypt(b"x", context(owner="bob"))
    assert kms.generated == 2  # another user has a key of their own


def test_a_cold_container_unwraps_each_users_branch_key_once() -> None:
    kms, store = FakeKeyService(), InMemoryBranchKeyStore()
    writer = fake_cipher(kms, store)
    frames = {(owner, i): writer.encrypt(b"x", context(f"m{i}", owner=owner)) for owner in "abc" for i in range(20)}
    reader = fake_cipher(kms, store)
    for (owner, i), frame in frames.items():
        assert reader.decrypt(frame, context(f"m{i}", owner=owner)) == b"x"
    assert kms.decrypted == 3  # 60 records of 3 users: one Decrypt per user


def test_every_value_gets_its_own_record_key() -> None:
    """Same plaintext, same record: salts differ, so record keys differ, so frames differ entirely."""
    cipher = fake_cipher()
    first, second = cipher.encrypt(b"same", context()), cipher.encrypt(b"same", context())
    assert first[5:HEADER_BYTES] != second[5:HEADER_BYTES]
    assert first[HEADER_BYTES:] != second[HEADER_BYTES:]


def test_cached_branch_keys_expire() -> None:
    kms, store, clock = FakeKeyService(), InMemoryBranchKeyStore(), Ticker()
    keyring = BranchKeyring(store, kms, keystore_name="k", policy=KeyringPolicy(max_age_seconds=5), clock=clock)
    cipher = EnvelopeCipher(keyring)
    frame = cipher.encrypt(b"x", context())
    clock.now = 4.9
    cipher.encrypt(b"x", context())
    assert kms.decrypted == 0
    clock.now = 5.0
    assert cipher.decrypt(frame, context()) == b"x"
    assert kms.decrypted == 1  # unwrapped again from the store, once


def test_the_cache_is_bounded_in_users() -> None:
    kms, store = FakeKeyService(), InMemoryBranchKeyStore()
    keyring = BranchKeyring(store, kms, keystore_name="k", policy=KeyringPolicy(max_entries=3))
    for owner in ["a", "b", "c", "d"]:
        keyring.active_key(owner)
    assert keyring.cached_keys() == 3
    keyring.active_key("a")  # evicted by "d": back from the store
    assert kms.decrypted == 1


def test_rotation_keeps_old_records_readable_and_seals_new_ones_under_the_new_version() -> None:
    kms, store, clock = FakeKeyService(), InMemoryBranchKeyStore(), Ticker()
    keyring = BranchKeyring(store, kms, keystore_name="k", policy=KeyringPolicy(max_age_seconds=60), clock=clock)
    other_container = BranchKeyring(
        store, kms, keystore_name="k", policy=KeyringPolicy(max_age_seconds=60), clock=clock
    )
    cipher, other = EnvelopeCipher(keyring), EnvelopeCipher(other_container)
    old = cipher.encrypt(b"before", context("m1"))
    other.encrypt(b"warm", context("m0"))
    assert keyring.rotate("alice") == 2
    new = cipher.encrypt(b"after", context("m2"))
    assert int.from_bytes(old[1:5], "big") == 1 and int.from_bytes(new[1:5], "big") == 2
    assert other.decrypt(old, context("m1")) == b"before"
    assert other.decrypt(new, context("m2")) == b"after"  # unwraps version 2 on demand
    assert int.from_bytes(other.encrypt(b"x", context("m3"))[1:5], "big") == 1  # its cache is still warm
    clock.now = 60.0
    assert int.from_bytes(other.encrypt(b"x", context("m4"))[1:5], "big") == 2  # and switches when it expires


def test_two_containers_making_a_users_first_key_at_once_agree() -> None:
    kms, store = FakeKeyService(), InMemoryBranchKeyStore()
    first, second = fake_keyring(kms, store), fake_keyring(kms, store)
    winner = first.active_key("alice")
    store.active_versions.pop("alice")  # second did not see it yet when it looked...
    store_active = store.active

    def late_active(owner: str) -> WrappedBranchKey | None:
        store.active_versions["alice"] = winner.version  # ...but it is there when it loses the race
        return store_active(owner)

    store.active = late_active  # type: ignore[method-assign]
    assert second.active_key("alice").material == winner.material


def test_destroying_a_users_keys_makes_their_ciphertexts_unreadable() -> None:
    kms, store = FakeKeyService(), InMemoryBranchKeyStore()
    keyring = fake_keyring(kms, store)
    cipher = EnvelopeCipher(keyring)
    frame = cipher.encrypt(b"forget me", context())
    bobs = cipher.encrypt(b"keep me", context(owner="bob"))
    keyring.rotate("alice")
    assert keyring.destroy("alice") == 3  # two versions and the active pointer
    with pytest.raises(KeyMaterialDestroyed):
        fake_cipher(kms, store).decrypt(frame, context())  # a cold container
    with pytest.raises(IntegrityError):
        cipher.decrypt(frame, context())  # and this one forgot its cached copies too
    assert cipher.decrypt(bobs, context(owner="bob")) == b"keep me"


def test_a_tampered_wrapped_branch_key_fails() -> None:
    kms, store = FakeKeyService(), InMemoryBranchKeyStore()
    frame = fake_cipher(kms, store).encrypt(b"x", context())
    stored = store.items[("alice", 1)]
    for position in range(len(stored.wrapped)):
        tampered = bytearray(stored.wrapped)
        tampered[position] ^= 0x01
        store.items[("alice", 1)] = WrappedBranchKey("alice", 1, bytes(tampered))
        with pytest.raises(IntegrityError):
            fake_cipher(kms, store).decrypt(frame, context())


def test_a_wrapped_branch_key_moved_to_another_user_does_not_unwrap() -> None:
    kms, store = FakeKeyService(), InMemoryBranchKeyStore()
    fake_cipher(kms, store).encrypt(b"x", context())
    frame = fake_cipher(kms, store).encrypt(b"y", context(owner="mallory"))
    store.items[("mallory", 1)] = WrappedBranchKey("mallory", 1, store.items[("alice", 1)].wrapped)
    with pytest.raises(IntegrityError):
        fake_cipher(kms, store).decrypt(frame, context(owner="mallory"))


@pytest.mark.parametrize("policy", [dict(max_age_seconds=0), dict(max_entries=0)])
def test_unsafe_cache_policies_are_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        KeyringPolicy(**policy)  # type: ignore[arg-type]


def test_branch_key_repr_hides_the_key() -> None:
    key = fake_keyring().active_key("alice")
    assert key.material.hex() not in repr(key)
    assert str(key.material) not in repr(key)


def test_data_key_repr_hides_the_key() -> None:
    kms = FakeKeyService()
    key = kms.generate_data_key({"table": "t"})
    assert key.plaintext.hex() not in repr(key)
    assert str(key.plaintext) not in repr(key)


@settings(max_examples=300, deadline=None)
@given(
    plaintext=st.binary(min_size=0, max_size=512),
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_change_to_any_byte_of_the_frame_fails(plaintext: bytes, position: float, mask: int) -> None:
    """Version, key version, salt, nonce, ciphertext or tag: a change anywhere, of any bits, is caught."""
    cipher = fake_cipher()
    frame = cipher.encrypt(plaintext, context())
    tampered = bytearray(frame)
    tampered[int(position * len(frame))] ^= mask
    with pytest.raises(IntegrityError):
        cipher.decrypt(bytes(tampered), context())


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["table", "owner", "id", "attribute"]),
    value=st.text(min_size=1, max_size=30),
)
def test_any_change_to_the_context_fails(key: str, value: str) -> None:
    cipher = fake_cipher()
    original = context()
    frame = cipher.encrypt(b"bound to its record", original)
    changed = original.full()
    if changed[key] == value:
        value += "x"
    changed[key] = value
    partition = {k: changed[k] for k in original.partition}
    record = {k: changed[k] for k in original.record}
    with pytest.raises(IntegrityError):
        cipher.decrypt(frame, RecordContext(partition=partition, record=record))


def test_a_user_made_again_after_a_forget_never_gets_a_destroyed_keys_version() -> None:
    """A warm container still caching the forgotten user's key must not be able to take it for the
    new user's: the new key gets a version past every destroyed one, so what the stale container
    seals names a version that no longer exists, and what others seal it fetches afresh."""
    kms, store = FakeKeyService(), InMemoryBranchKeyStore()
    stale, forgetter = fake_keyring(kms, store), fake_keyring(kms, store)
    stale_cipher, cipher = EnvelopeCipher(stale), EnvelopeCipher(forgetter)
    stale_cipher.encrypt(b"before the forget", context("m1"))  # caches version 1
    forgetter.rotate("alice")
    assert forgetter.destroy("alice") == 3
    sealed_after = cipher.encrypt(b"the new alice", context("m2"))
    assert int.from_bytes(sealed_after[1:5], "big") == 3
    assert forgetter.rotate("alice") == 4
    assert stale_cipher.decrypt(sealed_after, context("m2")) == b"the new alice"
    sealed_stale = stale_cipher.encrypt(b"sealed under the destroyed key", context("m3"))
    assert int.from_bytes(sealed_stale[1:5], "big") == 1
    with pytest.raises(KeyMaterialDestroyed):
        fake_cipher(kms, store).decrypt(sealed_stale, context("m3"))


def test_a_first_key_at_or_below_a_destroyed_version_is_refused_by_the_store() -> None:
    """A key being made while the user is forgotten: made from the version read before the destroy,
    it is refused, and the keyring says the material was destroyed rather than reuse the number."""
    kms, store = FakeKeyService(), InMemoryBranchKeyStore()
    keyring = fake_keyring(kms, store)
    keyring.active_key("alice")
    keyring.destroy("alice")
    read_before_the_destroy = store.first_version
    store.first_version = lambda owner: 1  # type: ignore[method-assign]
    with pytest.raises(KeyMaterialDestroyed):
        fake_keyring(kms, store).active_key("alice")
    store.first_version = read_before_the_destroy  # type: ignore[method-assign]
    assert fake_keyring(kms, store).active_key("alice").version == 2
