from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pai_core.crypto import CachePolicy, CachingKeyService, EnvelopeCipher, RecordContext, serialize_context
from pai_core.crypto.envelope import NONCE_BYTES, TAG_BYTES
from pai_core.errors import IntegrityError
from tests.fakes import FakeKeyService


def context(record_id: str = "m1", *, owner: str = "alice", attribute: str = "content") -> RecordContext:
    return RecordContext(
        partition={"table": "pai-knowledge-dev", "owner": owner}, record={"id": record_id, "attribute": attribute}
    )


@pytest.fixture
def cipher() -> EnvelopeCipher:
    return EnvelopeCipher(CachingKeyService(FakeKeyService()))


def test_round_trip(cipher: EnvelopeCipher) -> None:
    frame = cipher.encrypt(b"my cat is called Miso", context())
    assert b"Miso" not in frame
    assert cipher.decrypt(frame, context()) == b"my cat is called Miso"


def test_every_encryption_uses_a_fresh_nonce(cipher: EnvelopeCipher) -> None:
    frames = {cipher.encrypt(b"same text", context()) for _ in range(50)}
    assert len(frames) == 50


def test_frame_layout_is_versioned_with_wrapped_key_nonce_and_tag(cipher: EnvelopeCipher) -> None:
    frame = cipher.encrypt(b"abc", context())
    wrapped_length = int.from_bytes(frame[1:3], "big")
    assert frame[0] == 1
    assert len(frame) == 3 + wrapped_length + NONCE_BYTES + 3 + TAG_BYTES


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
    """Version, length, wrapped key, nonce, ciphertext and tag: no bit of the frame is unauthenticated."""
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


def test_record_context_rejects_keys_given_twice() -> None:
    with pytest.raises(ValueError, match="owner"):
        RecordContext(partition={"owner": "a"}, record={"owner": "b"})


@settings(max_examples=200, deadline=None)
@given(
    plaintext=st.binary(max_size=2048),
    record=st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda k: k not in {"table", "owner"}), st.text(max_size=40), max_size=4
    ),
)
def test_round_trip_any_bytes_any_context(plaintext: bytes, record: dict[str, str]) -> None:
    cipher = EnvelopeCipher(FakeKeyService())
    ctx = RecordContext(partition={"table": "t", "owner": "o"}, record=record)
    assert cipher.decrypt(cipher.encrypt(plaintext, ctx), ctx) == plaintext


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cache_reuses_a_data_key_per_partition_within_its_limits() -> None:
    kms = FakeKeyService()
    cipher = EnvelopeCipher(CachingKeyService(kms, CachePolicy(max_age_seconds=60, max_uses=1000)))
    for i in range(100):
        cipher.encrypt(b"x", context(f"m{i}"))
    assert kms.generated == 1  # 100 stores, one KMS call
    cipher.encrypt(b"x", context(owner="bob"))
    assert kms.generated == 2  # another owner is another partition, never the same key


def test_cache_max_uses_holds() -> None:
    kms = FakeKeyService()
    cipher = EnvelopeCipher(CachingKeyService(kms, CachePolicy(max_age_seconds=60, max_uses=10)))
    for i in range(25):
        cipher.encrypt(b"x", context(f"m{i}"))
    assert kms.generated == 3  # uses 1-10, 11-20, 21-25


def test_cache_max_age_holds() -> None:
    kms, clock = FakeKeyService(), Ticker()
    keys = CachingKeyService(kms, CachePolicy(max_age_seconds=5, max_uses=1000), clock=clock)
    cipher = EnvelopeCipher(keys)
    frame = cipher.encrypt(b"x", context())
    clock.now = 4.9
    cipher.encrypt(b"x", context())
    assert kms.generated == 1
    clock.now = 5.0
    cipher.encrypt(b"x", context())
    assert kms.generated == 2
    # An expired decryption entry is unwrapped again, and still decrypts.
    assert cipher.decrypt(frame, context()) == b"x"
    assert kms.decrypted == 1


def test_cache_is_bounded_in_entries() -> None:
    kms = FakeKeyService()
    keys = CachingKeyService(kms, CachePolicy(max_age_seconds=60, max_uses=10, max_entries=3))
    cipher = EnvelopeCipher(keys)
    for owner in ["a", "b", "c", "d", "a"]:
        cipher.encrypt(b"x", context(owner=owner))
    assert kms.generated == 5  # "a" was evicted by "d"


def test_decryption_reuses_unwrapped_keys() -> None:
    kms = FakeKeyService()
    writer = EnvelopeCipher(CachingKeyService(kms))
    frames = [writer.encrypt(b"x", context(f"m{i}")) for i in range(20)]
    reader = EnvelopeCipher(CachingKeyService(kms))  # a cold container
    for i, frame in enumerate(frames):
        assert reader.decrypt(frame, context(f"m{i}")) == b"x"
    assert kms.decrypted == 1


@pytest.mark.parametrize(
    "policy", [dict(max_age_seconds=0), dict(max_uses=0), dict(max_uses=2**32 + 1), dict(max_entries=0)]
)
def test_unsafe_cache_policies_are_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CachePolicy(**policy)  # type: ignore[arg-type]


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
    """Version, wrapped key, nonce, ciphertext or tag: a change anywhere, of any bits, is caught."""
    cipher = EnvelopeCipher(FakeKeyService())
    frame = cipher.encrypt(plaintext, context())
    tampered = bytearray(frame)
    tampered[int(position * len(frame))] ^= mask
    with pytest.raises(IntegrityError):
        cipher.decrypt(bytes(tampered), context())


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["table", "owner", "id", "attribute"]),
    value=st.text(max_size=30),
)
def test_any_change_to_the_context_fails(key: str, value: str) -> None:
    cipher = EnvelopeCipher(FakeKeyService())
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
