"""List cursors of the DynamoDB repository: only a cursor this API handed out, for the same kind of
listing, reaches DynamoDB; anything else is a 400 naming `cursor`, never the 503 that an emulator's
500 (or DynamoDB's ValidationException) on a forged start key used to become.

The production repository runs behind the real handler, with a client that must not be called (a
refusal happens before any call) or one that answers as DynamoDB would."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from pai_core.adapters.dynamodb_cursors import CursorPosition, decode_cursor, encode_cursor
from pai_core.errors import InvalidInput
from pai_core.services import MemoryService
from tests.fakes import FakeContainer, dynamo_memories, fake_cipher
from tests.unit.test_handlers import ClientMustNotBeCalled, assert_bad_request, assert_internal_error, memory

pytestmark = pytest.mark.usefixtures("fake_container")

ID = "0192f1c2a3b40123456789abcdef0123"  # a time-ordered id, as pai_core.ids makes them
TS = 1_732_536_000_000


def b64(raw: bytes | str) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def cursor_of(fields: Any) -> str:
    return b64(json.dumps(fields, separators=(",", ":")))


def install(fake_container: FakeContainer, client: Any) -> None:
    repository = dynamo_memories(client, "pai-knowledge-test", fake_cipher())
    fake_container.memories = MemoryService(repository, fake_container.embedder, fake_container.clock)


def listing(cursor: str, category: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "list", "cursor": cursor}
    if category is not None:
        body["category"] = category
    return body


FORGED = [
    # The issue's own: a boolean where the timestamp goes, with a category.
    pytest.param(cursor_of({"id": "x", "ts": True}), "pets", id="issue-ts-true-with-category"),
    pytest.param(cursor_of({"id": ID, "ts": True}), "pets", id="ts-true"),
    pytest.param(cursor_of({"id": ID, "ts": False}), "pets", id="ts-false"),
    pytest.param(cursor_of({"id": ID, "ts": "1732536000000"}), "pets", id="ts-string"),
    pytest.param(cursor_of({"id": ID, "ts": 1.5}), "pets", id="ts-float"),
    pytest.param(cursor_of({"id": ID, "ts": 1e300}), "pets", id="ts-huge-float"),
    pytest.param(b64('{"id":"' + ID + '","ts":1e999}'), "pets", id="ts-infinite"),
    pytest.param(cursor_of({"id": ID, "ts": -1}), "pets", id="ts-negative"),
    pytest.param(cursor_of({"id": ID, "ts": 2**48}), "pets", id="ts-past-the-id-range"),
    pytest.param(cursor_of({"id": ID, "ts": 10**400}), "pets", id="ts-enormous-int"),
    pytest.param(cursor_of({"id": ID, "ts": None}), "pets", id="ts-null"),
    pytest.param(cursor_of({"id": ID, "ts": [TS]}), "pets", id="ts-array"),
    pytest.param(cursor_of({"id": ID}), "pets", id="owner-listing-cursor-in-a-category-listing"),
    pytest.param(cursor_of({"id": ID, "ts": TS}), None, id="category-cursor-in-the-owner-listing"),
    pytest.param(cursor_of({"id": ID, "ts": TS, "owner": "someone-else"}), "pets", id="another-users-shape"),
    pytest.param(cursor_of({"id": ID, "owner": "someone-else"}), None, id="owner-key-added"),
    pytest.param(cursor_of({"id": ID, "ownerCategory": "x#pets", "timestamp": TS}), "pets", id="raw-dynamodb-key"),
    pytest.param(cursor_of({"id": {"S": ID}}), None, id="id-attribute-value"),
    pytest.param(cursor_of({"id": ID.upper()}), None, id="id-uppercase"),
    pytest.param(cursor_of({"id": ID[:-1]}), None, id="id-31-chars"),
    pytest.param(cursor_of({"id": ID + "0"}), None, id="id-33-chars"),
    pytest.param(cursor_of({"id": "x"}), None, id="id-not-ours"),
    pytest.param(cursor_of({"id": "a#b" + ID[3:]}), None, id="id-with-hash"),
    pytest.param(cursor_of({"id": ID, "pad": "x" * 1200}), None, id="huge-within-the-length-limit"),
    pytest.param(cursor_of({"id": ID}) + "==", None, id="padded"),
    pytest.param(b64(json.dumps({"id": ID})), None, id="not-compact-json"),
    pytest.param(b64('{"id":"' + ID + '","id":"' + ID + '"}'), None, id="duplicate-keys"),
    pytest.param(cursor_of({"id": ID}).replace("_", "/").replace("-", "+") + "/", None, id="standard-alphabet"),
    pytest.param(cursor_of({"id": ID}) + "\n", None, id="trailing-newline"),
    pytest.param(cursor_of([ID]), None, id="array"),
    pytest.param(cursor_of(ID), None, id="json-string"),
    pytest.param(b64("[" * 5000 + "]" * 5000), None, id="deeply-nested"),
    pytest.param("A" * 2048, None, id="longest-allowed-garbage"),
]


@pytest.mark.parametrize(("cursor", "category"), FORGED)
def test_a_forged_cursor_is_400_naming_cursor_before_any_dynamodb_call(
    fake_container: FakeContainer, cursor: str, category: str | None
) -> None:
    install(fake_container, ClientMustNotBeCalled())
    assert_bad_request(memory(listing(cursor, category)), "cursor", "invalid_request")


@pytest.mark.parametrize("cursor", ["A" * 2049, "A" * 100_000])
def test_a_cursor_over_the_length_limit_is_400_naming_cursor(fake_container: FakeContainer, cursor: str) -> None:
    install(fake_container, ClientMustNotBeCalled())
    assert_bad_request(memory(listing(cursor, None)), "cursor")


class RecordingQueryClient:
    """Answers Query as DynamoDB does, or with the error it is given; records the requests."""

    def __init__(self, error: ClientError | None = None) -> None:
        self.error = error
        self.queries: list[dict[str, Any]] = []

    def query(self, **request: Any) -> dict[str, Any]:
        self.queries.append(request)
        if self.error is not None:
            raise self.error
        return {"Items": [], "Count": 0}


def validation_exception() -> ClientError:
    response: Any = {
        "Error": {"Code": "ValidationException", "Message": "The provided starting key is invalid"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, "Query")


@pytest.mark.parametrize(
    ("position", "category"),
    [(CursorPosition(ID), None), (CursorPosition(ID, TS), "pets")],
    ids=["owner-listing", "category-listing"],
)
def test_a_cursor_of_ours_becomes_the_start_key_around_the_callers_own_partition(
    fake_container: FakeContainer, position: CursorPosition, category: str | None
) -> None:
    client = RecordingQueryClient()
    install(fake_container, client)
    reply = memory(listing(encode_cursor(position), category))
    assert reply.status == 200, reply
    owner = fake_container.settings.owner
    expected: dict[str, Any] = {"owner": {"S": owner}, "id": {"S": ID}}
    if category is not None:
        expected |= {"ownerCategory": {"S": f"{owner}#{category}"}, "timestamp": {"N": str(TS)}}
    assert [query["ExclusiveStartKey"] for query in client.queries] == [expected]


def test_dynamodb_refusing_the_start_key_is_a_400_naming_cursor(fake_container: FakeContainer) -> None:
    install(fake_container, RecordingQueryClient(validation_exception()))
    reply = memory(listing(encode_cursor(CursorPosition(ID, TS)), "pets"))
    assert_bad_request(reply, "cursor", "invalid_request")
    assert reply.status != 503


def test_a_validation_exception_without_a_cursor_is_our_bug_not_the_callers(fake_container: FakeContainer) -> None:
    install(fake_container, RecordingQueryClient(validation_exception()))
    assert_internal_error(memory({"action": "list", "category": "pets"}))


@settings(max_examples=300, deadline=None)
@given(
    memory_id=st.text("0123456789abcdef", min_size=32, max_size=32),
    ts=st.none() | st.integers(0, 2**48 - 1),
)
def test_every_cursor_encode_makes_decodes_to_its_position(memory_id: str, ts: int | None) -> None:
    position = CursorPosition(memory_id, ts)
    assert decode_cursor(encode_cursor(position), category_listing=ts is not None) == position


@settings(max_examples=500, deadline=None)
@given(cursor=st.text(max_size=300) | st.binary(max_size=200).map(b64), category_listing=st.booleans())
def test_any_other_text_is_invalid_input_naming_cursor(cursor: str, category_listing: bool) -> None:
    try:
        position = decode_cursor(cursor, category_listing=category_listing)
    except InvalidInput as refused:
        assert refused.field == "cursor"
    else:  # hypothesis found a real cursor: it must be exactly what encode_cursor makes of it
        assert encode_cursor(position) == cursor
