"""The coverage stage: visit updates keyed by hot spot in, coverage alerts out.

Presence is decided per unit, coverage per hot spot, so the presence stage re-keys what coverage
needs (enter, each inside fix, exit) by ``hotspot_id`` onto an internal topic. This stage keeps
one :class:`geofences.coverage.HotspotCoverage` ledger per hot spot, persisted in a changelog
table (what changed, at the worker's flush: :meth:`CoverageStage.take_writes`, encoded by
stream/worker/coverage_codec.py), and moves it forward with the clock: the wall clock in ``live``
mode (a timer, so alerts fire even when no ping arrives), or in ``event`` mode the watermark
that the presence stage broadcasts to every partition of the internal topic after each batch.

The internal topic carries three kinds of message, each a JSON array led by its kind: visit
updates (:func:`update_messages`), clock parts (:func:`clock_message`) and windows assigned at
run time (:meth:`CoverageStage.route_assignments`). Any other is refused.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from geofences.coverage import Alert, CoverageSettings, HotspotCoverage
from geofences.errors import InvalidAssignment
from geofences.hotspots import HotSpotCollection, Window, parse_window
from geofences.windows import add_window, parse_assignment, window_to_obj
from stream.kafka import key_partition
from stream.records import Consumed, Message, VisitUpdate, compact_json, dead_letter
from stream.worker.coverage_codec import CoverageCodec, Writes
from stream.worker.pending import (
    ENTER,
    EXIT,
    INSIDE,
    PendingLog,
    Update,
    coded_update,
    kept_updates,
    stored_chunks,
)

#: an update's ts (``[kind, unit_id, unit_type, ts_ms, enter_ms]``)
_ts_of = itemgetter(3)


def _in_ts_order(messages: Sequence[Update]) -> bool:
    return all(a[3] <= b[3] for a, b in itertools.pairwise(messages))


#: the most record bytes :meth:`CoverageStage.process` decodes at once. Every update decodes to
#: objects of its own, which live until its slice is applied: a replay's batch, decoded whole,
#: would hold a great many at once, and the memory they leave free among the visits kept from
#: them stays the worker's. Slices bound that, and cost no more per ping.
SLICE_BYTES = 1024 * 1024


def record_slices(records: Sequence[Consumed], most_bytes: int) -> Iterator[Sequence[Consumed]]:
    """``records`` in runs of consecutive records of at most ``most_bytes`` of values (a record
    larger than that is a run of its own)."""
    start, size = 0, 0
    for i, record in enumerate(records):
        length = len(record.value or b"")
        if size and size + length > most_bytes:
            yield records[start:i]
            start, size = i, 0
        size += length
    if start < len(records):
        yield records[start:]


#: the kind of a message of visit updates grouped by hot spot, their kinds coded
#: (``stream.worker.pending.KIND_CODES``)
VISITS = "visits2"


def update_messages(
    updates: Sequence[VisitUpdate], partition_of: Mapping[str, int]
) -> list[tuple[int, bytes]]:
    """A batch's visit updates as one message per coverage partition, grouped by hot spot,
    each hot spot's keeping their order:
    ``["visits2", {hotspot_id: [[kind, unit_id, unit_type, ts_ms, enter_ms], ...], ...}]``,
    each update as :data:`stream.worker.pending.Update` describes.

    One Faust event per partition and batch instead of one per update: the coverage agent's cost
    is per event, and a batch of pings inside hot spots makes almost as many updates as pings.
    Grouped, since a hot spot's ledger takes its updates together, and only a hot spot's own
    updates need an order."""
    by_spot: dict[str, list[tuple[Any, ...]]] = {}
    for u in updates:
        entry = coded_update(u.kind, u.unit_id, u.unit_type, u.ts_ms, u.enter_ms)
        entries = by_spot.get(u.hotspot_id)
        if entries is None:
            by_spot[u.hotspot_id] = [entry]
        else:
            entries.append(entry)
    grouped: dict[int, dict[str, list[tuple[Any, ...]]]] = {}
    for hotspot_id, entries in by_spot.items():
        grouped.setdefault(partition_of[hotspot_id], {})[hotspot_id] = entries
    return [(p, orjson.dumps([VISITS, spots])) for p, spots in sorted(grouped.items())]


def clock_message(parts: dict[str, int], first_ms: int | None) -> bytes:
    """The event-time watermark's parts (pings partition → largest ts), for every coverage
    partition, with the earliest ping ts the sender has seen (where event time began)."""
    return orjson.dumps(["clock", parts, first_ms])


@dataclass
class CoverageOutput:
    alerts: list[Message] = field(default_factory=list)
    dead_letters: list[Message] = field(default_factory=list)
    decided: list[Alert] = field(default_factory=list)


class CoverageStage:
    """Ledgers of the hot spots whose partitions this worker owns."""

    def __init__(
        self, collection: HotSpotCollection, settings: CoverageSettings, partitions: int
    ) -> None:
        self.collection = collection
        self.settings = settings
        self.partitions = partitions
        self.file_windows = {h.id: h.windows for h in collection.hotspots}
        self.partition_of = {h: key_partition(h.encode(), partitions) for h in self.file_windows}
        self.ledgers: dict[str, HotspotCoverage] = {}
        self.assigned: dict[str, tuple[Window, ...]] = {}
        self.codec = CoverageCodec()
        #: event mode: visit updates not yet reached by the watermark, per hot spot, by ts (in
        #: arrival order within a ts), and as stored, per coverage partition (stream/worker/pending.py)
        self.pending: dict[str, list[Update]] = {}
        self._logs: dict[int, PendingLog] = {}
        #: event mode, per coverage partition: the watermark as last seen; it never goes back
        self._watermarks: dict[int, int] = {}
        #: per coverage partition: "topic:partition" of pings -> largest ts seen there (event
        #: mode), merged from all workers' clock messages that arrived on that partition. Updates
        #: and clock messages keep their order only within a partition, so each partition's
        #: hot spots follow the clock that arrived after their own updates.
        self.clock_parts: dict[int, dict[str, int]] = {}
        #: the earliest event time any presence worker has reported: a new ledger starts there.
        self.first_ms: int | None = None
        #: event mode, per coverage partition: when each loaded hot spot next needs the clock
        #: (its ledger's next wakeup, or its earliest pending update), and a heap of the same
        #: with superseded entries, so a moving watermark visits only the hot spots now due.
        self._wake_of: dict[int, dict[str, int]] = {}
        self._wakes: dict[int, list[tuple[int, str]]] = {}
        #: partitions whose every hot spot has been loaded and caught up since the last rebalance
        self._primed: set[int] = set()
        #: hot spots whose ledger changed since :meth:`take_writes`, and whether pending
        #: updates may have (event mode)
        self._unwritten: set[str] = set()
        self._pending_unwritten = False
        #: live mode: hot spots a batch applied in parts has touched, decided with its last part
        self._undecided: set[str] = set()

    # -- state ------------------------------------------------------------------------------

    def hotspots_of(self, partitions: Collection[int]) -> list[str]:
        return sorted(h for h, p in self.partition_of.items() if p in partitions)

    def ledger(self, hotspot_id: str, store: Mapping[bytes, bytes]) -> HotspotCoverage:
        ledger = self.ledgers.get(hotspot_id)
        if ledger is not None:
            return ledger
        log = self._log(self.partition_of[hotspot_id], store)
        pending = self.pending[hotspot_id] = log.restored.pop(hotspot_id, [])
        stored = self.codec.read(hotspot_id, store)
        assigned: tuple[Window, ...] = ()
        if stored is not None:
            snapshot, assigned = stored
            windows = self._windows(hotspot_id, assigned)
            ledger = HotspotCoverage.from_dict(
                snapshot, windows, self.collection.timezone, self.settings
            )
        else:
            ledger = HotspotCoverage(
                hotspot_id, self.file_windows[hotspot_id], self.collection.timezone, self.settings
            )
        pending.sort(key=_ts_of)
        self.assigned[hotspot_id] = assigned
        self.ledgers[hotspot_id] = ledger
        return ledger

    def _log(self, partition: int, store: Mapping[bytes, bytes]) -> PendingLog:
        """The partition's pending log; the first after a rebalance reads every partition's
        chunks from the store."""
        if not self._logs:
            for p, chunks in stored_chunks(store.items()).items():
                stored = self._logs[p] = PendingLog(p, chunks)
                if stored.written_ms is not None:  # applied before the restart or rebalance
                    self._watermarks[p] = max(stored.written_ms, self._watermarks.get(p, -1))
        log = self._logs.get(partition)
        if log is None:
            log = self._logs[partition] = PendingLog(partition)
        return log

    def _windows(self, hotspot_id: str, assigned: Sequence[Window]) -> tuple[Window, ...]:
        windows = self.file_windows[hotspot_id]
        for window in assigned:
            windows = add_window(windows, window)
        return windows

    def forget(self) -> None:
        self.ledgers.clear()
        self.assigned.clear()
        self.codec.forget()
        self.pending.clear()
        self._logs.clear()
        self._wake_of.clear()
        self._wakes.clear()
        self._primed.clear()
        self._unwritten.clear()
        self._pending_unwritten = False
        self._undecided.clear()

    def take_writes(self, most: int | None = None) -> Writes:
        """The table writes that store what changed since the last call: table key ->
        (partition, encoded value, or None to delete). Hot spot headers and visits, each as it
        is now however many batches changed it since, and the pending updates (event mode).
        With ``most``, whole hot spots until there are at least ``most`` writes, the pending
        updates once no hot spot is left (:attr:`unwritten` says whether any is).

        A checkpoint acks the records processed before only once these writes are acknowledged:
        the store then always holds the ledgers as of the committed offsets, and a restart
        reads on from there."""
        out: Writes = {}
        for hotspot_id in sorted(self._unwritten):
            if most is not None and len(out) >= most:
                return out
            self._unwritten.discard(hotspot_id)
            ledger = self.ledgers.get(hotspot_id)
            if ledger is not None:
                partition = self.partition_of[hotspot_id]
                self.codec.write(ledger, self.assigned[hotspot_id], partition, out)
        if self._pending_unwritten:
            self._pending_unwritten = False
            for partition, log in sorted(self._logs.items()):
                for key, value in log.changes(self.watermark_ms(partition)):
                    out[key] = (partition, value)
        return out

    @property
    def unwritten(self) -> bool:
        """Whether anything waits for :meth:`take_writes`."""
        return bool(self._unwritten) or self._pending_unwritten

    def _advance(self, hotspot_id: str, now_ms: int, out: CoverageOutput) -> None:
        self._emit(hotspot_id, self.ledgers[hotspot_id].advance(now_ms), out)

    @staticmethod
    def _emit(hotspot_id: str, alerts: list[Alert], out: CoverageOutput) -> None:
        for alert in alerts:
            out.decided.append(alert)
            out.alerts.append((hotspot_id.encode(), compact_json(alert.to_json_dict())))

    def _advance_through(self, hotspot_id: str, until_ms: int, out: CoverageOutput) -> None:
        """Fire every decision the ledger has due up to ``until_ms``, each at its own time."""
        ledger = self.ledgers[hotspot_id]
        previous: int | None = None
        while ledger.now_ms is not None:
            wake = ledger.next_wakeup_ms()
            if wake is None or wake > until_ms or wake == previous:
                return
            previous = wake
            self._advance(hotspot_id, max(wake, ledger.now_ms or wake), out)

    def _catch_up(
        self, hotspot_id: str, watermark_ms: int, out: CoverageOutput, prior_ms: int | None = None
    ) -> None:
        """Event mode: apply the updates the watermark has passed in time order, deciding alerts
        between them at the moment each became due, so a batch boundary changes nothing.

        ``prior_ms``: the watermark before this batch, which a ledger not due since (``_due``)
        skipped; its clock moves there first, deciding nothing, as if it had been visited."""
        ledger = self.ledgers[hotspot_id]
        if ledger.now_ms is not None and prior_ms is not None and ledger.now_ms < prior_ms:
            self._advance(hotspot_id, prior_ms, out)
        pending = self.pending[hotspot_id]
        taken = bisect.bisect_right(pending, watermark_ms, key=_ts_of) if pending else 0
        ready = pending[:taken]
        del pending[:taken]
        if ledger.now_ms is None:
            starts = [m[3] for m in ready] + [watermark_ms]
            if self.first_ms is not None:
                starts.append(self.first_ms)
            self._advance(hotspot_id, min(starts), out)
        next_wakeup, apply, advance = ledger.next_wakeup_ms, self._apply, ledger.advance
        for message in ready:
            ts_ms = message[3]
            wake = next_wakeup()
            if wake is not None and wake < ts_ms:
                self._advance_through(hotspot_id, ts_ms - 1, out)
            apply(ledger, message)
            now_ms = ledger.now_ms
            alerts = advance(ts_ms if now_ms is None or ts_ms > now_ms else now_ms)
            if alerts:
                self._emit(hotspot_id, alerts, out)
        self._advance_through(hotspot_id, watermark_ms, out)
        self._advance(hotspot_id, watermark_ms, out)

    @staticmethod
    def _apply(ledger: HotspotCoverage, message: Update) -> None:
        kind, unit_id, unit_type, ts_ms, enter_ms = message
        if kind == INSIDE:  # most updates
            ledger.visit_progress(unit_id, ts_ms)
        elif kind == ENTER:
            ledger.visit_started(unit_id, unit_type, ts_ms)
        elif kind == EXIT:
            ledger.visit_ended(unit_id, ts_ms, enter_ms, unit_type)

    # -- time -------------------------------------------------------------------------------

    def watermark_ms(self, partition: int) -> int | None:
        """The smallest of the partition's clock parts, or where it was if that is later: a
        pings partition reporting for the first time may be behind the others, but what the
        stage has applied stays applied (and its pending log relies on that)."""
        parts = self.clock_parts.get(partition)
        if not parts:
            return None
        watermark = min(parts.values())
        applied = self._watermarks.get(partition, -1)
        if watermark < applied:
            return applied
        self._watermarks[partition] = watermark
        return watermark

    def _watermarks_now(self) -> dict[int, int | None]:
        """Each partition's watermark (``watermark_ms``), found once for many hot spots."""
        return {p: self.watermark_ms(p) for p in self.clock_parts}

    def advance_all(
        self, now_ms: int, partitions: Collection[int], store: Mapping[bytes, bytes]
    ) -> CoverageOutput:
        """Move every owned hot spot's ledger to ``now_ms`` (the clock ticking with no pings)."""
        out = CoverageOutput()
        for hotspot_id in self.hotspots_of(partitions):
            ledger = self.ledger(hotspot_id, store)
            wake = ledger.next_wakeup_ms()
            if wake is not None and wake <= now_ms:
                self._advance(hotspot_id, now_ms, out)
                self._unwritten.add(hotspot_id)
        return out

    # -- records ----------------------------------------------------------------------------

    def process(
        self,
        records: Sequence[Consumed],
        store: Mapping[bytes, bytes],
        live_now_ms: int | None,
        owned: Collection[int],
        decide: bool = True,
    ) -> CoverageOutput:
        """Apply a batch of internal records, then decide alerts at the clock.

        ``live_now_ms`` is the wall clock in live mode, ``None`` in event mode (the watermark
        then comes from the clock records). The records are taken in runs of at most
        :data:`SLICE_BYTES`, each applied before the next is decoded. In event mode each run's
        alerts are decided by the watermark as it goes: a batch boundary changes no decision
        (``_catch_up``). In live mode the hot spots the batch touched are decided at
        ``live_now_ms`` once all of it is applied; with ``decide`` False they wait for the next
        call that decides, so a batch applied in parts decides as one."""
        out = CoverageOutput()
        slices = list(record_slices(records, SLICE_BYTES))
        for i, records_slice in enumerate(slices):
            last = decide and i == len(slices) - 1
            self._process_slice(records_slice, store, live_now_ms, owned, out, last)
        if decide and not slices:
            self._process_slice((), store, live_now_ms, owned, out, True)
        return out

    def _process_slice(
        self,
        records: Sequence[Consumed],
        store: Mapping[bytes, bytes],
        live_now_ms: int | None,
        owned: Collection[int],
        out: CoverageOutput,
        decide: bool = True,
    ) -> None:
        touched: set[str] = set()
        clock_moved: set[int] = set()
        prior = self._watermarks_now()
        #: visit updates by hot spot, in arrival order, gathered from consecutive records: a
        #: hot spot's updates of many presence batches are taken at once
        gathered: dict[str, list[Update]] = {}
        for record in records:
            message: list[Any] = orjson.loads(record.value or b"null")
            kind = message[0]
            if kind == "clock":
                first_ms = message[2]
                if first_ms is not None and (self.first_ms is None or first_ms < self.first_ms):
                    self.first_ms = first_ms
                parts = self.clock_parts.setdefault(record.partition, {})
                for part, ts_ms in message[1].items():
                    if ts_ms > parts.get(part, -1):
                        parts[part] = ts_ms
                        clock_moved.add(record.partition)
                continue
            if kind == VISITS:
                for hotspot_id, updates in message[1].items():
                    earlier = gathered.get(hotspot_id)
                    if earlier is None:
                        gathered[hotspot_id] = updates
                    else:
                        earlier += updates
                continue
            if kind != "assign":
                raise ValueError(f"visit updates topic: unknown message kind {kind!r}")
            self._take_gathered(gathered, store, live_now_ms, touched)  # before what follows
            gathered = {}
            self._take((record.key or b"").decode(), [message], store, live_now_ms, touched)
        self._take_gathered(gathered, store, live_now_ms, touched)

        if live_now_ms is not None:
            self._undecided |= touched
            if decide:
                for hotspot_id in sorted(self._undecided):
                    self._advance(hotspot_id, live_now_ms, out)
                self._undecided.clear()
        else:
            due = touched | self._due(clock_moved & set(owned))
            watermarks = self._watermarks_now()
            for hotspot_id in sorted(due):
                partition = self.partition_of[hotspot_id]
                watermark = watermarks.get(partition)
                if watermark is not None:
                    self.ledger(hotspot_id, store)
                    self._catch_up(hotspot_id, watermark, out, prior.get(partition))
                    self._note_wake(hotspot_id)
            touched |= due
        self._unwritten |= touched
        if live_now_ms is None:
            self._pending_unwritten = True

    def _due(self, partitions: Collection[int]) -> set[str]:
        """Event mode: the hot spots of ``partitions`` the watermark has reached: every one
        the first time after a rebalance, then those whose wake time it passed. The others
        would decide nothing (their ledgers' ``advance`` would only move the clock)."""
        due: set[str] = set()
        for partition in partitions:
            watermark = self.watermark_ms(partition)
            if watermark is None:
                continue
            if partition not in self._primed:
                self._primed.add(partition)
                due.update(self.hotspots_of({partition}))
                continue
            heap = self._wakes.get(partition, [])
            wake_of = self._wake_of.get(partition, {})
            while heap and heap[0][0] <= watermark:
                wake, hotspot_id = heapq.heappop(heap)
                if wake_of.get(hotspot_id) == wake:
                    due.add(hotspot_id)
        return due

    def _note_wake(self, hotspot_id: str) -> None:
        wakes = [m[3] for m in self.pending.get(hotspot_id, ())[:1]]
        ledger_wake = self.ledgers[hotspot_id].next_wakeup_ms()
        if ledger_wake is not None:
            wakes.append(ledger_wake)
        partition = self.partition_of[hotspot_id]
        wake_of = self._wake_of.setdefault(partition, {})
        if not wakes:
            wake_of.pop(hotspot_id, None)
            return
        wake = min(wakes)
        if wake_of.get(hotspot_id) == wake:
            return
        wake_of[hotspot_id] = wake
        heap = self._wakes.setdefault(partition, [])
        heapq.heappush(heap, (wake, hotspot_id))
        if len(heap) > 2 * len(wake_of) + 1024:  # drop superseded entries
            heap[:] = [(w, h) for h, w in wake_of.items()]
            heapq.heapify(heap)

    def _take_gathered(
        self,
        gathered: dict[str, list[Update]],
        store: Mapping[bytes, bytes],
        live_now_ms: int | None,
        touched: set[str],
    ) -> None:
        if not gathered:
            return
        watermarks = self._watermarks_now() if live_now_ms is None else {}
        for hotspot_id, updates in gathered.items():
            watermark = watermarks.get(self.partition_of.get(hotspot_id, -1))
            self._take(hotspot_id, updates, store, live_now_ms, touched, watermark)

    def _take(
        self,
        hotspot_id: str,
        messages: list[Update],
        store: Mapping[bytes, bytes],
        live_now_ms: int | None,
        touched: set[str],
        watermark_ms: int | None = None,
    ) -> None:
        """A hot spot's updates (``[kind, unit_id, unit_type, ts_ms, enter_ms]``, in order) or
        an assignment: applied now (live), or kept until the watermark passes them (event).

        ``watermark_ms``: the partition's watermark as the records so far have it. The batch
        applies the updates it has passed before it ends; only the others wait, as kept."""
        if hotspot_id not in self.file_windows:
            return
        ledger = self.ledger(hotspot_id, store)
        touched.add(hotspot_id)
        if messages[0][0] == "assign":
            for message in messages:
                window = parse_window(message[1], "assignment")
                self.assigned[hotspot_id] = add_window(self.assigned[hotspot_id], window)
            ledger.set_windows(self._windows(hotspot_id, self.assigned[hotspot_id]))
        elif live_now_ms is None:
            messages = kept_updates(messages, after_ms=watermark_ms)
            pending = self.pending[hotspot_id]
            if (pending and messages[0][3] < pending[-1][3]) or not _in_ts_order(messages):
                for message in messages:
                    bisect.insort_right(pending, message, key=_ts_of)
            else:
                pending.extend(messages)
            self._logs[self.partition_of[hotspot_id]].add(hotspot_id, messages)
        else:
            for message in messages:
                self._apply(ledger, message)

    def route_assignments(self, records: Sequence[Consumed]) -> tuple[list[Message], list[Message]]:
        """Validate ``assignments`` records: (re-keyed internal messages, dead letters)."""
        routed: list[Message] = []
        dead: list[Message] = []
        for record in records:
            try:
                obj = orjson.loads(record.value or b"")
            except orjson.JSONDecodeError:
                dead.append((record.key, dead_letter(record, "assignment: not JSON")))
                continue
            try:
                hotspot_id, window = parse_assignment(obj, self.file_windows)
            except InvalidAssignment as exc:
                dead.append((record.key, dead_letter(record, str(exc))))
                continue
            routed.append((hotspot_id.encode(), orjson.dumps(["assign", window_to_obj(window)])))
        return routed, dead
