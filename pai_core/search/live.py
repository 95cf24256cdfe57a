"""The search index a container keeps across warm invocations: one HybridIndex per owner (its
vectors and its lexical index; a bounded LRU of owners), loaded once, then kept current by reading
only what changed. Every change below reaches both halves (pai_core.search.hybrid); ranking is
hybrid unless the policy says "dense".

Per search, with nothing changed: one GetItem of the owner's head (its change stamp; 1 read unit).
When the stamp moved: a key-range Query of the owner's change-log entries past the index's
position, minus a margin of `id_margin_seconds` of id-space (an entry's id is made before its write
lands, possibly on another container; see pai_core.search.changes), entries already applied
skipped by their id; then the current state of every item those entries name, read by key (one
BatchGetItem per kind): an item found is put in the index as it is now (so an update re-ranks it
by its new content at once), an item not found is removed. Reading the state rather than replaying
each op makes the order in which entries land irrelevant. A container's own stores, updates and
deletes reach its index at once (put / removed), before any read.

The index is generic over ItemKind: one IndexSource per kind (memories now, passages next) reads
items by key and in full; entries of a kind with no source are skipped.

Cold start: the owner's snapshot (one S3 object) when there is one, then the changes since its
position; else a consistent Query of every item. A snapshot is rewritten once the changes applied
since it was taken reach `snapshot_rebuild_changes`. Every `full_reload_seconds` a warm index is
rebuilt from the table anyway (a bound on staleness should anything ever be missed).

Forget, in any container: the stamp read on every search also carries the owner's generation, which
a forget moves before it destroys the owner's keys. An index (and this container's cached keys of
the owner, through `on_generation_moved`) built under an older generation is dropped at its next
search; a snapshot records its generation and is loaded only under that same generation; a snapshot
is written only if the generation read just before writing is still the one the index was built
under (else no key is asked for), and withdrawn if the generation read just after has moved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from pai_core.errors import PaiError
from pai_core.ids import id_millis, lowest_id_at
from pai_core.models import ChangeEntry, ChangeStamp, IndexedItem, ItemKind, ItemRef, RankedItem
from pai_core.ports import NO_METRICS, ChangeLog, IndexSnapshotStore, IndexSource, Metrics
from pai_core.search.changes import CHANGE_ENTRY_TTL_SECONDS, WRITE_LANDS_WITHIN_SECONDS
from pai_core.search.fusion import DEFAULT_FUSION, FusionSettings
from pai_core.search.hybrid import HybridIndex, Ranking
from pai_core.search.index import AnnSettings
from pai_core.search.snapshot import IndexSnapshot, SnapshotError, decode, encode

log = logging.getLogger(__name__)

# How a search found its owner's index (the SearchIndexRefresh metric's `kind`): "warm" (the stamp
# had not moved), "changes" (caught up from the change log), "snapshot" (a cold load from the S3
# snapshot, then its changes), "table" (a cold load from the table), "reload" (the periodic rebuild).
RefreshKind = Literal["warm", "changes", "snapshot", "table", "reload"]


@dataclass(frozen=True)
class IndexPolicy:
    ann: AnnSettings | None = field(default_factory=AnnSettings)
    id_margin_seconds: float = 120.0
    full_reload_seconds: float = 6 * 3600.0
    snapshot_min_vectors: int = 1000
    snapshot_rebuild_changes: int = 500
    # An older snapshot is used only if nothing changed since (the entries it needs may have expired).
    snapshot_max_age_seconds: float = 3 * 24 * 3600.0
    snapshot_retry_seconds: float = 300.0
    max_owners: int = 8
    ranking: Ranking = "hybrid"
    fusion: FusionSettings = DEFAULT_FUSION

    def __post_init__(self) -> None:
        if self.id_margin_seconds < 0 or self.full_reload_seconds <= 0 or self.max_owners < 1:
            raise ValueError("index policy limits must be positive")
        if self.id_margin_seconds < WRITE_LANDS_WITHIN_SECONDS:
            raise ValueError(
                f"id_margin_seconds ({self.id_margin_seconds:g}) must cover the time a change-log entry can "
                f"take to land ({WRITE_LANDS_WITHIN_SECONDS:g} s): entries landing later would be missed"
            )
        for name, reach in (
            ("snapshot_max_age_seconds", self.snapshot_max_age_seconds),
            ("full_reload_seconds", self.full_reload_seconds),
        ):
            if reach + self.id_margin_seconds >= CHANGE_ENTRY_TTL_SECONDS:
                raise ValueError(
                    f"{name} plus id_margin_seconds must stay below the change-log entries' lifetime "
                    f"({CHANGE_ENTRY_TTL_SECONDS} s): an index that old would need entries that may have expired"
                )


@dataclass
class _OwnerIndex:
    lock: threading.Lock = field(default_factory=threading.Lock)
    index: HybridIndex | None = None
    stamp: ChangeStamp | None = None  # with the generation the index was built under
    position: str = ""  # the highest change-log entry id applied (or the moment of a full load)
    applied: set[str] = field(default_factory=set)  # entry ids applied within the margin below position
    loaded_at: float = 0.0  # monotonic
    changes_since_snapshot: int = 0
    snapshot_taken_at: float | None = None  # wall clock, of the snapshot this index started from
    snapshot_retry_at: float = 0.0  # monotonic


class LiveMemoryIndex:
    """The MemorySearchIndex of a container: see the module docstring."""

    def __init__(
        self,
        changes: ChangeLog,
        sources: Mapping[ItemKind, IndexSource],
        snapshots: IndexSnapshotStore | None,
        *,
        dimensions: int,
        policy: IndexPolicy | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_generation_moved: Callable[[str], None] | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """`on_generation_moved(owner)`: another container forgot the owner; drop what else this
        container holds of them (its unwrapped keys). `metrics`: each search's refresh kind and each
        snapshot write, counted."""
        self._feed = changes
        self._sources = dict(sources)
        self._snapshots = snapshots
        self._dimensions = dimensions
        self.policy = policy or IndexPolicy()
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._on_generation_moved = on_generation_moved
        self._metrics = metrics
        self._owners: OrderedDict[str, _OwnerIndex] = OrderedDict()
        self._lock = threading.Lock()
        self.events: Counter[str] = Counter()  # what the index did, for tests and the benchmark

    # -- the port ----------------------------------------------------------------------------------

    def search(
        self,
        owner: str,
        query: npt.NDArray[np.float32],
        *,
        text: str = "",
        top: int,
        category: str | None,
        min_score: float | None,
    ) -> list[RankedItem]:
        """`text` is the query's text, for lexical ranking. Scores and `min_score` are on the scale
        of the policy's ranking: pai_core.search.fusion's relevance, or the cosine for "dense"."""
        state = self._owner(owner)
        with state.lock:
            index = self._current(owner, state)
            return index.search(
                query,
                top,
                text=text,
                category=category,
                min_score=min_score,
                ranking=self.policy.ranking,
                fusion=self.policy.fusion,
            )

    def put(self, owner: str, item: IndexedItem) -> None:
        state = self._loaded(owner)
        if state is not None:
            with state.lock:
                if state.index is not None:
                    state.changes_since_snapshot += state.index.put([item])

    def removed(self, owner: str, ref: ItemRef) -> None:
        state = self._loaded(owner)
        if state is not None:
            with state.lock:
                if state.index is not None:
                    state.changes_since_snapshot += state.index.remove([ref])

    # -- inspection --------------------------------------------------------------------------------

    def index_of(self, owner: str) -> HybridIndex | None:
        state = self._loaded(owner)
        return None if state is None else state.index

    def forget_owner(self, owner: str) -> None:
        """Drops an owner's index from memory (a cold start for that owner, in tests)."""
        with self._lock:
            self._owners.pop(owner, None)

    # -- keeping it current ------------------------------------------------------------------------

    def _owner(self, owner: str) -> _OwnerIndex:
        with self._lock:
            state = self._owners.get(owner)
            if state is None:
                state = self._owners[owner] = _OwnerIndex()
                while len(self._owners) > self.policy.max_owners:
                    self._owners.popitem(last=False)
                    self.events["owner_evicted"] += 1
            self._owners.move_to_end(owner)
            return state

    def _loaded(self, owner: str) -> _OwnerIndex | None:
        with self._lock:
            return self._owners.get(owner)

    def _current(self, owner: str, state: _OwnerIndex) -> HybridIndex:
        now = self._monotonic()
        kind: RefreshKind
        if state.index is None:
            kind = self._cold_load(owner, state)
        elif now - state.loaded_at >= self.policy.full_reload_seconds:
            self._full_load(owner, state, reason="full_reload")
            kind = "reload"
        else:
            stamp = self._feed.change_stamp(owner)
            assert state.stamp is not None
            if stamp.generation != state.stamp.generation:
                kind = self._start_over(owner, state)
            elif stamp != state.stamp:
                self._catch_up(owner, state, stamp)
                kind = "changes"
            else:
                self.events["unchanged"] += 1
                kind = "warm"
        self._metrics.count("SearchIndexRefresh", kind=kind)
        if not self._maybe_save_snapshot(owner, state):
            self._metrics.count("SearchIndexRefresh", kind=self._start_over(owner, state))
        assert state.index is not None
        return state.index

    def _start_over(self, owner: str, state: _OwnerIndex) -> RefreshKind:
        self._drop_forgotten(owner, state)
        return self._cold_load(owner, state)

    def _drop_forgotten(self, owner: str, state: _OwnerIndex) -> None:
        """The owner was forgotten since this index was built: nothing of it may be kept."""
        state.index = None
        state.stamp = None
        state.changes_since_snapshot = 0
        state.snapshot_taken_at = None
        self.events["generation_moved"] += 1
        if self._on_generation_moved is not None:
            self._on_generation_moved(owner)

    def _cold_load(self, owner: str, state: _OwnerIndex) -> RefreshKind:
        snapshot = self._read_snapshot(owner)
        if snapshot is None:
            self._full_load(owner, state, reason="full_load")
            return "table"
        stamp = self._feed.change_stamp(owner)
        if snapshot.generation != stamp.generation:
            # Built before a forget (its key is destroyed too, so this is a second lock, not the only one).
            self.events["snapshot_old_generation"] += 1
            self._full_load(owner, state, reason="full_load")
            return "table"
        age = self._wall_clock() - snapshot.taken_at
        if stamp.version != snapshot.stamp and age > self.policy.snapshot_max_age_seconds:
            # Change-log entries written since then may have expired: rebuild from the table.
            self.events["snapshot_too_old"] += 1
            self._full_load(owner, state, reason="full_load")
            return "table"
        try:
            index = HybridIndex.from_snapshot(snapshot, ann=self.policy.ann)
        except ValueError as exc:
            # Its texts are not in it: only the table can rebuild the lexical half.
            log.warning("index snapshot is unusable (%s); loading from the table", exc)
            self.events["snapshot_unreadable"] += 1
            self._full_load(owner, state, reason="full_load")
            return "table"
        state.index = index
        state.stamp = ChangeStamp(version=snapshot.stamp, generation=snapshot.generation)
        state.position = snapshot.position
        state.applied = set(snapshot.applied)
        state.loaded_at = self._monotonic()
        state.changes_since_snapshot = 0
        state.snapshot_taken_at = snapshot.taken_at
        self.events["snapshot_load"] += 1
        if stamp != state.stamp:
            self._catch_up(owner, state, stamp)
        return "snapshot"

    def _full_load(self, owner: str, state: _OwnerIndex, *, reason: str) -> None:
        # The stamp is read first: whatever changes after it is caught up with next time.
        stamp = self._feed.change_stamp(owner)
        if state.stamp is not None and stamp.generation != state.stamp.generation:
            self._drop_forgotten(owner, state)  # a periodic reload across a forget
        started_millis = int(self._wall_clock() * 1000)
        # An entry is written after its change has landed: every entry there now is of a change the
        # item reads below will see, so none of them needs reading again (whatever the clocks say).
        landed = [entry.id for entry in self._feed.changes_after(owner, self._below(lowest_id_at(started_millis)))]
        index = HybridIndex.empty(self._dimensions, ann=self.policy.ann)
        for source in self._sources.values():
            index.add(source.all_items(owner))
        changes = len(index)
        if state.index is not None:
            changes = state.changes_since_snapshot
            if state.index.refs() != index.refs():
                # Everything should have arrived through the change feed; say so if it did not.
                log.warning("search index differed from the table at its periodic reload; rebuilt")
                self.events["reload_found_drift"] += 1
                changes = max(changes, self.policy.snapshot_rebuild_changes)
        state.index = index
        state.stamp = stamp
        # Entries made before this load are of changes that landed before it began: it read them.
        state.position = max([lowest_id_at(started_millis), *landed])
        state.applied = {entry_id for entry_id in landed if entry_id >= self._below(state.position)}
        state.loaded_at = self._monotonic()
        state.changes_since_snapshot = changes
        self.events[reason] += 1

    def _catch_up(self, owner: str, state: _OwnerIndex, stamp: ChangeStamp) -> None:
        assert state.index is not None and state.stamp is not None
        if stamp.generation != state.stamp.generation:
            raise AssertionError("a catch-up never crosses a forget: the index starts over instead")
        entries = [e for e in self._feed.changes_after(owner, self._below(state.position)) if e.id not in state.applied]
        changes = self._apply(owner, state.index, entries)
        state.position = max([state.position, *(entry.id for entry in entries)])
        floor = self._below(state.position)
        state.applied = {entry_id for entry_id in state.applied | {e.id for e in entries} if entry_id >= floor}
        state.stamp = stamp
        state.changes_since_snapshot += changes
        self.events["catch_up"] += 1
        self.events["read_entries"] += len(entries)

    def _apply(self, owner: str, index: HybridIndex, entries: list[ChangeEntry]) -> int:
        """Puts every item the entries name as it is now, and removes those that are gone."""
        wanted: dict[ItemKind, list[str]] = {}
        for entry in entries:
            ids = wanted.setdefault(entry.ref.kind, [])
            if entry.ref.id not in ids:
                ids.append(entry.ref.id)
        changes = 0
        for kind, ids in wanted.items():
            source = self._sources.get(kind)
            if source is None:
                self.events["entries_of_unknown_kind"] += len(ids)
                continue
            found = list(source.items_by_id(owner, ids))
            self.events["read_items"] += len(found)
            present = {item.ref for item in found}
            changes += index.put(found)
            changes += index.remove(
                [ItemRef(kind, item_id) for item_id in ids if ItemRef(kind, item_id) not in present]
            )
        return changes

    def _below(self, watermark: str) -> str:
        """The watermark moved back by the safety margin (ids made a little earlier may land late)."""
        millis = id_millis(watermark)
        if millis is None:
            return watermark
        return lowest_id_at(millis - int(self.policy.id_margin_seconds * 1000))

    # -- snapshots ---------------------------------------------------------------------------------

    def _read_snapshot(self, owner: str) -> IndexSnapshot | None:
        if self._snapshots is None:
            return None
        try:
            payload = self._snapshots.load(owner)
        except PaiError as exc:  # unreachable, refused, failed authentication: load from the table
            log.warning("index snapshot could not be read (%s); loading from the table", exc.code)
            self.events["snapshot_unreadable"] += 1
            return None
        if payload is None:
            return None
        try:
            snapshot = decode(payload)
        except SnapshotError as exc:
            log.warning("index snapshot is unusable (%s); loading from the table", exc)
            self.events["snapshot_unreadable"] += 1
            return None
        if snapshot.vectors.shape[1] != self._dimensions:
            self.events["snapshot_unreadable"] += 1
            return None
        return snapshot

    def _snapshot_due(self, state: _OwnerIndex) -> bool:
        index = state.index
        policy = self.policy
        if self._snapshots is None or index is None or len(index) < policy.snapshot_min_vectors:
            return False
        if state.changes_since_snapshot == 0:
            return False
        aging = (
            state.snapshot_taken_at is not None
            and self._wall_clock() - state.snapshot_taken_at > policy.snapshot_max_age_seconds / 2
        )
        if state.changes_since_snapshot < policy.snapshot_rebuild_changes and not aging:
            return False
        return self._monotonic() >= state.snapshot_retry_at

    def _maybe_save_snapshot(self, owner: str, state: _OwnerIndex) -> bool:
        """False when the owner's generation moved under the index (and nothing was written)."""
        if not self._snapshot_due(state):
            return True
        index, snapshots = state.index, self._snapshots
        assert index is not None and snapshots is not None and state.stamp is not None
        now = self._monotonic()
        built_under = state.stamp.generation
        # Read again right before sealing: a forget since this search's own read must stop the
        # write before the keyring is asked for anything.
        if self._feed.change_stamp(owner).generation != built_under:
            self.events["snapshot_refused_generation"] += 1
            return False
        snapshot = index.snapshot(
            position=state.position,
            applied=sorted(state.applied),
            stamp=state.stamp.version,
            taken_at=self._wall_clock(),
            generation=built_under,
        )
        try:
            snapshots.save(owner, encode(snapshot))
        except PaiError as exc:
            log.warning("index snapshot could not be written (%s); will retry later", exc.code)
            state.snapshot_retry_at = now + self.policy.snapshot_retry_seconds
            self.events["snapshot_save_failed"] += 1
            self._metrics.count("SearchIndexSnapshotWrites", outcome="failed")
            return True
        # A forget that began between the read above and the write: its purge may have run before
        # the write landed, so take the object back (sealed under a destroyed key, it is unreadable
        # anyway, and its older generation keeps it from ever being loaded).
        if self._feed.change_stamp(owner).generation != built_under:
            try:
                snapshots.purge(owner)
            except PaiError as exc:
                log.warning("index snapshot written across a forget could not be withdrawn (%s)", exc.code)
            self.events["snapshot_withdrawn"] += 1
            return False
        state.changes_since_snapshot = 0
        state.snapshot_taken_at = snapshot.taken_at
        self.events["snapshot_save"] += 1
        self._metrics.count("SearchIndexSnapshotWrites", outcome="saved")
        return True
