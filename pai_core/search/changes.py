"""The bounds the change log and the search index rely on, in one place, so that code (IndexPolicy,
the adapter, a test of the template) checks them instead of comments repeating them.

A warm index reads the change-log entries past its position minus a margin: an entry's id is made
(from the clock of the container that writes it) just before its PutItem, after the item's own write
has landed, so an entry can land after entries with later ids, but never later than the function
that writes it can run, plus the clock skew between containers. Every function's timeout in
infra/template.yaml stays below WRITE_LANDS_WITHIN_SECONDS (a test reads it), and IndexPolicy refuses
an id margin below it. The one longer function, the document ingest (pai_core/services/documents.py),
writes its entries under a deadline of its own below that bound; an entry it could not write in
time reaches warm indexes at their next full reload.

Entries expire CHANGE_ENTRY_TTL_SECONDS after they were written (DynamoDB may delete them any time
after that). An index started from a snapshot, or kept warm since its last full load, reads entries
back to its position minus the margin: IndexPolicy refuses a snapshot age or a full-reload period
that, with the margin, reaches past that lifetime.
"""

from __future__ import annotations

WRITE_LANDS_WITHIN_SECONDS = 90.0
CHANGE_ENTRY_TTL_SECONDS = 7 * 24 * 3600
