"""The presence stage: a batch of raw ping records in, everything to publish and persist out.

This is the shell around :mod:`geofences.presence`: it decodes, dead-letters, re-keys, matches a
whole batch against the spatial index at once, keeps a cache of unit states in front of the
changelog table and an index of signal-loss deadlines. It knows nothing of Faust; the presence
loop in :mod:`stream.worker.app` feeds it records and carries its output to Kafka.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
import orjson

from geofences.errors import InvalidPing
from geofences.index import HotSpotIndex
from geofences.pings import Ping, decode_ping
from geofences.positions import PublishedFixes, PublishRule, fix_of
from geofences.presence import (
    DwellEvent,
    Event,
    Outcome,
    PresenceSettings,
    UnitState,
    expire,
    observe,
    remove_hotspots,
    signal_deadline_ms,
)
from stream.records import Consumed, Message, VisitUpdate, compact_json, dead_letter
from stream.worker.deadlines import DeadlineWheel


@dataclass
class StageOutput:
    """Everything one batch (or one clock tick) produced."""

    dead_letters: list[Message] = field(default_factory=list)
    rekeyed: list[Message] = field(default_factory=list)
    geofence_events: list[Message] = field(default_factory=list)
    dwell_events: list[Message] = field(default_factory=list)
    visit_updates: list[VisitUpdate] = field(default_factory=list)
    #: units' last usable fixes due to be published (geofences/positions.py), keyed by unit
    positions: list[Message] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    #: aligned with ``events``: the record timestamp of the ping that caused each one (``None``
    #: for events the clock caused)
    event_record_ts: list[int | None] = field(default_factory=list)
    #: keep only the latest of consecutive "inside" updates of a visit (live clock only: in
    #: event time, coverage decides at each fix's own ts, so every fix must reach it)
    coalesce_inside: bool = False
    _pending_inside: dict[tuple[str, str], int] = field(default_factory=dict)

    def add_update(self, update: VisitUpdate) -> None:
        """Queue a visit update for the coverage stage."""
        if self.coalesce_inside:
            key = (update.hotspot_id, update.unit_id)
            if update.kind == "inside":
                index = self._pending_inside.get(key)
                if index is not None:
                    self.visit_updates[index] = update
                    return
                self._pending_inside[key] = len(self.visit_updates)
            else:
                self._pending_inside.pop(key, None)
        self.visit_updates.append(update)

    def update_adder(self) -> Callable[[VisitUpdate], None]:
        """:meth:`add_update`, or the plain append it comes to when not coalescing: bound once
        a batch, a call less an update."""
        return self.add_update if self.coalesce_inside else self.visit_updates.append


def encode_state(state: UnitState, partition: int) -> bytes:
    snapshot: dict[str, Any] = state.to_dict()
    snapshot["p"] = partition
    return compact_json(snapshot)


def decode_state(raw: bytes) -> tuple[UnitState, int]:
    snapshot = orjson.loads(raw)
    return UnitState.from_dict(snapshot), int(snapshot["p"])


def group_matches(
    count: int, point_idx: np.ndarray, hotspot_idx: np.ndarray, one_of: Sequence[tuple[str]]
) -> list[tuple[str, ...]]:
    """Turn the index's (point, hot spot) pairs into the hot spot ids each point is inside.

    ``one_of[h]`` is the tuple of hot spot ``h``'s id alone: most points are inside none or
    one, and share the empty tuple or that one (cheaper than a set a point)."""
    result: list[tuple[str, ...]] = [()] * count
    for point, h in zip(point_idx.tolist(), hotspot_idx.tolist(), strict=True):
        inside = result[point]
        result[point] = inside + one_of[h] if inside else one_of[h]
    return result


#: the positions topic's rule (docs/architecture.md, Dispatch)
PUBLISH_RULE = PublishRule()

_lon = attrgetter("lon")
_lat = attrgetter("lat")


class PresenceStage:
    """Per-unit presence over batches of records, for the partitions this worker owns."""

    def __init__(
        self,
        index: HotSpotIndex,
        settings: PresenceSettings,
        pings_topic: str,
        coalesce_inside: bool = False,
        checkpoint_ms: int = 60_000,
        publish_rule: PublishRule | None = PUBLISH_RULE,
    ) -> None:
        self.coalesce_inside = coalesce_inside
        #: when a unit's last fix is published for dispatch (None: never)
        self.publish_rule = publish_rule
        #: unit -> the last fix published for it
        self.published = PublishedFixes()
        self.checkpoint_ms = checkpoint_ms
        self.index = index
        self.settings = settings
        self.pings_topic = pings_topic
        self.known_hotspots = frozenset(index.ids)
        self._one_of = [(hotspot_id,) for hotspot_id in index.ids]
        #: units restored with visits to hot spots no longer in the file: closed (reason
        #: ``hotspot_removed``) at their next ping; only a restored state can hold one
        self.orphaned: set[str] = set()
        self.states: dict[str, UnitState] = {}
        self.partition_of: dict[str, int] = {}
        #: unit -> ``last_ms`` of the state last written to (or restored from) the changelog,
        #: for units without open visits only (those with visits are marked on every ping).
        self.written_ms: dict[str, int | None] = {}
        #: unit -> partition: units whose state is to be written, at the next ``take_writes``
        self._unwritten: dict[str, int] = {}
        #: partition -> its units' signal-loss deadlines (a unit's is its state's,
        #: ``signal_deadline_ms``): ``expire`` looks at the due ones only, not at every unit,
        #: after each batch.
        self._due: dict[int, DeadlineWheel] = {}
        #: (topic, partition) -> largest ping ts delivered there (the event-time watermark's parts).
        self.partition_max_ts: dict[tuple[str, int], int] = {}
        #: the earliest ping ts this worker has seen: where event time began for it.
        self.first_ts: int | None = None

    # -- state cache -------------------------------------------------------------------------

    def _state(self, unit_id: str, load: Callable[[bytes], bytes | None]) -> UnitState | None:
        state = self.states.get(unit_id)
        if state is None:
            raw = load(unit_id.encode())
            if raw is not None:
                state, partition = decode_state(raw)
                self._adopt(unit_id, state, partition)
        return state

    def _adopt(self, unit_id: str, state: UnitState, partition: int) -> None:
        """Take a state read from the changelog: cached, and known to be written."""
        self._remember(unit_id, state, partition)
        if any(v.hotspot_id not in self.known_hotspots for v in state.visits):
            self.orphaned.add(unit_id)
        self._note_written(unit_id, state)

    def _deadline(self, unit_id: str, partition: int) -> int | None:
        """The unit's current signal-loss deadline, if it is in ``partition``."""
        state = self.states.get(unit_id)
        if state is None or self.partition_of.get(unit_id) != partition:
            return None
        return signal_deadline_ms(state, self.settings)

    def _remember(self, unit_id: str, state: UnitState, partition: int) -> bool:
        """Cache the unit's state in ``partition``; returns whether the unit was cached in
        another partition, or not at all."""
        deadline = signal_deadline_ms(state, self.settings)
        before = self.states.get(unit_id)
        moved = self.partition_of.get(unit_id) != partition
        self.states[unit_id] = state
        if moved:
            self.partition_of[unit_id] = partition
        if deadline is None:
            return moved
        previous = None if moved or before is None else signal_deadline_ms(before, self.settings)
        # A deadline that moved later (every ping) is found when its old entry comes due.
        if previous is None or deadline < previous:
            wheel = self._due.get(partition)
            if wheel is None:
                wheel = self._due[partition] = DeadlineWheel()
            wheel.add(deadline, unit_id)
            if wheel.entries > 2 * len(self.states) + 1024:  # drop entries superseded since
                wheel.rebuild(
                    (d, u)
                    for u, p in self.partition_of.items()
                    if p == partition and (d := self._deadline(u, p)) is not None
                )
        return moved

    def restore(self, items: Iterable[tuple[bytes, bytes]], partitions: Collection[int]) -> int:
        """Load states recovered from the changelog for ``partitions``; returns how many."""
        count = 0
        for key, raw in items:
            state, partition = decode_state(raw)
            if partition in partitions:
                self._adopt(key.decode(), state, partition)
                count += 1
        return count

    def forget_partitions(self, partitions: Collection[int]) -> list[str]:
        """Drop cached state of partitions this worker no longer owns; returns their units."""
        for partition in partitions:
            self._due.pop(partition, None)
        gone = [u for u, p in self.partition_of.items() if p in partitions]
        for unit_id in gone:
            del self.states[unit_id]
            del self.partition_of[unit_id]
            self.written_ms.pop(unit_id, None)
            self._unwritten.pop(unit_id, None)
            self.orphaned.discard(unit_id)
            self.published.discard(unit_id)
        for tp in [tp for tp in self.partition_max_ts if tp[1] in partitions]:
            del self.partition_max_ts[tp]
        return gone

    def reset_watermark(self) -> None:
        """Forget every partition's largest ping ts: after a rebalance the watermark is built
        again from what is delivered."""
        self.partition_max_ts.clear()

    # -- time ---------------------------------------------------------------------------------

    def watermark_parts(self) -> dict[str, int]:
        """The watermark's parts, "topic:partition" → largest ping ts, for the coverage stage."""
        return {
            f"{topic}:{partition}": ts for (topic, partition), ts in self.partition_max_ts.items()
        }

    def watermark_ms(self) -> int | None:
        """The event clock's watermark (docs/interface.md, The clock): the smallest, over partitions that delivered a ping,
        of the largest ping ts delivered in that partition."""
        return min(self.partition_max_ts.values()) if self.partition_max_ts else None

    def expire(
        self, now_ms: int, partitions: Collection[int], out: StageOutput | None = None
    ) -> StageOutput:
        """Signal loss noticed by the clock, for units of ``partitions``."""
        out = out or StageOutput(coalesce_inside=self.coalesce_inside)
        for partition in partitions:
            wheel = self._due.get(partition)
            if wheel is None:
                continue
            due = wheel.pop_due(now_ms, functools.partial(self._deadline, partition=partition))
            for unit_id in sorted(due):
                state, events = expire(unit_id, self.states[unit_id], now_ms, self.settings)
                self._commit(unit_id, state, partition, events, out, None)
        return out

    # -- pings --------------------------------------------------------------------------------

    def _distance(self, ping: Ping, hotspot_id: str) -> float:
        """The exit buffer's distance (``observe``): asked only of a hot spot the batch's
        match found the ping outside of."""
        return self.index.distance_outside_m(ping.lon, ping.lat, hotspot_id)

    def _note_written(self, unit_id: str, state: UnitState) -> None:
        if state.visits:
            self.written_ms.pop(unit_id, None)
        else:
            self.written_ms[unit_id] = state.last_ms

    def _stale(self, unit_id: str, state: UnitState) -> bool:
        if unit_id not in self.written_ms:
            return True
        written = self.written_ms[unit_id]
        return (
            written is None
            or state.last_ms is None
            or state.last_ms - written >= self.checkpoint_ms
        )

    def _commit(
        self,
        unit_id: str,
        state: UnitState,
        partition: int,
        events: Sequence[Event],
        out: StageOutput,
        record_ts: int | None,
        type_changed: bool = True,
    ) -> None:
        """Cache the unit's new state, queue its events, and mark the state to be written
        (by :meth:`take_writes`) when it must be.

        Written: while the unit has open visits (signal loss after a restart counts from the
        stored ``last_ms``, so it must be exact), on every event and unit type change, and
        otherwise once the stored ``last_ms`` is ``checkpoint_ms`` of event time behind. A
        restored state of a unit without visits may thus be up to ``checkpoint_ms`` old; its
        pings since then are either redelivered (and replayed to the same result) or only move
        ``last_ms``, which decides nothing but whether a late ping is late.
        """
        moved = self._remember(unit_id, state, partition)
        if moved or state.visits or events or type_changed or self._stale(unit_id, state):
            self._note_written(unit_id, state)
            self._unwritten[unit_id] = partition
        for event in events:
            key = event.hotspot_id.encode()
            payload = compact_json(event.to_json_dict())
            out.events.append(event)
            out.event_record_ts.append(record_ts)
            if isinstance(event, DwellEvent):
                out.dwell_events.append((key, payload))
            else:
                out.geofence_events.append((key, payload))
                out.add_update(
                    VisitUpdate(
                        event.type,
                        event.hotspot_id,
                        unit_id,
                        event.unit_type,
                        event.ts_ms,
                        event.enter_ms,
                    )
                )

    def take_writes(self, most: int | None = None) -> dict[bytes, tuple[int, bytes]]:
        """The changelog writes due since the last call: unit key -> (partition, encoded
        state), each unit's latest state once however many pings changed it since; at most
        ``most`` of them (the rest stay due).

        A checkpoint acks the records processed before only once these writes are acknowledged:
        a crash before then loses nothing, since those records are read again from the last
        commit."""
        states = self.states
        unwritten = self._unwritten
        units = list(unwritten) if most is None else list(itertools.islice(unwritten, most))
        writes = {}
        for unit_id in units:
            partition = unwritten.pop(unit_id)
            writes[unit_id.encode()] = (partition, encode_state(states[unit_id], partition))
        return writes

    def take_snapshot(self) -> list[tuple[str, int, UnitState]]:
        """Every unit whose state is due to be written, with its state now; none is due after.
        A state is replaced, never changed in place, so :meth:`encode_writes` may encode the
        snapshot later while the stage goes on (a unit it changes meanwhile is due again)."""
        unwritten, self._unwritten = self._unwritten, {}
        states = self.states
        return [(unit_id, partition, states[unit_id]) for unit_id, partition in unwritten.items()]

    @staticmethod
    def encode_writes(
        snapshot: Sequence[tuple[str, int, UnitState]],
    ) -> dict[bytes, tuple[int, bytes | None]]:
        """A snapshot's changelog writes: unit key -> (partition, encoded state)."""
        return {
            unit_id.encode(): (partition, encode_state(state, partition))
            for unit_id, partition, state in snapshot
        }

    @property
    def unwritten(self) -> int:
        """How many units have a state waiting for :meth:`take_writes`."""
        return len(self._unwritten)

    def process(
        self, records: Sequence[Consumed], load: Callable[[bytes], bytes | None]
    ) -> StageOutput:
        """Apply a batch of records in order (a unit's records keep their order)."""
        out = StageOutput(coalesce_inside=self.coalesce_inside)
        kept: list[Consumed] = []
        pings: list[Ping] = []
        keep, take, pings_topic = kept.append, pings.append, self.pings_topic
        for record in records:
            try:
                ping = decode_ping(record.value)
            except InvalidPing as exc:
                reason = str(exc)
                out.dead_letters.append((record.key, dead_letter(record, reason)))
                out.dead_letter_reasons.append(reason.split(":")[0])
                out.outcomes["invalid"] += 1
                continue
            unit_key = ping.unit_id.encode()
            if record.topic == pings_topic and record.key != unit_key:
                out.rekeyed.append((unit_key, record.value or b""))
                continue
            keep(record)
            take(ping)
        if not pings:
            return out

        lons = np.fromiter(map(_lon, pings), dtype=np.float64, count=len(pings))
        lats = np.fromiter(map(_lat, pings), dtype=np.float64, count=len(pings))
        point_idx, hotspot_idx = self.index.match(lons, lats)
        inside_of = group_matches(len(pings), point_idx, hotspot_idx, self._one_of)

        states = self.states
        orphaned = self.orphaned
        max_ts = self.partition_max_ts
        first_ts = self.first_ts
        distance, settings, commit = self._distance, self.settings, self._commit
        add_update = out.update_adder()
        results: list[Outcome] = []
        count = results.append
        new = tuple.__new__
        for record, ping, inside in zip(kept, pings, inside_of, strict=True):
            unit_id, ts_ms = ping.unit_id, ping.ts_ms
            tp = (record.topic, record.partition)
            if ts_ms > max_ts.get(tp, -1):
                max_ts[tp] = ts_ms
            if first_ts is None or ts_ms < first_ts:
                first_ts = self.first_ts = ts_ms
            state = states.get(unit_id) or self._state(unit_id, load)
            removed: tuple[Event, ...] = ()
            if orphaned and unit_id in orphaned and state is not None:
                orphaned.discard(unit_id)
                state, removed = remove_hotspots(unit_id, state, self.known_hotspots)
            result = observe(state, ping, inside, distance, settings)
            count(result.outcome)
            after = result.state
            if after is not state or removed:
                commit(
                    unit_id,
                    after,
                    record.partition,
                    removed + result.events,
                    out,
                    record.timestamp,
                    state is None or state.unit_type != after.unit_type,
                )
            still_inside = result.still_inside
            if still_inside:
                for visit in after.visits:
                    if visit.hotspot_id in still_inside:
                        add_update(
                            new(
                                VisitUpdate,
                                (
                                    "inside",
                                    visit.hotspot_id,
                                    unit_id,
                                    visit.unit_type,
                                    ts_ms,
                                    visit.enter_ms,
                                ),
                            )
                        )
        out.outcomes.update(results)  # StrEnums: counted under their values
        if self.publish_rule is not None:
            self._positions(dict.fromkeys(p.unit_id for p in pings), out)
        return out

    def _positions(self, units: Iterable[str], out: StageOutput) -> None:
        """Queue the last usable fix of each unit of a batch that the publish rule says is
        due (:meth:`geofences.positions.PublishedFixes.due`): the state's after the batch, since the
        view keeps only the latest. In the order the batch first had the units."""
        rule, published, states = self.publish_rule, self.published, self.states
        assert rule is not None
        add = out.positions.append
        for unit_id in units:
            state = states.get(unit_id)
            if state is None or not published.due(unit_id, state, rule):
                continue
            fix = fix_of(unit_id, state)
            if fix is not None:
                published.put(fix)
                add((unit_id.encode(), compact_json(fix.to_json_dict())))
