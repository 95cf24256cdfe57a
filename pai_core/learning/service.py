"""Learning from chat: explicit "remember that ..." / "forget that ..." (answered in the turn itself)
and, off the request path, the durable facts of a user's turn, each consolidated against the most
similar learned memories of that user: added, updating one (its old wording kept in its history
with the reason), or nothing when it is already known.

Only the user's own message is read, as it was stored in the conversations table: never the
assistant's reply, retrieved memories or document passages. Sentences that hold a secret are
dropped before any rule or model sees them; a fact a model proposes is kept only when it is
grounded in the user's words, holds no secret and is not an instruction.

A turn is learned at most once: everything is decided (searches, the model's one call) before
anything is written, and a marker per turn, set once its writes are done, turns a redelivered job
into nothing. Should a write fail half-way, the job is retried and decided again from what is
stored then, where what did land counts as known (a restatement changes nothing)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from pai_core.errors import RateLimited
from pai_core.learning.jobs import LearningJob
from pai_core.learning.model import MAX_KNOWN, StructuredModel, extract
from pai_core.learning.rules import (
    Candidate,
    ExplicitCommand,
    explicit_command,
    grounded,
    is_instruction,
    normalized,
    overlap,
    redacted,
    rule_candidates,
    slot_of,
)
from pai_core.learning.secrets import holds_secret
from pai_core.limits import UsageLimits
from pai_core.models import Memory, Turn
from pai_core.ports import NO_METRICS, Clock, ConversationRepository, Metrics, UsageCounters
from pai_core.services.memories import MemoryService

log = logging.getLogger(__name__)

# "explicit": only "remember that ..." / "forget that ..."; "rules": those and the rule-based
# extractor; "model": those and one structured call to the configured model per turn.
ExtractionMode = Literal["explicit", "rules", "model"]
EXTRACTION_MODES: tuple[ExtractionMode, ...] = ("explicit", "rules", "model")
LEARNED_CATEGORY = "general"
UPDATE_REASON = "corrected in chat"
SIMILAR_LEARNED = 8
# A forget matches the learned memory sharing at least this much of what the user named.
FORGET_OVERLAP = 0.5
# Markers of learned turns outlive the turns (24 h) and any redelivery.
MARKER_LIFETIME = timedelta(days=2)


@dataclass(frozen=True)
class ExplicitOutcome:
    reply: str
    memory_id: str | None = None


@dataclass
class TurnOutcome:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    dropped: int = 0  # proposed by the model, refused here (secret, instruction, not the user's words)
    tokens: int = 0
    skipped: str | None = None  # why nothing was read: "learned", "no_turn", "explicit", "budget"


@dataclass(frozen=True)
class _Planned:
    text: str
    memory_id: str | None  # None: a new memory


def marker_name(job: LearningJob) -> str:
    return f"learned#{job.owner}#{job.session_id}#{job.turn_micros}"


class LearningService:
    def __init__(
        self,
        memories: MemoryService,
        turns: ConversationRepository,
        clock: Clock,
        *,
        mode: ExtractionMode,
        model: StructuredModel | None = None,
        limits: UsageLimits | None = None,
        markers: UsageCounters | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        if mode == "model" and model is None:
            raise ValueError("model-based learning needs a model")
        self._memories = memories
        self._turns = turns
        self._clock = clock
        self.mode = mode
        self._model = model
        self._limits = limits
        self._markers = markers
        self._metrics = metrics

    # -- in the chat turn: explicit commands ------------------------------------------------------

    def explicit(self, owner: str, session_id: str, command: ExplicitCommand) -> ExplicitOutcome:
        if command.kind == "forget":
            return self._forget(owner, command.text)
        if holds_secret(command.text):
            return ExplicitOutcome(
                "I don't keep passwords, keys, tokens, card or account numbers, so I haven't stored that."
            )
        if is_instruction(command.text) or not command.text:
            return ExplicitOutcome("I only remember facts about you, not instructions, so I haven't stored that.")
        known = self._similar_learned(owner, command.text)
        planned = self._plan(Candidate(command.text, slot_of(command.text)), known)
        if planned is None:
            return ExplicitOutcome(f"I already knew that: {command.text}")
        memory_id = self._apply(owner, session_id, planned)
        if planned.memory_id is not None:
            return ExplicitOutcome(f"Got it, I've updated what I knew: {planned.text}", memory_id)
        return ExplicitOutcome(f"Got it, I'll remember that: {planned.text}", memory_id)

    def _forget(self, owner: str, text: str) -> ExplicitOutcome:
        best: Memory | None = None
        best_share = 0.0
        for memory in self._similar_learned(owner, text):
            share = overlap(text, memory.content)
            if share > best_share:
                best, best_share = memory, share
        if best is None or best_share < FORGET_OVERLAP:
            return ExplicitOutcome("I couldn't find anything I had learned about that, so there was nothing to forget.")
        self._memories.forget(owner, best.id)
        return ExplicitOutcome(f"Done, I've forgotten that: {best.content}", best.id)

    # -- off the request path: one user turn ------------------------------------------------------

    def learn_turn(self, job: LearningJob) -> TurnOutcome:
        outcome = TurnOutcome()
        if self._markers is not None and self._markers.get(marker_name(job)) > 0:
            outcome.skipped = "learned"
            return outcome
        turn = self._user_turn(job)
        if turn is None:
            outcome.skipped = "no_turn"
            return outcome
        message = turn.content
        if explicit_command(message) is not None:
            outcome.skipped = "explicit"  # answered in the turn itself
        elif self.mode == "rules":
            self._learn_by_rules(job, message, outcome)
        elif self.mode == "model":
            self._learn_by_model(job, message, outcome)
        if self._markers is not None and outcome.skipped != "budget":
            self._markers.add(marker_name(job), 1, expires_at=self._clock.now() + MARKER_LIFETIME)
        return outcome

    def _user_turn(self, job: LearningJob) -> Turn | None:
        turns = self._turns.recent(job.owner, job.session_id, now=self._clock.now(), limit=50)
        for turn in turns:
            if turn.role == "user" and abs((turn.at - job.turn_at).total_seconds()) < 0.001:
                return turn
        return None

    def _learn_by_rules(self, job: LearningJob, message: str, outcome: TurnOutcome) -> None:
        plans: list[_Planned] = []
        for candidate in rule_candidates(message):
            planned = self._plan(candidate, self._similar_learned(job.owner, candidate.text))
            if planned is None:
                outcome.unchanged += 1
            elif planned.memory_id is None or all(p.memory_id != planned.memory_id for p in plans):
                plans.append(planned)
        self._apply_all(job, plans, outcome)

    def _learn_by_model(self, job: LearningJob, message: str, outcome: TurnOutcome) -> None:
        assert self._model is not None
        visible = redacted(message)
        if not visible.strip():
            return
        if self._limits is not None:
            try:
                self._limits.ensure_token_budget(job.owner)
            except RateLimited:
                log.info("learning: the user's token budget for today is spent; turn not read")
                outcome.skipped = "budget"
                return
        known = self._similar_learned(job.owner, visible)[:MAX_KNOWN]
        extraction = extract(self._model, visible, [memory.content for memory in known])
        outcome.tokens = extraction.usage.input_tokens + extraction.usage.output_tokens
        self._metrics.count("ModelInputTokens", extraction.usage.input_tokens, purpose="learning")
        self._metrics.count("ModelOutputTokens", extraction.usage.output_tokens, purpose="learning")
        if self._limits is not None:
            self._limits.record_tokens(job.owner, outcome.tokens)
        plans: list[_Planned] = []
        for decision in extraction.decisions:
            fact = decision.fact
            if holds_secret(fact) or is_instruction(fact) or not grounded(fact, visible):
                outcome.dropped += 1
                continue
            if decision.action == "none":
                outcome.unchanged += 1
                continue
            if decision.action == "update" and decision.replaces is not None:
                target = known[decision.replaces]
                if normalized(target.content) == normalized(fact):
                    outcome.unchanged += 1
                elif all(p.memory_id != target.id for p in plans):
                    plans.append(_Planned(fact, target.id))
                continue
            # An "add" the model did not see was known already (restated in other words) changes nothing.
            if any(normalized(m.content) == normalized(fact) for m in self._similar_learned(job.owner, fact)):
                outcome.unchanged += 1
            else:
                plans.append(_Planned(fact, None))
        self._apply_all(job, plans, outcome)

    # -- deciding and writing ---------------------------------------------------------------------

    def _similar_learned(self, owner: str, text: str) -> list[Memory]:
        hits = self._memories.search(owner, text, top=SIMILAR_LEARNED)
        return [hit.memory for hit in hits if hit.memory.origin == "learned"]

    @staticmethod
    def _plan(candidate: Candidate, known: Sequence[Memory]) -> _Planned | None:
        """Nothing when a known fact says the same; an update of the known fact of the same slot
        with another value; else a new memory."""
        key = normalized(candidate.text)
        for memory in known:
            if normalized(memory.content) == key:
                return None
            if overlap(candidate.text, memory.content) >= 0.99 and overlap(memory.content, candidate.text) >= 0.99:
                return None
        if candidate.slot is not None:
            for memory in known:
                if slot_of(memory.content) == candidate.slot:
                    return _Planned(candidate.text, memory.id)
        return _Planned(candidate.text, None)

    def _apply(self, owner: str, session_id: str, planned: _Planned) -> str:
        if planned.memory_id is not None:
            return self._memories.update(owner, planned.memory_id, content=planned.text, reason=UPDATE_REASON).id
        memory = self._memories.remember(
            owner,
            content=planned.text,
            category=LEARNED_CATEGORY,
            metadata={},
            origin="learned",
            source_session=session_id,
        )
        return memory.id

    def _apply_all(self, job: LearningJob, plans: Sequence[_Planned], outcome: TurnOutcome) -> None:
        for planned in plans:
            memory_id = self._apply(job.owner, job.session_id, planned)
            (outcome.updated if planned.memory_id is not None else outcome.added).append(memory_id)
