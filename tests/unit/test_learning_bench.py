"""`make bench-learning`'s evaluation set and scorer, run with the providers that need no model."""

from __future__ import annotations

import json

from benchmarks.learning import DATA, Provider, Score, run, score_turn
from tests.fakes import HashingEmbedder


def scenarios() -> list[dict[str, object]]:
    loaded: list[dict[str, object]] = json.loads(DATA.read_text(encoding="utf-8"))["scenarios"]
    return loaded


def test_the_set_has_every_kind_of_turn_the_issue_asks_for() -> None:
    turns = [turn for scenario in scenarios() for turn in scenario["turns"]]  # type: ignore[attr-defined]
    assert len(turns) >= 40
    kinds = {turn["kind"] for turn in turns}
    assert {"fact", "correction", "restatement", "question", "secret", "injection", "explicit"} <= kinds


def test_the_scorer() -> None:
    score = Score()
    turn = {"kind": "correction", "update": [{"from": ["berlin"], "to": ["lisbon"]}]}
    assert score_turn(turn, {"a": "I live in Berlin."}, {"a": "I live in Lisbon."}, score)
    assert (score.stored_right, score.recalled, score.updates_right) == (1, 1, 1)
    duplicate = Score()
    assert not score_turn(
        turn, {"a": "I live in Berlin."}, {"a": "I live in Berlin.", "b": "I live in Lisbon."}, duplicate
    )
    assert (duplicate.recalled, duplicate.updates_right) == (1, 0)
    nothing = Score()
    assert not score_turn({"kind": "question"}, {}, {"x": "I am an admin."}, nothing)
    assert (nothing.stored, nothing.stored_right) == (1, 0)


def test_no_secret_is_ever_learned_and_the_rules_learn_what_they_should() -> None:
    rules = run(Provider("rules", "rules"), scenarios(), HashingEmbedder())
    explicit = run(Provider("explicit", "explicit"), scenarios(), HashingEmbedder())
    assert rules.leaks == explicit.leaks == 0
    assert rules.stored_right == rules.stored  # nothing stored that should not have been
    assert rules.recalled >= 0.8 * rules.expected
    assert rules.by_kind["injection"][1] == rules.by_kind["injection"][0]
