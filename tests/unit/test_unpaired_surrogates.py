"""A string holding an unpaired surrogate (the JSON escape `\\ud800` or `\\udc00` alone) is not text:
every route answers 400 naming the field, before anything reads, stores or embeds it (shared/API.md,
"Common"). Such a string cannot be encoded as UTF-8, so a request that got past validation would
fail deep inside (the tokenizer, the metadata size check, the chat token count) as a 500.

Bodies are built as raw JSON text with the escapes in it, as a client sends them; the handlers are
called with the recorded API Gateway event (tests/unit/test_handlers.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import handlers.chat
import handlers.memory
import handlers.search
from handlers._http import first_non_text
from pai_core.bootstrap import set_container
from tests.fakes import FakeContainer
from tests.unit.test_handlers import Reply, assert_bad_request, invoke_raw

LONE = ("\\ud800", "\\udc00", "\\udbff", "\\udfff")  # as JSON escapes: high and low halves, both ends

# (handler, route, a valid body, the string fields of that body as paths: where a surrogate goes)
ROUTES: list[tuple[ModuleType, str, dict[str, Any]]] = [
    (
        handlers.memory,
        "POST /memory",
        {
            "action": "store",
            "content": "My cat is called Miso.",
            "category": "pets",
            "metadata": {"source": "note", "tags": ["cat", "home"], "nested": {"deep": ["x", {"k": "v"}]}},
        },
    ),
    (handlers.memory, "POST /memory", {"action": "retrieve", "id": "0123456789abcdef0123456789abcdef"}),
    (handlers.memory, "POST /memory", {"action": "delete", "id": "0123456789abcdef0123456789abcdef"}),
    (handlers.memory, "POST /memory", {"action": "list", "category": "pets", "cursor": "eyJpZCI6ImEifQ"}),
    (handlers.search, "POST /search", {"query": "what is my cat called?", "category": "pets"}),
    (handlers.chat, "POST /chat", {"message": "What is my cat called?", "sessionId": "s-1"}),
    (handlers.memory, "POST /account", {"action": "forget", "confirm": "forget everything"}),
    (handlers.memory, "POST /account", {"action": "export", "somethingUnknown": "ignored when it is text"}),
    (
        handlers.memory,
        "POST /memory",
        {
            "action": "store_many",
            "items": [{"content": "first"}, {"content": "second", "category": "pets", "metadata": {"tags": ["a"]}}],
        },
    ),
    (
        handlers.memory,
        "POST /memory",
        {"action": "update", "id": "0123456789abcdef0123456789abcdef", "content": "new", "metadata": {"k": "v"}},
    ),
    (handlers.memory, "POST /memory", {"action": "history", "id": "0123456789abcdef0123456789abcdef"}),
    (handlers.memory, "POST /memory", {"action": "list", "origin": "import"}),
    (handlers.memory, "POST /account", {"action": "export", "cursor": "eyJ0IjpudWxsfQ"}),
]


def string_paths(value: Any, path: str = "") -> Iterator[tuple[str, tuple[str | int, ...]]]:
    """(the field name the API reports, the keys leading to it) for every string value in `value`."""
    yield from _paths(value, path, ())


def _paths(value: Any, path: str, keys: tuple[str | int, ...]) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    if isinstance(value, str):
        yield path, keys
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, f"{path}.{key}" if path else key, (*keys, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, f"{path}[{index}]", (*keys, index))


CASES = [
    pytest.param(module, route, body, field, keys, id=f"{route}-{body.get('action', '')}-{field}")
    for module, route, body in ROUTES
    for field, keys in string_paths(body)
]

PLACEHOLDER = "@@SURROGATE@@"


def with_surrogate(body: dict[str, Any], keys: tuple[str | int, ...], escape: str, *, where: str = "end") -> str:
    """The body as JSON text, the string at `keys` carrying `escape` (raw JSON escape text)."""
    copy = json.loads(json.dumps(body))
    target: Any = copy
    for key in keys[:-1]:
        target = target[key]
    original = target[keys[-1]]
    target[keys[-1]] = {"start": PLACEHOLDER + original, "end": original + PLACEHOLDER, "alone": PLACEHOLDER}[where]
    return json.dumps(copy).replace(PLACEHOLDER, escape)


def call(module: ModuleType, route: str, raw: str) -> tuple[Reply, FakeContainer]:
    container = FakeContainer()
    set_container(container)  # type: ignore[arg-type]
    try:
        return invoke_raw(module, route, raw), container
    finally:
        set_container(None)


def assert_nothing_happened(container: FakeContainer) -> None:
    assert container.memory_repository.items == {}
    assert container.conversations.turns == {}
    assert container.embedder.calls == 0
    assert container.chat_model.prompts == []


@pytest.mark.parametrize(("module", "route", "body", "field", "keys"), CASES)
@pytest.mark.parametrize("escape", LONE)
def test_every_string_field_with_an_unpaired_surrogate_is_400_naming_it(
    module: ModuleType, route: str, body: dict[str, Any], field: str, keys: tuple[str | int, ...], escape: str
) -> None:
    reply, container = call(module, route, with_surrogate(body, keys, escape))
    assert_bad_request(reply, field, "invalid_request")
    assert_nothing_happened(container)


@pytest.mark.parametrize(("module", "route", "body"), [pytest.param(*route, id=route[1]) for route in ROUTES])
def test_a_key_with_an_unpaired_surrogate_is_400_naming_it_escaped(
    module: ModuleType, route: str, body: dict[str, Any]
) -> None:
    raw = json.dumps({**body, PLACEHOLDER: "x"}).replace(PLACEHOLDER, "key\\ud800")
    reply, container = call(module, route, raw)
    assert_bad_request(reply, "key\\ud800", "invalid_request")
    assert_nothing_happened(container)


def test_a_metadata_key_with_an_unpaired_surrogate_is_400_naming_its_path() -> None:
    raw = json.dumps({"action": "store", "content": "x", "metadata": {"ok": 1, PLACEHOLDER: 2}})
    reply, container = call(handlers.memory, "POST /memory", raw.replace(PLACEHOLDER, "\\udc00"))
    assert_bad_request(reply, "metadata.\\udc00", "invalid_request")
    assert_nothing_happened(container)


@pytest.mark.parametrize("escape", LONE)
@pytest.mark.parametrize("where", ["start", "alone"])
def test_content_starting_with_or_made_of_a_surrogate_is_refused(escape: str, where: str) -> None:
    body = {"action": "store", "content": "Miso"}
    reply, _ = call(handlers.memory, "POST /memory", with_surrogate(body, ("content",), escape, where=where))
    assert_bad_request(reply, "content", "invalid_request")


def test_a_proper_pair_is_text_and_stored_as_the_character_it_encodes() -> None:
    raw = '{"action": "store", "content": "cat \\ud83d\\ude3a", "metadata": {"\\ud83d\\ude00": "\\ud83d\\ude3a"}}'
    container = FakeContainer()
    set_container(container)  # type: ignore[arg-type]
    try:
        stored = invoke_raw(handlers.memory, "POST /memory", raw)
        assert stored.status == 201, stored
        fetched = invoke_raw(
            handlers.memory, "POST /memory", json.dumps({"action": "retrieve", "id": stored.body["id"]})
        )
    finally:
        set_container(None)
    assert fetched.body["content"] == "cat 😺"
    assert fetched.body["metadata"] == {"😀": "😺"}


def test_the_reversed_pair_is_two_unpaired_surrogates() -> None:
    reply, _ = call(handlers.search, "POST /search", '{"query": "\\ude3a\\ud83d"}')
    assert_bad_request(reply, "query", "invalid_request")


def test_deep_nesting_is_walked_without_recursion() -> None:
    depth = 5000  # deeper than the interpreter's recursion limit
    nested: Any = "\ud800"
    for _ in range(depth):
        nested = [nested]
    assert first_non_text({"metadata": nested}) == "metadata" + "[0]" * depth


# -- properties ------------------------------------------------------------------------------------

# Text as hypothesis makes it: any code point but the surrogates (its default).
TEXT = st.text(max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)


@settings(max_examples=200, deadline=None)
@given(route=st.sampled_from(ROUTES), extra=st.dictionaries(TEXT, JSON_VALUES, max_size=3), data=st.data())
def test_a_surrogate_anywhere_in_any_body_is_a_400_naming_where(
    route: tuple[ModuleType, str, dict[str, Any]], extra: dict[str, Any], data: st.DataObject
) -> None:
    module, name, base = route
    body = json.loads(json.dumps({**extra, **base}))  # a copy: the strings are changed in place below
    paths = list(string_paths(body))
    field, keys = data.draw(st.sampled_from(paths), label="field")
    surrogate = data.draw(SURROGATES, label="surrogate")
    prefix, suffix = data.draw(TEXT, label="before"), data.draw(TEXT, label="after")
    target: Any = body
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = prefix + surrogate + suffix
    # json.dumps escapes the lone surrogate as \udXXX, exactly as a client's JSON encoder would.
    reply, container = call(module, name, json.dumps(body))
    assert_bad_request(reply, field, "invalid_request")
    assert_nothing_happened(container)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(TEXT, JSON_VALUES, max_size=5), ascii_only=st.booleans())
def test_text_without_surrogates_is_never_refused_as_not_text(body: dict[str, Any], ascii_only: bool) -> None:
    # ensure_ascii escapes astral characters as surrogate pairs: pairs are text.
    decoded = json.loads(json.dumps(body, ensure_ascii=ascii_only))
    assert first_non_text(decoded) is None
