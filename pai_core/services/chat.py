"""The chat use case: remember the turn, recall history and memories, ask the model, remember the reply."""

from __future__ import annotations

import secrets
from datetime import timedelta

from pai_core.errors import InvalidInput
from pai_core.models import ChatReply, Source, Turn
from pai_core.ports import ChatModel, Clock, ConversationRepository
from pai_core.services.memories import MemoryService
from pai_core.services.prompt import SYSTEM_PROMPT, TOKENS_PER_MESSAGE, build_messages


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


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
    ) -> None:
        self._conversations = conversations
        self._memories = memories
        self._model = model
        self._clock = clock
        self._history_max_turns = history_max_turns
        self._max_output_tokens = max_output_tokens

    def chat(self, owner: str, *, message: str, session_id: str | None, use_memory: bool, top_k: int) -> ChatReply:
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
        session = session_id or new_session_id()
        asked_at = self._clock.now()
        history = self._conversations.recent(owner, session, now=asked_at, limit=self._history_max_turns)
        if history and history[-1].role == "user" and history[-1].content == message:
            # The same message again after an attempt that got no reply: a retry. Its turn is
            # already stored, so it is neither stored twice nor put in the prompt twice.
            history = history[:-1]
        else:
            self._conversations.append(owner, session, Turn(role="user", content=message, at=asked_at))

        hits = self._memories.search(owner, message, top=top_k) if use_memory and top_k > 0 else []
        messages, used_hits = build_messages(
            message=message, history=history, hits=hits, count_tokens=self._model.count_tokens, budget=budget
        )
        completion = self._model.complete(messages, max_tokens=self._max_output_tokens)
        if completion.text:
            answered_at = max(self._clock.now(), asked_at + timedelta(microseconds=1))
            self._conversations.append(owner, session, Turn(role="assistant", content=completion.text, at=answered_at))
        return ChatReply(
            session_id=session,
            reply=completion.text,
            model=completion.model,
            usage=completion.usage,
            sources=[Source(id=hit.memory.id, score=hit.score) for hit in used_hits],
        )
