"""Documents: ingestion throughput and retrieval quality, measured in one run on this machine.

    python -m benchmarks.documents            # a 300-page PDF and the same text as Markdown and plain text
    python -m benchmarks.documents --pages 30 # smaller
    python -m benchmarks.documents --no-write # print only (else writes its section of benchmarks/RESULTS.md)

It also measures what passages cost every search: the index's search at 10K memories with and
without 20K passages.

Ingestion goes through DocumentService.upload with the real bounded parser (a child process), the
embedding model's own tokenizer and the int8 model; storage is the in-memory fakes (storage costs
are the memories' and are measured by `make bench`). The baseline, in the same run, is the same
text uploaded as plain text: what ingestion costs without a format to read.

Quality (`--quality-only` measures it alone and rewrites only its table): the evaluation set is built
at run time from text on this machine that may be used freely: the docstrings of Python
standard-library modules and their public classes and functions (one Markdown document per module;
nothing is shipped), with hand-written questions whose answer is in one known module's document.
The passages go into the index's own HybridIndex (int8 vectors and the lexical BM25 index), searched
with ranking "dense" (the cosine alone) and with its default hybrid ranking (pai_core.search.fusion);
a third row fuses the same dense ranking with benchmarks/bm25.py by reciprocal rank (k=60), the
fusion the index did not choose. hit@k: the share of questions for which a passage of the right
document is among the first k results; MRR over the first 10.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.bm25 import BM25
from benchmarks.offline_models import replace_section
from pai_core.config import DEFAULT_EMBEDDING_MODEL_DIR
from pai_core.documents import parse_bounded
from pai_core.documents.detect import ContentType
from pai_core.documents.parse import ParsedDocument
from pai_core.embedding import OnnxEmbedder
from pai_core.embedding.onnx_embedder import TOKENIZER_FILE
from pai_core.models import IndexedItem, ItemRef
from pai_core.search.hybrid import HybridIndex, Ranking
from pai_core.services.documents import DocumentBounds, DocumentService
from tests.documents_support import make_pdf
from tests.fakes import FixedClock
from tests.fakes_documents import InMemoryDocumentFiles, InMemoryDocumentRepository, fake_fingerprint

MODULES = [
    "argparse", "csv", "heapq", "bisect", "json", "pickle", "sqlite3", "zipfile", "tarfile", "gzip", "shutil",
    "tempfile", "glob", "fnmatch", "logging", "datetime", "calendar", "random", "statistics", "decimal",
    "fractions", "itertools", "functools", "collections", "contextlib", "threading", "subprocess", "socket",
    "ssl", "http.client", "urllib.parse", "email", "smtplib", "uuid", "hashlib", "hmac", "secrets", "base64",
    "textwrap", "difflib", "string", "re", "unittest", "doctest", "pdb", "timeit", "cProfile", "trace",
    "inspect", "dataclasses", "enum", "typing", "abc", "copy", "pprint", "shelve", "dbm", "configparser",
    "getpass", "locale", "gettext", "codecs", "unicodedata", "struct", "array", "queue", "sched", "selectors",
    "signal", "mmap", "wave", "colorsys", "imaplib", "ftplib", "poplib", "xml.dom.minidom", "plistlib",
]  # fmt: skip
# (question, module whose docstring answers it): written against the modules' own docstrings.
QUESTIONS = [
    ("How do I define command-line options and positional arguments for my script?", "argparse"),
    ("read and write files of comma separated values like spreadsheets", "csv"),
    ("priority queue where the smallest item is always at index zero", "heapq"),
    ("insert into a sorted list and keep it sorted without sorting again", "bisect"),
    ("serialize Python objects to a byte stream and restore them", "pickle"),
    ("create and extract tar archives, possibly compressed", "tarfile"),
    ("compress and decompress files the way the gzip program does", "gzip"),
    ("copy and remove whole directory trees", "shutil"),
    ("make a temporary file or directory that is removed afterwards", "tempfile"),
    ("report events of an application with levels like warning and error to handlers", "logging"),
    ("print a month calendar and compute leap years", "calendar"),
    ("pseudo-random numbers from distributions such as gauss and choice", "random"),
    ("compute the mean, median and standard deviation of data", "statistics"),
    ("exact decimal floating point arithmetic for money", "decimal"),
    ("rational numbers with a numerator and denominator", "fractions"),
    ("start a program as a child process and read its output", "subprocess"),
    ("low-level network connections with sockets", "socket"),
    ("split a URL into scheme, host and path and quote its parts", "urllib.parse"),
    ("send mail through an SMTP server", "smtplib"),
    ("generate universally unique identifiers", "uuid"),
    ("secure hash and message digest algorithms like sha256 and md5", "hashlib"),
    ("keyed hashing for message authentication", "hmac"),
    ("wrap and fill paragraphs of text to a given width", "textwrap"),
    ("compute the differences between two sequences of lines", "difflib"),
    ("run tests written as examples in docstrings", "doctest"),
    ("measure how long a small snippet of code takes to run", "timeit"),
    ("a persistent dictionary stored in a file", "shelve"),
    ("read configuration files with sections and keys", "configparser"),
    ("prompt for a password without echoing it", "getpass"),
    ("pack and unpack binary data as C structs", "struct"),
]
# Paraphrased: the same kind of need in a user's words, avoiding the module's name and the words its
# docstring uses where that could be helped, so that matching words alone does not find the answer.
# Written before any result of this set was seen.
PARAPHRASED = [
    ("turn a nested dict into text a web API can send, and parse it back", "json"),
    ("embedded SQL database engine kept in a single file on disk", "sqlite3"),
    ("bundle several files into one archive that Windows users can open with a double click", "zipfile"),
    ("find every file whose name ends in .txt in a folder using wildcards", "glob"),
    ("check whether a filename matches a shell-style pattern like *.py", "fnmatch"),
    ("how many days are between two dates, and what time is it in another time zone", "datetime"),
    ("chain several iterables together and take every combination of their elements", "itertools"),
    ("cache the results of an expensive function call so repeated calls are fast", "functools"),
    ("count how many times each word occurs in a list", "collections"),
    ("helper to write a with-statement manager from a generator", "contextlib"),
    ("run several tasks at the same time in one process and protect shared data with a lock", "threading"),
    ("encrypt a network connection with TLS and verify the server's certificate", "ssl"),
    ("make a GET request to a web server and read the response status", "http.client"),
    ("build a message with attachments and headers to send later", "email"),
    ("generate a token that is hard to guess for a password reset link", "secrets"),
    ("encode binary data as printable ASCII characters for transport", "base64"),
    ("find all phone numbers in a text with a pattern", "re"),
    ("step through my program line by line and inspect variables when it crashes", "pdb"),
    ("find which functions of my program use the most time", "cProfile"),
    ("see which lines of my program were executed, for coverage", "trace"),
    ("get the source code and signature of a function at run time", "inspect"),
    ("class that automatically gets an init method and a readable repr from its annotated fields", "dataclasses"),
    ("a set of named constants such as colors or states", "enum"),
    ("describe for a static checker that a variable may be None or a list of strings", "typing"),
    ("require subclasses to implement certain methods before they can be instantiated", "abc"),
    ("duplicate a nested object so changes to the duplicate do not affect the original", "copy"),
    ("print a large nested data structure so it is readable", "pprint"),
    ("format numbers and currency the way the user's country does", "locale"),
    ("translate my program's messages into other languages", "gettext"),
    ("look up the official name and category of a character", "unicodedata"),
    ("compact list of numbers that all have the same machine type", "array"),
    ("pass work items between producer and consumer threads safely", "queue"),
    ("arrange for functions to be called at given times later, in order", "sched"),
    ("wait until any of several sockets is ready to read", "selectors"),
    ("handle Ctrl-C or a termination request from the operating system", "signal"),
    ("treat a big file on disk as if it were a bytearray in memory", "mmap"),
    ("read the frames and sample rate of an uncompressed audio file", "wave"),
    ("convert a color from RGB to hue, saturation and value", "colorsys"),
    ("fetch messages from my mailbox on a mail server and keep them on the server", "imaplib"),
    ("download mail from the server and delete it afterwards", "poplib"),
    ("upload a file to a remote server using the old file transfer protocol", "ftplib"),
    ("parse an XML document into a tree of nodes and walk it", "xml.dom.minidom"),
    ("read and write the property list files used by macOS", "plistlib"),
    ("a simple key-value database on disk with string keys", "dbm"),
    ("encode and decode text between byte encodings such as UTF-16 and Latin-1", "codecs"),
    ("write test cases for my code with setup and assertions, and run them", "unittest"),
    ("substitute $name placeholders in a template", "string"),
]


_MAX_DOCUMENT_CHARS = 40_000
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# Its own section of RESULTS.md: `make bench` runs this after benchmarks.bench, which rewrites the file.
SECTION = "## Documents"


@dataclass
class _Timed:
    seconds: float = 0.0


def _corpus() -> dict[str, str]:
    docs: dict[str, str] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        # The module's docstring, then its public classes' and functions' under their own headings.
        parts = [f"# {name}", module.__doc__ or ""]
        for member_name in sorted(getattr(module, "__all__", None) or dir(module)):
            member = getattr(module, member_name, None)
            if member_name.startswith("_") or not callable(member) or getattr(member, "__module__", None) != name:
                continue
            if member.__doc__:
                parts += [f"## {member_name}", member.__doc__]
        text = "\n\n".join(parts)[:_MAX_DOCUMENT_CHARS]
        if len(text) > 200:
            docs[name] = text
    return docs


def _service(
    embedder: OnnxEmbedder, parse_time: _Timed, clock: FixedClock | None = None
) -> tuple[DocumentService, InMemoryDocumentRepository]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(DEFAULT_EMBEDDING_MODEL_DIR / TOKENIZER_FILE))
    tokenizer.no_truncation()

    def spans(text: str) -> list[tuple[int, int]]:
        return list(tokenizer.encode(text, add_special_tokens=False).offsets)

    def parser(content: bytes, content_type: ContentType) -> ParsedDocument:
        started = time.perf_counter()
        try:
            return parse_bounded(content, content_type)
        finally:
            parse_time.seconds += time.perf_counter() - started

    repository = InMemoryDocumentRepository()
    service = DocumentService(
        repository,
        InMemoryDocumentFiles(),
        embedder,
        clock or FixedClock(),
        spans=spans,
        fingerprint=fake_fingerprint,
        bounds=DocumentBounds(max_passages=10**6, max_documents=10**6),
        parser=parser,
    )
    return service, repository


def ingestion(embedder: OnnxEmbedder, pages: int) -> list[tuple[str, int, int, float, float]]:
    text = " ".join(_corpus().values()).split()
    # The PDF's standard font has Latin-1 glyphs only.
    lines = [" ".join(text[i : i + 14]).encode("latin-1", "replace").decode("latin-1") for i in range(0, len(text), 14)]
    per_page = 45
    page_lines = [[lines[(p * per_page + i) % len(lines)] for i in range(per_page)] for p in range(pages)]
    pdf = make_pdf(page_lines)
    plain = "\n\n".join("\n".join(page) for page in page_lines).encode()
    markdown = "\n\n".join(f"## Page {n}\n\n" + "\n".join(page) for n, page in enumerate(page_lines, 1)).encode()
    rows = []
    for label, content_type, content in (
        ("plain text (baseline)", "text/plain", plain),
        ("Markdown", "text/markdown", markdown),
        (f"PDF, {pages} pages, {len(pdf) / 2**20:.1f} MiB", "application/pdf", pdf),
    ):
        parse_time = _Timed()
        service, _ = _service(embedder, parse_time)
        started = time.perf_counter()
        upload = service.upload("bench", name=label, content_type=content_type, content=content, category="bench")
        total = time.perf_counter() - started
        rows.append((label, pages, upload.document.passages, total, parse_time.seconds))
    return rows


@dataclass(frozen=True)
class QualityRow:
    ranking: str
    questions: str
    count: int
    hit1: float
    hit3: float
    hit5: float
    mrr: float  # over the first DEPTH results; a question whose document is not among them counts 0


DEPTH = 10
QuestionSet = list[tuple[str, str]]


def quality(embedder: OnnxEmbedder) -> tuple[int, list[QualityRow]]:
    """Every question's first DEPTH passages under each ranking; a question counts as found at the
    rank of the first passage of its module's document. Returns the number of documents and a row
    per ranking and question set."""
    parse_time = _Timed()
    clock = FixedClock()
    service, repository = _service(embedder, parse_time, clock)
    names: dict[str, str] = {}
    for module, text in _corpus().items():
        upload = service.upload("q", name=module, content_type="text/markdown", content=text.encode(), category="g")
        names[upload.document.id] = module
        # Each document its own upload, an hour apart, as a user's would be: the index's time
        # neighbours are then a document's own passages, not another document's.
        clock.advance(hours=1)
    passages = [p for (_, _), (p, _) in sorted(repository.passages.items())]
    vectors = [v for (_, _), (_, v) in sorted(repository.passages.items())]
    module_of = {p.id: names[p.document_id] for p in passages}
    index = HybridIndex.empty(embedder.dimensions, ann=None)
    index.add(
        IndexedItem(ItemRef("passage", p.id), category=p.category, vector=v, text=p.text)
        for p, v in zip(passages, vectors, strict=True)
    )
    matrix = np.stack([np.frombuffer(v, dtype="<f4") for v in vectors])
    bm25 = BM25([p.text for p in passages])

    def rrf(question: str, query: np.ndarray[Any, Any]) -> list[str]:
        fused: dict[int, float] = {}
        for ranking in (np.argsort(-(matrix @ query)), np.argsort(-bm25.scores(question))):
            for rank, row in enumerate(ranking[:100]):
                fused[int(row)] = fused.get(int(row), 0.0) + 1.0 / (60 + rank + 1)
        return [passages[row].id for row in sorted(fused, key=lambda row: -fused[row])[:DEPTH]]

    def pai(ranking: Ranking) -> Any:
        def ranked(question: str, query: np.ndarray[Any, Any]) -> list[str]:
            return [hit.ref.id for hit in index.search(query, DEPTH, text=question, ranking=ranking)]

        return ranked

    rankings = [
        ("PAI dense only", pai("dense")),
        ("PAI hybrid (default)", pai("hybrid")),
        ("benchmark RRF (dense + benchmarks/bm25.py, k=60)", rrf),
    ]
    sets: list[tuple[str, QuestionSet]] = [
        ("original", [(q, m) for q, m in QUESTIONS if m in names.values()]),
        ("paraphrased", [(q, m) for q, m in PARAPHRASED if m in names.values()]),
    ]
    sets.append(("all", sets[0][1] + sets[1][1]))
    queries = {q: embedder.embed([q])[0] for q, _ in sets[2][1]}
    rows = []
    for label, rank in rankings:
        found = {q: _first(m, rank(q, queries[q]), module_of) for q, m in sets[2][1]}
        for set_name, questions in sets:
            ranks = [found[q] for q, _ in questions]
            n = len(ranks)
            rows.append(
                QualityRow(
                    label,
                    set_name,
                    n,
                    sum(r is not None and r <= 1 for r in ranks) / n,
                    sum(r is not None and r <= 3 for r in ranks) / n,
                    sum(r is not None and r <= 5 for r in ranks) / n,
                    sum(1.0 / r for r in ranks if r is not None) / n,
                )
            )
    return len(names), rows


def _first(module: str, ranked: list[str], module_of: dict[str, str]) -> int | None:
    """The 1-based rank of the first passage of `module`'s document, None when none is listed."""
    return next((rank for rank, passage in enumerate(ranked, 1) if module_of[passage] == module), None)


def search_latency(memories: int, passages: int, *, queries: int = 300) -> list[tuple[str, float, float]]:
    """Index search p50 and p95 (ms, top 5) with `memories` memories alone (the baseline) and with
    `passages` passages added: what passages cost every search. Seeded random unit vectors; the
    query's embedding and the hits' reads by key are the same in both and left out."""
    from pai_core.bootstrap import single_threaded_blas
    from pai_core.search.index import VectorIndex

    single_threaded_blas()  # as every container runs it
    rng = np.random.default_rng(12)

    def items(kind: Literal["memory", "passage"], count: int) -> list[IndexedItem]:
        vectors = rng.standard_normal((count, 384)).astype("<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return [IndexedItem(ItemRef(kind, f"{kind}{i}"), "general", v.tobytes(), "") for i, v in enumerate(vectors)]

    memory_items, passage_items = items("memory", memories), items("passage", passages)
    probes = rng.standard_normal((queries, 384)).astype("<f4")
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    rows = []
    for label, contents in (
        (f"{memories // 1000}K memories (baseline)", memory_items),
        (f"{memories // 1000}K memories + {passages // 1000}K passages", memory_items + passage_items),
    ):
        index = VectorIndex(384)
        index.add(contents)
        timings = []
        for probe in probes:
            started = time.perf_counter()
            index.search(probe, 5)
            timings.append((time.perf_counter() - started) * 1000)
        rows.append((label, float(np.percentile(timings, 50)), float(np.percentile(timings, 95))))
    return rows


QUALITY = "### Retrieval quality"
_INTRO = [
    "`python -m benchmarks.documents` (part of `make bench`): ingestion through DocumentService.upload",
    "(the bounded parser, the model's tokenizer, the int8 model; in-memory storage), search at 10K",
    "memories with and without 20K passages, and hit@k on documents; baselines in the same run.",
    "`--quality-only` measures and rewrites the retrieval quality table alone.",
]


def quality_lines(embedder: OnnxEmbedder) -> list[str]:
    documents, rows = quality(embedder)
    lines = [
        QUALITY,
        "",
        f"Questions on {documents} standard-library module documents (their docstrings as Markdown, uploaded",
        "through DocumentService, indexed in a HybridIndex as the live index holds passages): hit@k is the",
        "share of questions with a passage of the right document among the first k results; MRR is over",
        f'the first {DEPTH}. "original": written against the docstrings; "paraphrased": a user\'s words,',
        "avoiding the module's own, written before any result was seen.",
        "",
        "| ranking | questions | n | hit@1 | hit@3 | hit@5 | MRR |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.ranking} | {row.questions} | {row.count} | {row.hit1:.2f} | {row.hit3:.2f} | {row.hit5:.2f}"
            f" | {row.mrr:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write the section (default {RESULTS})")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument(
        "--quality-only", action="store_true", help="measure retrieval quality only, keeping the section's other tables"
    )
    args = parser.parse_args(argv)
    embedder = OnnxEmbedder(DEFAULT_EMBEDDING_MODEL_DIR)
    existing = args.output.read_text(encoding="utf-8") if args.output.exists() else "# Benchmarks\n"
    if args.quality_only:
        text = "\n".join([*_section_before_quality(existing), *quality_lines(embedder)]) + "\n"
        return _emit(text, args.output, existing, write=not args.no_write)
    lines = [
        SECTION,
        "",
        *_INTRO,
        "",
        f"machine: {platform.machine()}, {platform.python_version()}",
        "",
        "| ingestion | pages | passages | seconds | parse s | pages/s | passages/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, pages, passages, total, parse in ingestion(embedder, args.pages):
        rates = f"{pages / total:.1f} | {passages / total:.1f}"
        lines.append(f"| {label} | {pages} | {passages} | {total:.1f} | {parse:.1f} | {rates} |")
    lines += ["", "| index search, top 5 | p50 ms | p95 ms |", "|---|---:|---:|"]
    for label, p50, p95 in search_latency(10_000, 20_000):
        lines.append(f"| {label} | {p50:.2f} | {p95:.2f} |")
    lines += ["", *quality_lines(embedder)]
    text = "\n".join(lines) + "\n"
    return _emit(text, args.output, existing, write=not args.no_write)


def _section_before_quality(document: str) -> list[str]:
    """This section's lines up to its quality table (all of them when it has none; the heading and
    intro when there is no section yet): what a quality-only run keeps."""
    lines = document.splitlines()
    start = next((i for i, line in enumerate(lines) if line == SECTION), None)
    if start is None:
        return [SECTION, "", *_INTRO, "", "(No full run yet: the ingestion and search tables come from one.)", ""]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    kept = lines[start:end]
    if QUALITY in kept:
        kept = kept[: kept.index(QUALITY)]
    while kept and not kept[-1].strip():
        kept.pop()
    return [*kept, ""]


def _emit(text: str, output: Path, existing: str, *, write: bool) -> int:
    print(text)
    if write:
        output.write_text(replace_section(existing, SECTION, text), encoding="utf-8")
        print(f"wrote {SECTION!r} into {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
