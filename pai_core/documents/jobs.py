"""What goes on the document ingestion queue: a reference to an accepted upload (owner, document id),
never its content. The file itself stays sealed in the bucket; the ingest function reads it from there."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Protocol

_OWNER_MAX = 128
# Document ids are MemoryIds: time-ordered, URL-safe.
_DOCUMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InvalidIngestJob(ValueError):
    """A queue message that is not an ingestion job: dropped, never retried."""


@dataclass(frozen=True)
class IngestJob:
    owner: str
    document_id: str

    def to_json(self) -> str:
        return json.dumps({"v": 1, "owner": self.owner, "documentId": self.document_id}, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> IngestJob:
        try:
            data = json.loads(body)
            owner, document_id = data["owner"], data["documentId"]
        except (ValueError, TypeError, KeyError):
            raise InvalidIngestJob("not an ingestion job") from None
        valid = (
            data.get("v") == 1
            and isinstance(owner, str)
            and 0 < len(owner) <= _OWNER_MAX
            and "#" not in owner
            and isinstance(document_id, str)
            and _DOCUMENT_ID.match(document_id) is not None
        )
        if not valid:
            raise InvalidIngestJob("not an ingestion job")
        return cls(owner, document_id)


class IngestQueue(Protocol):
    def send(self, job: IngestJob) -> None:
        """Hand the job to the ingest function (UpstreamUnavailable when that cannot be done)."""
        ...
