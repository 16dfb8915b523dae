"""The batched presence path against the one-ping-at-a-time path, on random walks.

Both run the real :class:`stream.worker.presence_stage.PresenceStage` (decoding, vectorised matching,
the state machine, changelog writes), with no broker: batching must change nothing but speed.
A second property restarts the stage from its changelog writes (which are made on transitions,
not on every ping) and checks that it goes on exactly as if it had never stopped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofences.hotspots import HotSpot
from geofences.index import HotSpotIndex
from geofences.presence import DwellEvent, GeofenceEvent, PresenceSettings, UnitState
from geofences.projection import metres_per_degree
from geofences.timefmt import format_ms
from stream.records import Record
from stream.worker.presence_stage import PresenceStage, StageOutput, decode_state

LON0, LAT0 = -1.13, 52.63
KX, KY = metres_per_degree(LAT0)
T0 = 1_795_356_185_000  # 2026-11-22T14:03:05Z
PINGS = "pings"
PARTITIONS = 4
UNITS = ("U0", "U1", "U2", "U3", "U4")
TYPES = (None, None, None, "police", "pcso")


def lonlat(x: float, y: float) -> tuple[float, float]:
    return LON0 + x / KX, LAT0 + y / KY


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(*lonlat(x0, y0), *lonlat(x1, y1))


# A and B overlap; C is a triangle on its own. Walks stay within about 100 m of them.
HOTSPOTS = [
    HotSpot("A", "A", box(0, 0, 150, 150), ()),
    HotSpot("B", "B", box(75, 50, 225, 200), ()),
    HotSpot("C", "C", shapely.Polygon([lonlat(250, 0), lonlat(350, 0), lonlat(300, 90)]), ()),
]
INDEX = HotSpotIndex(HOTSPOTS)


@dataclass(frozen=True)
class Step:
    unit: int
    dt_s: int
    dx_m: int
    dy_m: int
    accuracy_m: float | None
    unit_type: str | None
    keyless: bool
    garbage: bool


steps = st.builds(
    Step,
    unit=st.integers(0, len(UNITS) - 1),
    # mostly a fix every few seconds; sometimes a silence beyond the 300 s signal timeout;
    # sometimes a duplicate or a late ping (0 or negative)
    dt_s=st.one_of(
        st.integers(1, 40), st.integers(1, 40), st.integers(250, 700), st.integers(-30, 0)
    ),
    dx_m=st.integers(-6, 6).map(lambda v: v * 10),
    dy_m=st.integers(-6, 6).map(lambda v: v * 10),
    accuracy_m=st.one_of(st.none(), st.none(), st.sampled_from([5.0, 50.0, 80.0])),
    unit_type=st.sampled_from(TYPES),
    keyless=st.integers(0, 19).map(lambda v: v == 0),
    garbage=st.integers(0, 29).map(lambda v: v == 0),
)


def records_of(walk: Sequence[Step], clock: str = "unit") -> list[Record]:
    """Kafka-like records of a walk: each unit keyed to its partition, offsets per partition.

    ``clock``: "unit", each unit's ping times move on their own (late pings included);
    "in_order", the same without late pings; "global", one clock for all, moving forward only
    (as in a recorded day, where no ping is behind the event-time watermark when it arrives).
    """
    clock_ms = [T0] * len(UNITS)
    now = T0
    position = [(-50, 75)] * len(UNITS)
    offsets = [0] * PARTITIONS
    result = []
    for step in walk:
        u = step.unit
        if clock == "global":
            now += max(step.dt_s, 0) * 1000
            clock_ms[u] = now
        else:
            clock_ms[u] += (max(step.dt_s, 1) if clock == "in_order" else step.dt_s) * 1000
        x, y = position[u]
        position[u] = (min(max(x + step.dx_m, -100), 400), min(max(y + step.dy_m, -100), 300))
        lon, lat = lonlat(*position[u])
        value: dict[str, Any] = {
            "unit_id": UNITS[u],
            "ts": format_ms(clock_ms[u]),
            "lat": lat,
            "lon": lon,
        }
        if step.accuracy_m is not None:
            value["accuracy_m"] = step.accuracy_m
        if step.unit_type is not None:
            value["unit_type"] = step.unit_type
        raw = b'{"unit_id": 7}' if step.garbage else orjson.dumps(value)
        partition = u % PARTITIONS
        key = None if step.keyless else UNITS[u].encode()
        result.append(Record(PINGS, partition, offsets[partition], key, raw, clock_ms[u] + 5))
        offsets[partition] += 1
    return result


def cuts(sizes: Sequence[int], records: Sequence[Record]) -> list[list[Record]]:
    """The records cut into consecutive batches of the given sizes (the rest in the last)."""
    batches, start = [], 0
    for size in sizes:
        if start >= len(records):
            break
        batches.append(list(records[start : start + size]))
        start += size
    if start < len(records):
        batches.append(list(records[start:]))
    return batches


class Run:
    """A stage, its changelog table (a dict, as Faust's in-memory store) and all it emitted."""

    def __init__(self, stage: PresenceStage | None = None) -> None:
        self.stage = stage or PresenceStage(INDEX, PresenceSettings(), PINGS)
        self.table: dict[bytes, bytes] = {}
        self.outputs: list[StageOutput] = []
        #: the changelog writes taken after each batch
        self.writes: list[dict[bytes, tuple[int, bytes]]] = []

    def batch(
        self,
        records: Sequence[Record],
        clock: bool,
        unread: Sequence[Record] = (),
        flush: bool = True,
    ) -> None:
        """Process one batch; with ``clock``, then expire at the event-time watermark, held (as
        the worker holds it) while a partition has not delivered a ping and has ``unread``
        records. With ``flush``, then write the changed states to the table."""
        out = self.stage.process(records, self.table.get)
        waiting = {r.partition for r in unread} - {p for _, p in self.stage.partition_max_ts}
        if clock and not waiting:
            watermark = self.stage.watermark_ms()
            if watermark is not None:
                self.stage.expire(watermark, range(PARTITIONS), out)
        self.outputs.append(out)
        if flush:
            self.flush()

    def flush(self) -> None:
        self.writes.append(self.stage.take_writes())
        self.table.update({key: value for key, (_, value) in self.writes[-1].items()})

    def emitted(self) -> dict[str, list[Any]]:
        """Everything sent to Kafka, in order (except the writes, which may differ in number)."""
        names = ("dead_letters", "rekeyed", "geofence_events", "dwell_events", "visit_updates")
        result: dict[str, list[Any]] = {name: [] for name in (*names, "events", "event_record_ts")}
        for out in self.outputs:
            result["dead_letters"] += out.dead_letters
            result["rekeyed"] += out.rekeyed
            result["geofence_events"] += out.geofence_events
            result["dwell_events"] += out.dwell_events
            result["visit_updates"] += [(u.hotspot_id, u.encode()) for u in out.visit_updates]
            result["events"] += out.events
            result["event_record_ts"] += out.event_record_ts
        return result

    def outcomes(self) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for out in self.outputs:
            for outcome, count in out.outcomes.items():
                total[outcome] += count
        return dict(total)

    def states(self) -> dict[str, UnitState]:
        return dict(self.stage.states)


def per_unit(emitted: dict[str, list[Any]]) -> dict[str, dict[str, list[Any]]]:
    """Each unit's events and visit updates in order (what the clock may not reorder)."""
    result: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for name in ("geofence_events", "dwell_events"):
        for _, payload in emitted.get(name, []):
            result[orjson.loads(payload)["unit_id"]][name].append(payload)
    for hotspot_id, payload in emitted.get("visit_updates", []):
        result[orjson.loads(payload)[1]]["visit_updates"].append((hotspot_id, payload))
    return {unit: dict(lists) for unit, lists in result.items()}


def sorted_all(emitted: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {
        name: sorted(emitted[name], key=repr)
        for name in ("dead_letters", "rekeyed", "geofence_events", "dwell_events", "visit_updates")
    }


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(walk=st.lists(steps, min_size=40, max_size=300), sizes=st.lists(st.integers(1, 80)))
def test_batches_give_exactly_what_single_pings_give(walk: list[Step], sizes: list[int]) -> None:
    records = records_of(walk)
    single, batched = Run(), Run()
    for record in records:
        single.batch([record], clock=False)
    for batch in cuts(sizes, records):
        batched.batch(batch, clock=False)

    assert batched.emitted() == single.emitted()
    assert batched.outcomes() == single.outcomes()
    assert batched.states() == single.states()


@FAST
@given(walk=st.lists(steps, min_size=40, max_size=300), sizes=st.lists(st.integers(1, 80)))
def test_with_the_event_clock_batches_change_only_when_signal_loss_is_noticed(
    walk: list[Step], sizes: list[int]
) -> None:
    """After each batch the event-time watermark expires silent units; with one ping per batch
    it may notice a silence before the unit's next ping does. That changes only when the exit
    is emitted, never what it says (docs/interface.md, Semantics: exit: signal lost), so each
    unit's own sequence is the same.
    (A ping behind the watermark when it arrives may find its unit's visits already closed by
    the clock: that depends on timing by nature, so these walks have one clock.)"""
    records = records_of(walk, "global")
    single, batched = Run(), Run()
    for i, record in enumerate(records):
        single.batch([record], clock=True, unread=records[i + 1 :])
    done = 0
    for batch in cuts(sizes, records):
        done += len(batch)
        batched.batch(batch, clock=True, unread=records[done:])

    assert per_unit(batched.emitted()) == per_unit(single.emitted())
    assert sorted_all(batched.emitted()) == sorted_all(single.emitted())
    assert batched.states() == single.states()


def test_a_unit_without_visits_is_written_on_transitions_and_checkpoints_only() -> None:
    walk = [Step(0, 10, 0, 0, None, "police", False, False)] * 30  # outside, one fix per 10 s
    run = Run()
    run.batch(records_of(walk), clock=False)
    written = run.writes
    assert len(written[0]) == 1
    stored, _ = decode_state(written[0][b"U0"][1])
    assert stored.visits == () and stored.unit_type == "police"
    # the stored last_ms is the first fix or a checkpoint at most 60 s behind the last fix
    last_ms = run.stage.states["U0"].last_ms
    assert last_ms is not None and stored.last_ms is not None
    assert 0 <= last_ms - stored.last_ms < 60_000

    inside = [Step(0, 10, 0, 0, None, None, False, False) for _ in range(5)]
    walk_in = [Step(0, 10, 100, 0, None, "police", False, False), *inside]  # enters A, stays
    run_in = Run()
    for record in records_of(walk_in):
        run_in.batch([record], clock=False)
    assert all(len(writes) == 1 for writes in run_in.writes)  # every ping of an open visit


def test_writes_taken_in_slices_are_the_writes_taken_at_once() -> None:
    """The worker flushes a few thousand states at a time; together they are the same."""
    enter = [Step(u, 10, 100, 0, None, "police", False, False) for u in range(len(UNITS))]
    whole, sliced = Run(), Run()
    for run in (whole, sliced):
        run.batch(records_of(enter), clock=False, flush=False)
    parts = []
    while sliced.stage.unwritten:
        parts.append(sliced.stage.take_writes(2))
    assert [len(part) for part in parts] == [2, 2, 1]
    assert {k: v for part in parts for k, v in part.items()} == whole.stage.take_writes()
    assert sliced.stage.take_writes() == {}


#: a walk, where in it a worker stops (a fraction of it), from how far back (a fraction of
#: what it had done) its records are read again, and the batch sizes
CRASHES = {
    "walk": st.lists(steps, min_size=40, max_size=300),
    "split": st.floats(0, 1),
    "redeliver": st.floats(0, 1),
    "sizes": st.lists(st.integers(1, 80)),
}


@FAST
@given(**CRASHES)
def test_a_stage_restored_from_its_writes_goes_on_exactly(
    walk: list[Step], split: float, redeliver: float, sizes: list[int]
) -> None:
    """Stop after ``split`` of the records, restore a new stage from the changelog writes, and
    redeliver from an earlier offset (as after a crash, since the last commit): from there on,
    the restored stage emits exactly what the stage that never stopped emitted."""
    records = records_of(walk, "in_order")
    stop = int(split * len(records))
    resume = int(redeliver * stop)

    before = Run()
    for batch in cuts(sizes, records[:stop]):
        before.batch(batch, clock=False)
    restored = Run(PresenceStage(INDEX, PresenceSettings(), PINGS))
    restored.table = dict(before.table)
    restored.stage.restore(restored.table.items(), range(PARTITIONS))
    for batch in cuts(sizes, records[resume:]):
        restored.batch(batch, clock=False)
    for out in restored.outputs:
        out.rekeyed.clear()  # redelivered keyless pings are re-keyed again: not state

    after = Run(before.stage)
    after.table = before.table
    for batch in cuts(sizes, records[stop:]):
        after.batch(batch, clock=False)
    for out in after.outputs:
        out.rekeyed.clear()

    want, got = after.emitted(), restored.emitted()
    want.pop("dead_letters", None)
    got.pop("dead_letters", None)
    assert got == want
    # A unit without visits may keep a last fix up to a checkpoint old (it decides nothing);
    # a unit with open visits is exact, and so is every restart from the new changelog.
    live = after.states()
    assert_holds(restored.states(), live)
    assert_restores_to(restored.table, live)


@FAST
@given(**CRASHES, every=st.integers(1, 6))
def test_a_stage_that_flushes_every_few_batches_loses_nothing_in_a_crash(
    walk: list[Step], split: float, redeliver: float, sizes: list[int], every: int
) -> None:
    """The worker writes changed states every ``state_flush_s``, each unit once, and acks the
    records it processed only then, so the last commit is at or before the last flush. Crash
    after ``split`` of the batches: a new stage restored from the changelog as of the last
    flush, with the records redelivered from the last commit, emits from the flush on exactly
    what a stage that never stopped emits, and reaches its states."""
    records = records_of(walk, "in_order")
    batches = cuts(sizes, records)
    crashed = Run()
    flushed, done = 0, 0
    for i, batch in enumerate(batches[: int(split * len(batches))]):
        crashed.batch(batch, clock=False, flush=False)
        done += len(batch)
        if (i + 1) % every == 0:
            crashed.flush()
            flushed = done
            assert_restores_to(crashed.table, crashed.states())
    committed = int(redeliver * flushed)

    restored = Run()
    restored.table = dict(crashed.table)
    restored.stage.restore(restored.table.items(), range(PARTITIONS))
    for batch in cuts(sizes, records[committed:]):
        restored.batch(batch, clock=False)

    steady = Run()
    for batch in cuts(sizes, records[:flushed]):
        steady.batch(batch, clock=False)
    steady.outputs.clear()
    for batch in cuts(sizes, records[flushed:]):
        steady.batch(batch, clock=False)

    want, got = steady.emitted(), restored.emitted()
    for emitted in (want, got):
        emitted.pop("dead_letters", None)
        emitted.pop("rekeyed", None)
    assert got == want
    assert_restores_to(restored.table, steady.states())


def assert_restores_to(table: dict[bytes, bytes], live: dict[str, UnitState]) -> None:
    """A stage restored from ``table`` holds ``live`` (``assert_holds``)."""
    stage = PresenceStage(INDEX, PresenceSettings(), PINGS)
    stage.restore(table.items(), range(PARTITIONS))
    assert_holds(stage.states, live)


def assert_holds(states: dict[str, UnitState], live: dict[str, UnitState]) -> None:
    """``states`` are ``live``'s: exactly for units with open visits; for the others, the type
    and a last fix at most a checkpoint (60 s) old."""
    assert states.keys() == live.keys()
    for unit_id, state in states.items():
        if live[unit_id].visits:
            assert state == live[unit_id]
        else:
            assert (state.unit_type, state.visits) == (live[unit_id].unit_type, ())
            last_ms = live[unit_id].last_ms
            assert state.last_ms is None or (
                last_ms is not None and last_ms - state.last_ms < 60_000
            )


def test_a_restored_visit_to_a_removed_hot_spot_is_closed_at_the_units_next_ping() -> None:
    """A changelog written with a hot spot file that had "GONE" in it, read by a stage whose
    file no longer has it: that visit exits (reason hotspot_removed) dated at the unit's last
    usable ping, when the unit next pings; its visit to A goes on."""
    gone = HotSpot("GONE", "GONE", box(0, 0, 150, 150), ())
    before = PresenceStage(HotSpotIndex([*HOTSPOTS, gone]), PresenceSettings(), PINGS)
    stay = Step(0, 10, 0, 0, None, None, False, False)
    records = records_of([Step(0, 10, 100, 0, None, "police", False, False), stay, stay])
    before.process(records[:1], {}.get)
    table = {k: v for k, (_, v) in before.take_writes().items()}
    assert before.states["U0"].hotspot_ids == ("A", "GONE")
    seen_ms = before.states["U0"].last_ms

    after = PresenceStage(INDEX, PresenceSettings(), PINGS)
    assert after.restore(table.items(), range(PARTITIONS)) == 1
    out = after.process(records[1:2], table.get)
    exit_, dwell = out.events
    assert isinstance(exit_, GeofenceEvent) and isinstance(dwell, DwellEvent)
    assert (exit_.type, exit_.hotspot_id, dwell.hotspot_id) == ("exit", "GONE", "GONE")
    assert (dwell.exit_reason, dwell.exit_ms) == ("hotspot_removed", seen_ms)
    assert after.states["U0"].hotspot_ids == ("A",)
    assert after.process(records[2:], table.get).events == []
