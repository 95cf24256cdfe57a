"""The offline-model benchmark's questions (benchmarks/data/memory_questions.json) are well formed:
each answer is in exactly one of the item's memories and not in the question, so a model can only
score by reading the memories. No model runs here."""

from __future__ import annotations

import json

import pytest

from benchmarks.offline_models import (
    FIXTURE,
    SECTION,
    Item,
    contains_word,
    hits_for,
    is_correct,
    is_strictly_correct,
    load_fixture,
    replace_section,
)

ITEMS = load_fixture()


def test_the_fixture_has_at_least_30_distinct_questions() -> None:
    assert len(ITEMS) >= 30
    assert len({item.id for item in ITEMS}) == len(ITEMS)
    assert len({item.question.lower() for item in ITEMS}) == len(ITEMS)


def test_every_item_has_the_fields_the_benchmark_reads() -> None:
    raw = json.loads(FIXTURE.read_text(encoding="utf-8"))["items"]
    for entry in raw:
        assert set(entry) == {"id", "question", "accept", "reject", "memories"}, entry["id"]
        assert entry["question"].strip().endswith("?"), entry["id"]
        assert entry["accept"] and all(isinstance(word, str) and word.strip() for word in entry["accept"])
        for memory in entry["memories"]:
            assert set(memory) == {"category", "content"}, entry["id"]
            assert memory["content"].strip() and memory["category"].strip()


@pytest.mark.parametrize("item", ITEMS, ids=[item.id for item in ITEMS])
def test_the_answer_is_in_exactly_one_memory_and_not_in_the_question(item: Item) -> None:
    # Like PAI's chat route (topK 4 by default): a few memories, of which the others are distractors.
    assert 2 <= len(item.memories) <= 4
    holding = [content for _, content in item.memories if any(contains_word(content, w) for w in item.accept)]
    assert len(holding) == 1, (item.id, holding)
    assert not any(contains_word(item.question, word) for word in item.accept), item.id


@pytest.mark.parametrize("item", ITEMS, ids=[item.id for item in ITEMS])
def test_the_distractor_answer_is_in_another_memory(item: Item) -> None:
    """'reject' spells (in one or more ways) what a distractor memory would answer: it is in a memory
    without the answer, and none of its words is an accepted one."""
    assert item.reject, item.id
    for word in item.reject:
        assert not any(contains_word(word, accepted) for accepted in item.accept), (item.id, word)
    assert any(
        any(contains_word(content, word) for word in item.reject)
        and not any(contains_word(content, w) for w in item.accept)
        for _, content in item.memories
    ), item.id


def test_the_answer_is_not_always_the_best_ranked_memory() -> None:
    positions = {
        next(i for i, (_, content) in enumerate(item.memories) if any(contains_word(content, w) for w in item.accept))
        for item in ITEMS
    }
    assert positions == {0, 1, 2, 3}


def test_matching_is_case_insensitive_on_whole_words() -> None:
    item = Item(id="x", question="How old is my son?", accept=("7", "seven"), reject=("10",), memories=())
    assert is_correct("He is SEVEN.", item)
    assert is_correct("Leo is 7 years old.", item)
    assert not is_correct("He turned 17 in May.", item)
    assert not is_strictly_correct("Leo is 7 and Mia is 10.", item)
    assert is_strictly_correct("Your son Leo is 7.", item)


def test_hits_are_the_memories_in_their_order_best_first() -> None:
    item = ITEMS[0]
    hits = hits_for(item)
    assert [(hit.memory.category, hit.memory.content) for hit in hits] == list(item.memories)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert len({hit.memory.id for hit in hits}) == len(hits)


def test_the_results_section_is_replaced_and_the_rest_kept() -> None:
    document = f"# Results\n\n## Search\n\nsearch table\n\n{SECTION}\n\nold\n\n## Cold start\n\ncold table\n"
    updated = replace_section(document, SECTION, f"{SECTION}\n\nnew table\n")
    assert (
        updated == f"# Results\n\n## Search\n\nsearch table\n\n{SECTION}\n\nnew table\n\n## Cold start\n\ncold table\n"
    )
    appended = replace_section("# Results\n\n## Search\n\nsearch table\n", SECTION, f"{SECTION}\n\nnew\n")
    assert appended == f"# Results\n\n## Search\n\nsearch table\n\n{SECTION}\n\nnew\n"
