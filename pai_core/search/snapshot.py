"""The snapshot of one owner's search index: what a cold container loads instead of every item.

Layout (integers little-endian):

    magic b"PAISNAP1" | header length (u32) | header (JSON, UTF-8) | sections, in header order

Sections: `refs` (UTF-8, one `kind:id` per row, newline-separated; an empty line is a deleted row),
`lexical` (the lexical index over the same live items, pai_core.search.lexical's `to_bytes`: its
term statistics, so a cold start ranks lexically without reading any item; zlib-compressed at its
fastest level, as its integer arrays are mostly small numbers), `alive` (u8 per row),
`codes` (u32 category code per row),
`vectors` (rows x dimensions, float16), and `ann` (the approximate index's own serialization, keyed
by row) when there is one. The header holds the change-log position the index had applied (see
pai_core.search.live) with the entries it had applied just below it, the head's version and the
generation it was built under, and when it was taken.

The whole payload is sealed by the snapshot store (pai_core.adapters.s3): term statistics and
vectors are never written in plaintext.

Vectors are stored as float16: half the bytes to fetch, decrypt and parse on a cold start than
float32, for a cosine error below 1e-3 (a unit vector's components are far from float16's limits;
measured by the benchmark), under the ~2e-3 by which the int8 model's own vectors already vary. In
memory they are float32 again, for BLAS; float16 -> float32 -> float16 is lossless, so snapshots of
snapshots do not drift.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from pai_core.models import ItemKind, ItemRef

MAGIC = b"PAISNAP1"
FORMAT_VERSION = 3  # 2: refs instead of memory ids, texts, a change-log position; 3: the lexical index, not texts
SNAPSHOT_VECTOR_DTYPE = np.dtype("<f2")
_LENGTH = struct.Struct("<I")
_SECTIONS = ("refs", "lexical", "alive", "codes", "vectors", "ann")
_KINDS: frozenset[str] = frozenset({"memory", "passage"})


class SnapshotError(ValueError):
    """The bytes are not a snapshot this code can read."""


@dataclass(frozen=True)
class IndexSnapshot:
    refs: list[ItemRef | None]  # one per row; None for a deleted row
    lexical: bytes  # the lexical index of the live rows' items (LexicalIndex.to_bytes)
    alive: npt.NDArray[np.bool_]
    codes: npt.NDArray[np.uint32]
    categories: list[str]
    vectors: npt.NDArray[np.float32]  # rows x dimensions
    ann: bytes | None
    ann_settings: dict[str, int | str] | None
    position: str  # the change-log position the index had applied
    applied: list[str]  # the entries it had applied within the id margin below `position`
    stamp: int
    taken_at: float  # seconds since the epoch
    generation: int  # the owner's generation it was built under (pai_core.models.ChangeStamp)

    @property
    def rows(self) -> int:
        return len(self.refs)


def encode(snapshot: IndexSnapshot) -> bytes:
    rows, dimensions = snapshot.vectors.shape
    if not (len(snapshot.refs) == rows == snapshot.alive.shape[0] == snapshot.codes.shape[0]):
        raise ValueError("snapshot arrays disagree on the number of rows")
    sections = {
        "refs": "\n".join("" if ref is None else f"{ref.kind}:{ref.id}" for ref in snapshot.refs).encode("utf-8"),
        "lexical": zlib.compress(snapshot.lexical, 1),
        "alive": snapshot.alive.astype(np.uint8).tobytes(),
        "codes": snapshot.codes.astype("<u4").tobytes(),
        "vectors": snapshot.vectors.astype(SNAPSHOT_VECTOR_DTYPE).tobytes(),
        "ann": snapshot.ann or b"",
    }
    header = {
        "format": FORMAT_VERSION,
        "rows": rows,
        "dimensions": dimensions,
        "vectorDtype": SNAPSHOT_VECTOR_DTYPE.str,
        "categories": snapshot.categories,
        "annSettings": snapshot.ann_settings if snapshot.ann else None,
        "position": snapshot.position,
        "applied": snapshot.applied,
        "stamp": snapshot.stamp,
        "takenAt": snapshot.taken_at,
        "generation": snapshot.generation,
        "sections": {name: len(sections[name]) for name in _SECTIONS},
    }
    raw_header = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return b"".join([MAGIC, _LENGTH.pack(len(raw_header)), raw_header, *(sections[name] for name in _SECTIONS)])


def decode(payload: bytes) -> IndexSnapshot:
    try:
        return _decode(memoryview(payload))
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, struct.error, UnicodeDecodeError, zlib.error) as exc:
        raise SnapshotError(f"malformed index snapshot: {exc}") from exc


def _decode(view: memoryview) -> IndexSnapshot:
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise SnapshotError("not an index snapshot")
    offset = len(MAGIC)
    (header_length,) = _LENGTH.unpack_from(view, offset)
    offset += _LENGTH.size
    header = json.loads(bytes(view[offset : offset + header_length]))
    offset += header_length
    if header.get("format") != FORMAT_VERSION or header.get("vectorDtype") != SNAPSHOT_VECTOR_DTYPE.str:
        raise SnapshotError(f"unsupported snapshot format {header.get('format')!r}")
    rows, dimensions = int(header["rows"]), int(header["dimensions"])
    sections: dict[str, memoryview] = {}
    for name in _SECTIONS:
        length = int(header["sections"][name])
        if length < 0 or offset + length > len(view):
            raise SnapshotError("snapshot is truncated")
        sections[name] = view[offset : offset + length]
        offset += length
    if offset != len(view):
        raise SnapshotError("snapshot has trailing bytes")
    refs = [_ref(line) for line in bytes(sections["refs"]).decode("utf-8").split("\n")] if rows else []
    alive = np.frombuffer(sections["alive"], dtype=np.uint8).astype(bool)
    codes = np.frombuffer(sections["codes"], dtype="<u4").astype(np.uint32)
    vectors = np.frombuffer(sections["vectors"], dtype=SNAPSHOT_VECTOR_DTYPE).astype(np.float32)
    categories = [str(name) for name in header["categories"]]
    if not (len(refs) == rows == alive.shape[0] == codes.shape[0]) or vectors.size != rows * dimensions:
        raise SnapshotError("snapshot sections disagree on the number of rows")
    if rows and int(codes.max()) >= len(categories):
        raise SnapshotError("snapshot names a category it does not list")
    ann = bytes(sections["ann"]) or None
    return IndexSnapshot(
        refs=refs,
        lexical=zlib.decompress(sections["lexical"]),
        alive=alive,
        codes=codes,
        categories=categories,
        vectors=vectors.reshape(rows, dimensions),
        ann=ann,
        ann_settings=header.get("annSettings") if ann else None,
        position=str(header["position"]),
        applied=[str(entry_id) for entry_id in header["applied"]],
        stamp=int(header["stamp"]),
        taken_at=float(header["takenAt"]),
        generation=int(header["generation"]),
    )


def _ref(line: str) -> ItemRef | None:
    if not line:
        return None
    kind, separator, item_id = line.partition(":")
    if not separator or kind not in _KINDS or not item_id:
        raise SnapshotError("snapshot names an item of no known kind")
    return ItemRef(cast(ItemKind, kind), item_id)
