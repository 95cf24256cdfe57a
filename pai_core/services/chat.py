"""The chat use case: remember the turn, recall history and memories, ask the model, remember the reply."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pai_core.errors import InvalidInput, UpstreamInvalidResponse, UpstreamUnavailable
from pai_core.learning.jobs import LearningJob, LearningQueue
from pai_core.learning.rules import explicit_command
from pai_core.limits import UsageLimits
from pai_core.models import (
    ChatMessage,
    ChatReply,
    Completion,
    LearningState,
    SearchHit,
    Source,
    TextDelta,
    Turn,
    Usage,
)
from pai_core.ports import NO_METRICS, ChatModel, Clock, ConversationRepository, Metrics
from pai_core.search.fusion import CHAT_RELEVANCE_FLOOR
from pai_core.services.memories import MemoryService
from pai_core.services.prompt import SYSTEM_PROMPT, TOKENS_PER_MESSAGE, build_messages
from pai_core.services.retrieval import Hit, RetrievalService

if TYPE_CHECKING:
    from pai_core.learning.service import LearningService

log = logging.getLogger(__name__)


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class _Prepared:
    owner: str
    session_id: str
    asked_at: datetime
    messages: list[ChatMessage]
    hits: list[Hit]
    user_turn_at: datetime  # when the user's turn was stored (a retry's is the first attempt's)


class ChatService:
    def __init__(
        self,
        conversations: ConversationRepository,
        memories: MemoryService,
        model: ChatModel,
        clock: Clock,
        *,
        history_max_turns: int,
        max_output_tokens: int,
        limits: UsageLimits | None = None,
        retrieval: RetrievalService | None = None,
        learning: LearningService | None = None,
        learning_queue: LearningQueue | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """`retrieval`: memories and document passages together; without it, memories alone.
        `learning`: None when the deployment does not learn from chat; its explicit commands are
        answered in the turn, and other turns go to `learning_queue` (read off the request path).
        `metrics`: the model's input and output tokens of each reply, counted."""
        self._conversations = conversations
        self._retrieval = retrieval
        self._memories = memories
        self._model = model
        self._clock = clock
        self._history_max_turns = history_max_turns
        self._max_output_tokens = max_output_tokens
        self._limits = limits
        self._learning = learning
        self._learning_queue = learning_queue
        self._metrics = metrics

    def chat(
        self, owner: str, *, message: str, session_id: str | None, use_memory: bool, top_k: int, learn: bool = True
    ) -> ChatReply:
        prepared = self._prepare(owner, message=message, session_id=session_id, use_memory=use_memory, top_k=top_k)
        learn = learn and self._learning is not None
        answered = self._explicit_command(prepared, message) if learn else None
        if answered is not None:
            return self._finish(prepared, answered, learning="queued")
        completion = self._model.complete(prepared.messages, max_tokens=self._max_output_tokens)
        self._charge(owner, completion.usage.input_tokens + completion.usage.output_tokens)
        self._count_tokens(completion.usage)
        return self._finish(prepared, completion, learning=self._queue_learning(prepared) if learn else "off")

    def chat_stream(
        self,
        owner: str,
        *,
        message: str,
        session_id: str | None,
        use_memory: bool,
        top_k: int,
        learn: bool = True,
    ) -> Iterator[TextDelta | ChatReply]:
        """The reply as it is produced, then the whole ChatReply. Everything that can refuse the
        request (validation, storage) happens before the first item, so a caller can still answer
        with a plain error status; a failure after that ends the stream with the exception, and
        no assistant turn is stored."""
        prepared = self._prepare(owner, message=message, session_id=session_id, use_memory=use_memory, top_k=top_k)
        learn = learn and self._learning is not None
        answered = self._explicit_command(prepared, message) if learn else None
        if answered is not None:
            confirmation = answered

            def confirm() -> Iterator[TextDelta | ChatReply]:
                yield TextDelta(confirmation.text)
                yield self._finish(prepared, confirmation, learning="queued")

            return confirm()
        # Counted now: once the stream has started, the model may be busy with it (llama.cpp's lock).
        prompt_tokens = sum(self._model.count_tokens(m.content) + TOKENS_PER_MESSAGE for m in prepared.messages)

        def produce() -> Iterator[TextDelta | ChatReply]:
            pieces = 0
            charged = False
            try:
                for item in self._model.stream(prepared.messages, max_tokens=self._max_output_tokens):
                    if isinstance(item, Completion):
                        self._charge(owner, item.usage.input_tokens + item.usage.output_tokens)
                        self._count_tokens(item.usage)
                        charged = True
                        yield self._finish(prepared, item, learning=self._queue_learning(prepared) if learn else "off")
                        return
                    pieces += 1
                    yield item
                raise UpstreamInvalidResponse("the model's stream ended without a reply")
            finally:
                if not charged and pieces:
                    # A stream that broke off (or whose reader left) was still paid for as far as
                    # it went; providers stream about one token per piece.
                    self._charge(owner, prompt_tokens + pieces)

        return produce()

    def _prepare(self, owner: str, *, message: str, session_id: str | None, use_memory: bool, top_k: int) -> _Prepared:
        budget = self._model.context_tokens - self._max_output_tokens
        message_tokens = self._model.count_tokens(message)
        fixed = self._model.count_tokens(SYSTEM_PROMPT) + 2 * TOKENS_PER_MESSAGE
        if message_tokens + fixed > budget:
            # Refuse before anything is stored rather than silently cutting what the user said.
            raise InvalidInput(
                f"'message' is {message_tokens} tokens; the model '{self._model.name}' accepts at most "
                f"{budget - fixed} in one message",
                field="message",
                code="message_too_long",
            )
        if self._limits is not None:
            # Before anything is stored: a refused turn leaves no trace to be retried.
            self._limits.ensure_token_budget(owner)
        session = session_id or new_session_id()
        asked_at = self._clock.now()
        history = self._conversations.recent(owner, session, now=asked_at, limit=self._history_max_turns)
        user_turn_at = asked_at
        if history and history[-1].role == "user" and history[-1].content == message:
            # The same message again after an attempt that got no reply: a retry. Its turn is
            # already stored, so it is neither stored twice nor put in the prompt twice.
            user_turn_at = history[-1].at
            history = history[:-1]
        else:
            self._conversations.append(owner, session, Turn(role="user", content=message, at=asked_at))

        # Only material relevant to the message reaches the prompt: without the floor, the top few
        # ride along whatever they score.
        hits: list[Hit] = []
        if use_memory and top_k > 0:
            if self._retrieval is not None:
                hits = self._retrieval.search(owner, message, top=top_k, min_score=CHAT_RELEVANCE_FLOOR)
            else:
                hits = list(self._memories.search(owner, message, top=top_k, min_score=CHAT_RELEVANCE_FLOOR))
        messages, used_hits = build_messages(
            message=message, history=history, hits=hits, count_tokens=self._model.count_tokens, budget=budget
        )
        return _Prepared(
            owner=owner,
            session_id=session,
            asked_at=asked_at,
            messages=messages,
            hits=used_hits,
            user_turn_at=user_turn_at,
        )

    def _charge(self, owner: str, tokens: int) -> None:
        if self._limits is not None:
            self._limits.record_tokens(owner, tokens)

    def _count_tokens(self, usage: Usage) -> None:
        self._metrics.count("ModelInputTokens", usage.input_tokens, purpose="chat")
        self._metrics.count("ModelOutputTokens", usage.output_tokens, purpose="chat")

    def _explicit_command(self, prepared: _Prepared, message: str) -> Completion | None:
        """'Remember that ...' / 'forget that ...', done now and confirmed as the reply (no model call)."""
        command = explicit_command(message)
        if command is None or self._learning is None:
            return None
        outcome = self._learning.explicit(prepared.owner, prepared.session_id, command)
        prepared.hits.clear()  # no prompt was sent, so no memory was a source of the reply
        return Completion(text=outcome.reply, model=self._model.name, usage=Usage(input_tokens=0, output_tokens=0))

    def _queue_learning(self, prepared: _Prepared) -> LearningState:
        """Hands the user's turn (by reference) to the learning function. The reply never waits for
        learning and never fails for it: a queue that cannot be reached leaves the turn unlearned."""
        if self._learning is None:
            return "off"
        if self._learning.mode == "explicit":
            return "queued"  # read for explicit commands only, which this turn answered already
        if self._learning_queue is None:
            return "off"
        try:
            self._learning_queue.send(LearningJob(prepared.owner, prepared.session_id, prepared.user_turn_at))
        except UpstreamUnavailable:
            log.warning("learning: the turn could not be queued; it will not be learned from")
            return "off"
        return "queued"

    def _finish(self, prepared: _Prepared, completion: Completion, *, learning: LearningState = "off") -> ChatReply:
        if not completion.text.strip():
            # An empty answer is no answer: nothing is stored, and the caller may retry.
            raise UpstreamInvalidResponse("the model returned an empty reply")
        answered_at = max(self._clock.now(), prepared.asked_at + timedelta(microseconds=1))
        self._conversations.append(
            prepared.owner, prepared.session_id, Turn(role="assistant", content=completion.text, at=answered_at)
        )
        return ChatReply(
            session_id=prepared.session_id,
            reply=completion.text,
            model=completion.model,
            usage=completion.usage,
            sources=[source_of(hit) for hit in prepared.hits],
            learning=learning,
        )


def source_of(hit: Hit) -> Source:
    if isinstance(hit, SearchHit):
        return Source(id=hit.memory.id, score=hit.score)
    return Source(
        id=hit.passage.id,
        score=hit.score,
        kind="document",
        document_id=hit.document.id,
        name=hit.document.name,
        page=hit.passage.page,
    )
