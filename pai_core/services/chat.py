"""The chat use case: remember the turn, recall history and memories, ask the model, remember the reply."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from pai_core.errors import InvalidInput, UpstreamInvalidResponse
from pai_core.limits import UsageLimits
from pai_core.models import ChatMessage, ChatReply, Completion, SearchHit, Source, TextDelta, Turn
from pai_core.ports import ChatModel, Clock, ConversationRepository
from pai_core.search.fusion import CHAT_RELEVANCE_FLOOR
from pai_core.services.memories import MemoryService
from pai_core.services.prompt import SYSTEM_PROMPT, TOKENS_PER_MESSAGE, build_messages


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class _Prepared:
    owner: str
    session_id: str
    asked_at: datetime
    messages: list[ChatMessage]
    hits: list[SearchHit]


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
    ) -> None:
        self._conversations = conversations
        self._memories = memories
        self._model = model
        self._clock = clock
        self._history_max_turns = history_max_turns
        self._max_output_tokens = max_output_tokens
        self._limits = limits

    def chat(self, owner: str, *, message: str, session_id: str | None, use_memory: bool, top_k: int) -> ChatReply:
        prepared = self._prepare(owner, message=message, session_id=session_id, use_memory=use_memory, top_k=top_k)
        completion = self._model.complete(prepared.messages, max_tokens=self._max_output_tokens)
        self._charge(owner, completion.usage.input_tokens + completion.usage.output_tokens)
        return self._finish(prepared, completion)

    def chat_stream(
        self, owner: str, *, message: str, session_id: str | None, use_memory: bool, top_k: int
    ) -> Iterator[TextDelta | ChatReply]:
        """The reply as it is produced, then the whole ChatReply. Everything that can refuse the
        request (validation, storage) happens before the first item, so a caller can still answer
        with a plain error status; a failure after that ends the stream with the exception, and
        no assistant turn is stored."""
        prepared = self._prepare(owner, message=message, session_id=session_id, use_memory=use_memory, top_k=top_k)
        # Counted now: once the stream has started, the model may be busy with it (llama.cpp's lock).
        prompt_tokens = sum(self._model.count_tokens(m.content) + TOKENS_PER_MESSAGE for m in prepared.messages)

        def produce() -> Iterator[TextDelta | ChatReply]:
            pieces = 0
            charged = False
            try:
                for item in self._model.stream(prepared.messages, max_tokens=self._max_output_tokens):
                    if isinstance(item, Completion):
                        self._charge(owner, item.usage.input_tokens + item.usage.output_tokens)
                        charged = True
                        yield self._finish(prepared, item)
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
        if history and history[-1].role == "user" and history[-1].content == message:
            # The same message again after an attempt that got no reply: a retry. Its turn is
            # already stored, so it is neither stored twice nor put in the prompt twice.
            history = history[:-1]
        else:
            self._conversations.append(owner, session, Turn(role="user", content=message, at=asked_at))

        # Only memories relevant to the message reach the prompt: without the floor, the top few
        # ride along whatever they score.
        hits = (
            self._memories.search(owner, message, top=top_k, min_score=CHAT_RELEVANCE_FLOOR)
            if use_memory and top_k > 0
            else []
        )
        messages, used_hits = build_messages(
            message=message, history=history, hits=hits, count_tokens=self._model.count_tokens, budget=budget
        )
        return _Prepared(
            owner=owner,
            session_id=session,
            asked_at=asked_at,
            messages=messages,
            hits=used_hits,
        )

    def _charge(self, owner: str, tokens: int) -> None:
        if self._limits is not None:
            self._limits.record_tokens(owner, tokens)

    def _finish(self, prepared: _Prepared, completion: Completion) -> ChatReply:
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
            sources=[Source(id=hit.memory.id, score=hit.score) for hit in prepared.hits],
        )
