"""Event mode: the visit updates the watermark has not reached yet, as the coverage table keeps
them.

Updates arrive ahead of the watermark whenever one pings partition is read ahead of another (a
replay fetches a few thousand records of a partition at a time), and wait until it passes them.
Each coverage partition keeps one log of them, not each hot spot: a table record costs more
than its bytes, and the log writes at most a record or two per partition and flush, however
many hot spots have updates waiting.

When the stage's writes are taken (at the worker's flush, between batches), the partition's
updates that are still pending and not yet written go into one chunk, stored with the
partition's watermark at that moment: every update at or before it has been applied, since the
stage's watermark never goes back and after each batch every hot spot with an update at or
before it has been caught up. A restore takes the updates after the watermark of the latest
chunk. A chunk whose updates are all applied gives its key to the next chunk, or is deleted.

A chunk is stored as ``[seq, watermark_ms or null, [[hotspot_id, kind, unit_id, unit_type,
ts_ms, enter_ms], ...]]`` under :func:`pending_key`, each update as :data:`Update` has it;
``seq`` orders the chunks by arrival.
"""

from __future__ import annotations

import bisect
import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from stream.records import compact_json

#: table keys of pending chunks start with a byte no hot spot id (a JSON string in the file)
#: starts with, as visits' keys do (``coverage_codec.VISIT_KEY_PREFIX``)
PENDING_KEY_PREFIX = b"\x01"

#: ``[kind, unit_id, unit_type, ts_ms, enter_ms]``: as decoded (a list) or as kept (a tuple).
#: ``kind`` is a code (:data:`KIND_CODES`); an ``INSIDE`` update carries neither unit type nor
#: enter time (``null``), and an ``ENTER`` no enter time (its ts is that): the ledger does not
#: read them (``CoverageStage._apply``).
Update = Sequence[Any]

#: an update's kind as sent on the internal topic and kept: a small int, of which the
#: interpreter holds one object for good, where every decoded string is a new object; a
#: replay's batch decodes a great many updates at once, and the memory they leave free stays
#: the worker's
ENTER, INSIDE, EXIT = 0, 1, 2
KIND_CODES = {"enter": ENTER, "inside": INSIDE, "exit": EXIT}


def coded_update(
    kind: str, unit_id: str, unit_type: str | None, ts_ms: int, enter_ms: int | None
) -> tuple[Any, ...]:
    """An update as sent and kept (:data:`Update`), from the presence stage's kind name."""
    code = KIND_CODES[kind]
    if code == INSIDE:
        return (INSIDE, unit_id, None, ts_ms, None)
    return (code, unit_id, unit_type, ts_ms, enter_ms if code == EXIT else None)


#: a stored entry's ts (an update with its hot spot first: ``[hotspot_id, *update]``)
_entry_ts = itemgetter(4)


def kept_updates(updates: Iterable[Update], after_ms: int | None = None) -> list[Update]:
    """Updates as kept until the watermark passes them: tuples, their unit type the
    interpreter's one copy of each. A decoded update is a list and objects of its own, and in
    event mode updates wait for a slow pings partition, tens of thousands at once in a replay.

    With ``after_ms``, only the updates after it: the others are applied before their batch
    ends, so are left as they are (converting them too is work for nothing)."""
    intern = sys.intern
    return [
        u
        if after_ms is not None and u[3] <= after_ms
        else (u[0], u[1], None if u[2] is None else intern(u[2]), u[3], u[4])
        for u in updates
    ]


def pending_key(partition: int, slot: int) -> bytes:
    return PENDING_KEY_PREFIX + orjson.dumps([partition, slot])


def stored_chunks(store: Iterable[tuple[bytes, bytes]]) -> dict[int, list[tuple[int, bytes]]]:
    """The pending chunks among table entries, by coverage partition: ``(slot, value)``."""
    chunks: dict[int, list[tuple[int, bytes]]] = {}
    for key, raw in store:
        if key[:1] == PENDING_KEY_PREFIX:
            partition, slot = orjson.loads(key[1:])
            chunks.setdefault(partition, []).append((slot, raw))
    return chunks


@dataclass
class _Chunk:
    slot: int
    seq: int
    #: its updates' ts, sorted
    times: list[int]


class PendingLog:
    """One coverage partition's chunks of pending updates, as stored, and the updates added
    since they were last written."""

    def __init__(self, partition: int, stored: Iterable[tuple[int, bytes]] = ()) -> None:
        self.partition = partition
        #: the updates the store holds as pending, by hot spot, in arrival order
        self.restored: dict[str, list[Update]] = {}
        decoded = sorted(((orjson.loads(raw), slot) for slot, raw in stored), key=_seq_of)
        #: the watermark written with the latest chunk
        self.written_ms: int | None = decoded[-1][0][1] if decoded else None
        self._chunks: list[_Chunk] = []
        for (seq, _, entries), slot in decoded:
            self._chunks.append(_Chunk(slot, seq, sorted(map(_entry_ts, entries))))
            for entry in entries:
                if self.written_ms is None or _entry_ts(entry) > self.written_ms:
                    self.restored.setdefault(entry[0], []).append(entry[1:])
        self.restored = {h: kept_updates(updates) for h, updates in self.restored.items()}
        self._next_seq = self._chunks[-1].seq + 1 if self._chunks else 0
        #: updates added since the last write, by hot spot, as added
        self._fresh: list[tuple[str, list[Update]]] = []

    def add(self, hotspot_id: str, updates: list[Update]) -> None:
        """A hot spot's updates, in arrival order (the list is kept as it is: not changed after)."""
        self._fresh.append((hotspot_id, updates))

    def changes(self, watermark_ms: int | None) -> list[tuple[bytes, bytes | None]]:
        """Between batches, with the partition's watermark then: the table writes (``None``:
        delete) that store what changed, if anything did. The updates added since the last call
        and still after the watermark go into a new chunk with the watermark, written whenever
        there are any or when the watermark has taken updates of a stored chunk since; chunks
        it has taken all of are reused or deleted."""
        fresh = [
            [hotspot_id, *update]
            for hotspot_id, updates in self._fresh
            for update in updates
            if watermark_ms is None or update[3] > watermark_ms
        ]
        self._fresh = []
        if not fresh and not self._taken_since_written(watermark_ms):
            return []
        used = [c for c in self._chunks if _applied(c, watermark_ms)]
        kept = [c for c in self._chunks if not _applied(c, watermark_ms)]
        writes: list[tuple[bytes, bytes | None]] = []
        self.written_ms = watermark_ms
        if fresh or kept:
            slot = used.pop(0).slot if used else self._unused_slot()
            value = compact_json([self._next_seq, watermark_ms, fresh])
            writes.append((pending_key(self.partition, slot), value))
            kept.append(_Chunk(slot, self._next_seq, sorted(map(_entry_ts, fresh))))
            self._next_seq += 1
        self._chunks = kept
        writes += [(pending_key(self.partition, c.slot), None) for c in used]
        return writes

    def _taken_since_written(self, watermark_ms: int | None) -> bool:
        if watermark_ms is None:
            return False
        written = self.written_ms
        return any(
            bisect.bisect_right(c.times, watermark_ms)
            > (0 if written is None else bisect.bisect_right(c.times, written))
            for c in self._chunks
        )

    def _unused_slot(self) -> int:
        used = {chunk.slot for chunk in self._chunks}
        return next(slot for slot in itertools.count() if slot not in used)


def _applied(chunk: _Chunk, watermark_ms: int | None) -> bool:
    """Whether the watermark has passed every update of the chunk (none, for a chunk that only
    carries a watermark)."""
    return not chunk.times or (watermark_ms is not None and chunk.times[-1] <= watermark_ms)


def _seq_of(item: tuple[list[Any], int]) -> int:
    return int(item[0][0])
