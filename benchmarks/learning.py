"""`make bench-learning`: how well PAI learns from chat, on the scripted turns of
benchmarks/data/learning_eval.json (facts, corrections, restatements, questions, chit-chat,
secrets, injection attempts, explicit "remember that ..." / "forget that ...").

    python -m benchmarks.learning                       # every available provider, writes RESULTS.md
    python -m benchmarks.learning --providers rules     # one of: explicit, rules, offline, openai
    python -m benchmarks.learning --output /tmp/learning.md

Each scenario is one user; its turns go, in order, through the real LearningService (explicit
commands as the chat service answers them, every other turn as the learning function reads it),
with the bundled embedding model and in-memory storage. After each turn, what changed among the
user's learned memories is compared with what the turn should have done:

- precision: the share of stored facts (added or updated) that the turn should have stored;
- recall: the share of expected facts, updates and forgets that were done (a fact counts when a
  stored fact holds all its key words);
- correct updates: the share of expected corrections made as an update of the right memory (a
  correction stored as a new memory beside the old one is recalled, but not a correct update);
- secret leaks: stored memories that hold a secret of the set, or anything the detector calls a
  secret (must be 0);
- tokens per turn: what the model call cost (prompt and answer), over the turns that called it.

Providers: "explicit" (only explicit commands), "rules" (the rule-based extractor, the offline
default), "offline" (one structured call per turn to the offline model, SmolLM2-135M under
llama.cpp's JSON-schema grammar, in its supervised server), and "openai" (any OpenAI-compatible
endpoint, when PAI_OPENAI_BASE_URL is set: PAI_OPENAI_MODEL, PAI_OPENAI_API_KEY).
Prints a table and writes it as the "## Learning from chat" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.bench import LEARNING_SECTION as SECTION
from benchmarks.bench import machine
from benchmarks.offline_models import replace_section
from pai_core.config import REPO_ROOT, Settings
from pai_core.learning.jobs import LearningJob
from pai_core.learning.model import StructuredModel
from pai_core.learning.rules import explicit_command
from pai_core.learning.secrets import holds_secret
from pai_core.learning.service import ExtractionMode, LearningService
from pai_core.models import (
    Turn,
)
from pai_core.services.memories import MemoryService
from tests.fakes import InMemoryConversationRepository, InMemoryMemoryRepository

DATA = REPO_ROOT / "benchmarks" / "data" / "learning_eval.json"
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
PROVIDERS = ("explicit", "rules", "offline", "openai")


# -- in-memory storage (the unit tests' fakes), for the benchmark only ----------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self._now = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self._now += timedelta(milliseconds=5)
        return self._now


class _Memories(InMemoryMemoryRepository):
    def learned(self, owner: str) -> dict[str, str]:
        return {m.id: m.content for (o, _), (m, _) in self.items.items() if o == owner and m.origin == "learned"}


# -- scoring -----------------------------------------------------------------------------------------


def _holds(text: str, keys: Sequence[str]) -> bool:
    lowered = text.lower()
    return all(key.lower() in lowered for key in keys)


@dataclass
class Score:
    stored: int = 0  # facts added or updated
    stored_right: int = 0
    expected: int = 0
    recalled: int = 0
    updates_expected: int = 0
    updates_right: int = 0
    leaks: int = 0
    refused: int = 0  # facts a model proposed that the guards refused (secret, instruction, not the user's words)
    model_turns: int = 0
    tokens: int = 0
    seconds: float = 0.0
    turns: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [turns, turns done right]

    def row(self, name: str) -> str:
        def share(part: int, whole: int) -> str:
            return f"{part / whole:.2f} ({part}/{whole})" if whole else "n/a"

        tokens = f"{self.tokens / self.model_turns:.0f}" if self.model_turns else "0"
        return (
            f"| {name} | {share(self.stored_right, self.stored)} | {share(self.recalled, self.expected)} | "
            f"{share(self.updates_right, self.updates_expected)} | {self.leaks} | {self.refused} | {tokens} | "
            f"{self.seconds / max(self.turns, 1):.2f} |"
        )


def score_turn(turn: dict[str, Any], before: dict[str, str], after: dict[str, str], score: Score) -> bool:
    """Adds the turn's outcome to `score`; whether the turn did exactly what it should."""
    added = {i: after[i] for i in after if i not in before}
    updated = {i: after[i] for i in after if i in before and after[i] != before[i]}
    deleted = {i: before[i] for i in before if i not in after}
    expected_adds: list[list[str]] = turn.get("add", [])
    expected_updates: list[dict[str, list[str]]] = turn.get("update", [])
    forget: list[str] | None = turn.get("forget")
    wanted = [*expected_adds, *(u["to"] for u in expected_updates)]
    stored = {**added, **updated}
    right = [text for text in stored.values() if any(_holds(text, keys) for keys in wanted)]
    score.stored += len(stored)
    score.stored_right += len(right)
    hits = sum(1 for keys in wanted if any(_holds(text, keys) for text in stored.values()))
    score.expected += len(wanted)
    score.recalled += hits
    update_hits = 0
    for update in expected_updates:
        score.updates_expected += 1
        if any(_holds(before[i], update["from"]) and _holds(text, update["to"]) for i, text in updated.items()):
            update_hits += 1
    score.updates_right += update_hits
    forget_ok = True
    if forget is not None:
        score.expected += 1
        forget_ok = any(_holds(text, forget) for text in deleted.values())
        score.recalled += int(forget_ok)
    exact = len(right) == len(stored) and hits == len(wanted) and update_hits == len(expected_updates) and forget_ok
    return exact and (forget is not None or not deleted)


# -- running -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    name: str
    mode: ExtractionMode
    model: StructuredModel | None = None


def run(provider: Provider, scenarios: Sequence[dict[str, Any]], embedder: Any) -> Score:
    score = Score()
    clock = _Clock()
    repository = _Memories()
    conversations = InMemoryConversationRepository()
    memories = MemoryService(repository, embedder, clock)
    learning = LearningService(memories, conversations, clock, mode=provider.mode, model=provider.model)
    secrets_seen: list[str] = []
    for number, scenario in enumerate(scenarios):
        owner = f"eval-{number}"
        session = f"s-{scenario['id']}"
        for turn in scenario["turns"]:
            secrets_seen.extend(turn.get("secrets", []))
            before = repository.learned(owner)
            at = clock.now()
            conversations.append(owner, session, Turn(role="user", content=turn["say"], at=at))
            started = time.perf_counter()
            command = explicit_command(turn["say"])
            if command is not None:
                learning.explicit(owner, session, command)
            elif provider.mode != "explicit":
                outcome = learning.learn_turn(LearningJob(owner, session, at))
                score.refused += outcome.dropped
                if outcome.tokens:
                    score.model_turns += 1
                    score.tokens += outcome.tokens
            score.seconds += time.perf_counter() - started
            score.turns += 1
            after = repository.learned(owner)
            exact = score_turn(turn, before, after, score)
            counts = score.by_kind.setdefault(turn["kind"], [0, 0])
            counts[0] += 1
            counts[1] += int(exact)
        leaked = [
            text
            for text in repository.learned(owner).values()
            if holds_secret(text) or any(secret in text for secret in secrets_seen)
        ]
        score.leaks += len(leaked)
    return score


@contextmanager
def offline_model(log: Path) -> Iterator[StructuredModel]:
    from pai_core.adapters.llm_local import local_server_chat_model
    from pai_local.emulator import free_port
    from pai_local.model_server import ModelServer

    settings = Settings.from_env(llm_threads=max(1, min(2, os.cpu_count() or 1)))
    server = ModelServer.for_settings(settings, port=free_port(), log_path=log)
    with server.serving():
        yield local_server_chat_model(
            url=server.url,
            model_path=settings.resolve_local_llm_path(),
            context_tokens=settings.llm_context_tokens,
            timeout_seconds=120,
            max_attempts=1,
        )


def openai_model() -> StructuredModel:
    from pai_core.adapters.llm_openai import OpenAiChatModel

    settings = Settings.from_env()
    return OpenAiChatModel(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key or "no-key",
        model=settings.openai_model,
        context_tokens=settings.llm_context_tokens,
        timeout_seconds=60,
        max_attempts=2,
    )


def report(scores: dict[str, Score], skipped: dict[str, str]) -> str:
    kinds = sorted({kind for score in scores.values() for kind in score.by_kind})
    lines = [
        SECTION,
        "",
        f"`make bench-learning` ({datetime.now(UTC):%Y-%m-%d}, {machine()}): the {next(iter(scores.values())).turns} "
        "scripted user turns of `benchmarks/data/learning_eval.json` through the real LearningService "
        "(bundled embedding model, in-memory storage). Precision: stored facts that should have been stored; "
        "recall: expected facts, corrections and forgets done; correct updates: corrections made as an update "
        "of the right memory, the old wording kept in its history; secret leaks: stored memories holding a "
        "secret (must be 0); refused by the guards: facts the model proposed that were not stored because "
        "they held a secret, were an instruction or were not the user's own words; tokens: per turn that called "
        "the model (prompt and answer); seconds: per turn.",
        "",
        "| provider | precision | recall | correct updates | secret leaks | refused by the guards | tokens/turn "
        "| s/turn |",
        "|---|---|---|---|---|---|---|---|",
        *(score.row(name) for name, score in scores.items()),
        "",
        "Turns handled exactly right, by kind:",
        "",
        "| provider | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for name, score in scores.items():
        cells = []
        for kind in kinds:
            total, right = score.by_kind.get(kind, [0, 0])
            cells.append(f"{right}/{total}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, why in skipped.items():
        lines.append("")
        lines.append(f"Not run: {name}: {why}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", nargs="*", default=list(PROVIDERS), choices=PROVIDERS)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write the section (default {RESULTS})")
    args = parser.parse_args(argv)
    scenarios = json.loads(args.data.read_text(encoding="utf-8"))["scenarios"]

    from pai_core.embedding import OnnxEmbedder

    embedder = OnnxEmbedder(Settings.from_env().embedding_model_dir)
    scores: dict[str, Score] = {}
    skipped: dict[str, str] = {}
    with ExitStack() as stack:
        for name in args.providers:
            print(f"learning: {name} ...", file=sys.stderr, flush=True)
            if name in ("explicit", "rules"):
                provider = Provider(f"{name} (no model)", name)
            elif name == "offline":
                try:
                    log = Path(tempfile.mkdtemp(prefix="pai-bench-learning-")) / "model-server.log"
                    model = stack.enter_context(offline_model(log))
                except Exception as exc:  # no llama.cpp, no model file: say so in the report
                    skipped["offline model"] = f"{type(exc).__name__}: {exc}"
                    continue
                provider = Provider(f"offline model ({model.name})", "model", model)
            else:
                if not os.environ.get("PAI_OPENAI_BASE_URL"):
                    skipped["OpenAI-compatible"] = "PAI_OPENAI_BASE_URL is not set"
                    continue
                model = openai_model()
                provider = Provider(f"OpenAI-compatible ({model.name})", "model", model)
            scores[provider.name] = run(provider, scenarios, embedder)
    if not scores:
        print("no provider could run", file=sys.stderr)
        return 1
    text = report(scores, skipped)
    print(text)
    existing = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    args.output.write_text(replace_section(existing, SECTION, text), encoding="utf-8")
    print(f"wrote {SECTION!r} into {args.output}", file=sys.stderr)
    leaks = sum(score.leaks for score in scores.values())
    return 1 if leaks else 0


if __name__ == "__main__":
    raise SystemExit(main())
