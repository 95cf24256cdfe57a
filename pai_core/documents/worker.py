"""Parsing under a bound: a child process of its own, with a cap on its address space and CPU time
and a wall-clock timeout, so that no file (a zip bomb, a PDF of 100,000 pages, a stream that inflates
to a gigabyte, a parser's worst case) can hold a request or its function's memory for long.

The child is `python -m pai_core.documents.worker`: the file arrives on stdin after a one-line JSON
header, the blocks go back as one JSON document on stdout. Nothing of the file is written to disk.
A child that runs out of time or memory, or dies, makes the file unreadable (422), never a 500.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any, cast

from pai_core.documents.detect import CONTENT_TYPES, ContentType
from pai_core.documents.parse import Block, ParsedDocument, ParseLimits, parse_document
from pai_core.errors import UnreadableDocument


@dataclass(frozen=True)
class WorkerBounds:
    timeout_seconds: float = 20.0
    cpu_seconds: int = 20
    address_space_bytes: int = 1536 * 1024 * 1024


def parse_bounded(
    content: bytes,
    content_type: ContentType,
    *,
    limits: ParseLimits | None = None,
    bounds: WorkerBounds | None = None,
) -> ParsedDocument:
    """parse_document in a bounded child process; UnreadableDocument when the file cannot be read
    within the bounds."""
    limits = limits or ParseLimits()
    bounds = bounds or WorkerBounds()
    header = {
        "contentType": content_type,
        "limits": asdict(limits),
        "cpuSeconds": bounds.cpu_seconds,
        "addressSpace": bounds.address_space_bytes,
    }
    # The child imports what this process imports, wherever that is (the Lambda task root, layers).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        finished = subprocess.run(
            [sys.executable, "-m", "pai_core.documents.worker"],
            input=json.dumps(header).encode() + b"\n" + content,
            capture_output=True,
            timeout=bounds.timeout_seconds,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise UnreadableDocument("the document took too long to read") from exc
    try:
        answer = json.loads(finished.stdout)
    except ValueError:
        answer = None
    if finished.returncode != 0 or not isinstance(answer, dict):
        raise UnreadableDocument("the document could not be read within the memory and time allowed")
    if not answer.get("ok"):
        raise UnreadableDocument(str(answer.get("reason") or "the document could not be read"))
    blocks = [
        Block(text=str(b[0]), page=b[1], heading=b[2], is_heading=bool(b[3])) for b in cast(list[Any], answer["blocks"])
    ]
    return ParsedDocument(blocks=blocks, pages=answer["pages"])


def _bound_self(cpu_seconds: int, address_space: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _main() -> int:
    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline())
    _bound_self(int(header["cpuSeconds"]), int(header["addressSpace"]))
    content = stdin.read()
    content_type = header["contentType"]
    if content_type not in CONTENT_TYPES:
        raise SystemExit(2)
    try:
        parsed = parse_document(content, cast(ContentType, content_type), ParseLimits(**header["limits"]))
    except UnreadableDocument as exc:
        answer: dict[str, Any] = {"ok": False, "reason": exc.message}
    except (MemoryError, RecursionError):
        answer = {"ok": False, "reason": "the document expands past the memory PAI reads it in"}
    else:
        answer = {
            "ok": True,
            "pages": parsed.pages,
            "blocks": [[b.text, b.page, b.heading, b.is_heading] for b in parsed.blocks],
        }
    sys.stdout.write(json.dumps(answer, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
