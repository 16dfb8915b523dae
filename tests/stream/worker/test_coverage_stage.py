"""The coverage stage's input: a batch's visit updates, one message per coverage partition."""

from __future__ import annotations

import random
from datetime import time
from typing import Any

import orjson
import pytest

from geofences.coverage import CoverageSettings
from geofences.hotspots import HotSpot, HotSpotCollection, Window
from geofences.presence import PresenceSettings
from stream.records import Record, VisitUpdate
from stream.worker import coverage_stage
from stream.worker.coverage_stage import (
    CoverageStage,
    clock_message,
    record_slices,
    update_messages,
)
from stream.worker.pending import (
    ENTER,
    EXIT,
    INSIDE,
    PENDING_KEY_PREFIX,
    PendingLog,
    stored_chunks,
)
from stream.worker.settings import Settings, coverage_from_env, presence_from_env

DAILY = frozenset(range(7))
T0 = 1_795_356_000_000  # 2026-11-22T14:00:00Z (London is on UTC)
MIN = 60_000


def collection(count: int) -> HotSpotCollection:
    window = Window(DAILY, time(14), time(15), 10.0)
    return HotSpotCollection(
        tuple(HotSpot(f"HS-{n:02d}", f"spot {n}", None, (window,)) for n in range(count))
    )


def updates() -> list[VisitUpdate]:
    result = []
    for n in range(6):
        hotspot = f"HS-{n:02d}"
        result.append(VisitUpdate("enter", hotspot, f"U{n}", "police", T0, T0))
        for minute in range(1, 12):
            result.append(VisitUpdate("inside", hotspot, f"U{n}", "police", T0 + minute * MIN, T0))
    return result


def test_one_message_per_partition_keeping_each_hotspots_order() -> None:
    stage = CoverageStage(collection(6), CoverageSettings(), 4)
    messages = update_messages(updates(), stage.partition_of)
    assert [p for p, _ in messages] == sorted({stage.partition_of[u.hotspot_id] for u in updates()})
    for partition, raw in messages:
        kind, by_spot = orjson.loads(raw)
        assert kind == "visits2"
        expected: dict[str, list[list[Any]]] = {}
        for u in updates():
            if stage.partition_of[u.hotspot_id] == partition:
                coded = {
                    "enter": [ENTER, u.unit_id, u.unit_type, u.ts_ms, None],
                    "inside": [INSIDE, u.unit_id, None, u.ts_ms, None],  # all the ledger reads
                    "exit": [EXIT, u.unit_id, u.unit_type, u.ts_ms, u.enter_ms],
                }
                expected.setdefault(u.hotspot_id, []).append(coded[u.kind])
        assert by_spot == expected


@pytest.mark.parametrize("seed", range(3))
def test_grouped_and_single_updates_decide_the_same(seed: int) -> None:
    """Event clock, batches out of ts order (a presence batch holds several pings partitions'
    pings): a partition's updates grouped in one message, or each update in a message of its
    own, give the same alerts and store."""
    rng = random.Random(seed)
    spots = spots_with((Window(DAILY, time(14), time(15), 10.0),), 6)
    shapes = ("grouped", "single")
    stages = {name: CoverageStage(spots, CoverageSettings(), 2) for name in shapes}
    got: dict[str, list[Any]] = {name: [] for name in shapes}
    stores: dict[str, dict[bytes, bytes]] = {name: {} for name in shapes}
    for number, batch in enumerate(random_day(rng, 6)):
        rng.shuffle(batch)
        parts = {"pings:0": max(u.ts_ms for u in batch) - rng.choice([0, 3 * MIN])}
        records = event_records(stages["grouped"], batch, parts, T0 - 30 * MIN, number)
        clocks = [r for r in records if orjson.loads(r.value)[0] == "clock"]
        given = {
            "grouped": records,
            "single": single_records(stages["single"], batch, number) + clocks,
        }
        for name, stage in stages.items():
            out = stage.process(given[name], stores[name], None, range(2))
            apply_writes(stores[name], stage.take_writes())
            got[name] += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
    assert got["grouped"] == got["single"]
    assert {t for _, t, _ in got["single"]} >= {"met"}
    assert stores["grouped"] == stores["single"]


def single_records(stage: CoverageStage, updates: list[VisitUpdate], offset: int) -> list[Record]:
    """Each update in a message of its own, in order."""
    return [
        Record("visits", p, offset, None, raw)
        for u in updates
        for p, raw in update_messages([u], stage.partition_of)
    ]


def test_batched_and_single_messages_decide_the_same_alerts() -> None:
    """Live clock: the same updates as one message per partition or one message per update."""
    spots = collection(6)
    batched, single = (
        CoverageStage(spots, CoverageSettings(), 4),
        CoverageStage(spots, CoverageSettings(), 4),
    )
    stored: dict[bytes, bytes] = {}
    batched_records = [
        Record("visits", p, i, None, raw)
        for i, (p, raw) in enumerate(update_messages(updates(), batched.partition_of))
    ]
    now = T0 + 12 * MIN
    out_batched = batched.process(batched_records, stored, now, range(4))
    out_single = single.process(single_records(single, updates(), 0), stored, now, range(4))
    assert sorted(a.alert_id for a in out_batched.decided) == sorted(
        a.alert_id for a in out_single.decided
    )
    assert sorted(a.type for a in out_batched.decided) == ["met"] * 6
    assert batched.take_writes() == single.take_writes()


def test_a_message_of_an_unknown_kind_is_refused() -> None:
    stage = CoverageStage(collection(2), CoverageSettings(), 2)
    record = Record("visits", 0, 0, b"HS-00", orjson.dumps(["updates", []]))
    with pytest.raises(ValueError, match="unknown message kind 'updates'"):
        stage.process([record], {}, T0, range(2))


def apply_writes(store: dict[bytes, bytes], writes: dict[bytes, tuple[int, bytes | None]]) -> None:
    for key, (_, value) in writes.items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def test_only_changed_visits_are_written_and_a_restore_is_exact() -> None:
    """Half the day, a restart from what was written, the other half: the same ledgers and
    alerts as a stage that never stopped; visits pruned meanwhile are deleted from the store."""
    spots = collection(3)
    settings = CoverageSettings(visit_retention_minutes=30.0)
    steady = CoverageStage(spots, settings, 2)
    first = CoverageStage(spots, settings, 2)
    steady_store: dict[bytes, bytes] = {}
    store: dict[bytes, bytes] = {}
    visits = [
        VisitUpdate(
            kind, f"HS-{n % 3:02d}", f"U{n}", "police", T0 + (n * 7 + step) * MIN, T0 + n * 7 * MIN
        )
        for n in range(12)
        for step, kind in ((0, "enter"), (2, "inside"), (4, "exit"))
    ]
    batches = [visits[i : i + 6] for i in range(0, len(visits), 6)]
    steady_alerts: list[str] = []
    alerts: list[str] = []
    steady_decided: list[Any] = []
    for number, batch in enumerate(batches):
        records = [
            Record("visits", p, number, None, raw)
            for p, raw in update_messages(batch, steady.partition_of)
        ]
        now = max(u.ts_ms for u in batch) + MIN
        out = steady.process(records, steady_store, now, range(2))
        apply_writes(steady_store, steady.take_writes())
        steady_alerts += [a.alert_id for a in out.decided]
        steady_decided += out.decided
        if number == len(batches) // 2:
            first = CoverageStage(spots, settings, 2)
        out = first.process(records, store, now, range(2))
        writes = first.take_writes()
        apply_writes(store, writes)
        alerts += [a.alert_id for a in out.decided]
        headers = [v for k, (_, v) in writes.items() if v is not None and k[:1] != b"\x00"]
        assert all(len(header) < 600 for header in headers)
    assert alerts == steady_alerts
    assert {a.type for a in steady_decided} == {"met"}
    for hotspot_id, ledger in steady.ledgers.items():
        assert first.ledger(hotspot_id, store).to_dict() == ledger.to_dict()
    assert store == steady_store
    stored_visits = [k for k in store if k[:1] == b"\x00"]
    live_visits = sum(len(ledger.open_visits()) for ledger in steady.ledgers.values())
    assert live_visits <= len(stored_visits) < len(visits) // 3


def spots_with(windows: tuple[Window, ...], count: int) -> HotSpotCollection:
    """``count`` hot spots with the first one, two, ... of ``windows`` in turn."""
    return HotSpotCollection(
        tuple(
            HotSpot(f"HS-{n:02d}", f"spot {n}", None, windows[: 1 + n % len(windows)])
            for n in range(count)
        )
    )


def event_records(
    stage: CoverageStage,
    updates: list[VisitUpdate],
    parts: dict[str, int],
    first_ms: int,
    offset: int,
) -> list[Record]:
    """A presence batch as the coverage stage receives it in event mode: its visit updates,
    then the watermark's ``parts`` on every coverage partition."""
    return [
        Record("visits", p, offset, None, raw)
        for p, raw in update_messages(updates, stage.partition_of)
    ] + [
        Record("visits", p, offset, None, clock_message(parts, first_ms))
        for p in range(stage.partitions)
    ]


class EveryHotspotEachTime(CoverageStage):
    """The stage before ``_due``: every hot spot of a partition whose clock moved is caught up."""

    def _due(self, partitions: Any) -> set[str]:
        return {h for h in self.hotspots_of(partitions) if self.watermark_ms(self.partition_of[h])}


def random_day(rng: random.Random, spots: int) -> list[list[VisitUpdate]]:
    """Units wandering between hot spots with 10 s fixes, some lingering, some passing by,
    cut into batches (as presence sends them) in ts order."""
    updates: list[VisitUpdate] = []
    for u in range(8):
        t = T0 - 20 * MIN + rng.randrange(0, 40) * MIN
        kind = rng.choice(["police", "pcso", "outreach", "security"])
        while t < T0 + 120 * MIN:
            hotspot = f"HS-{rng.randrange(spots):02d}"
            enter = t
            updates.append(VisitUpdate("enter", hotspot, f"U{u}", kind, t, enter))
            for _ in range(rng.choice([0, 3, 30, 90, 200])):
                t += 10_000
                updates.append(VisitUpdate("inside", hotspot, f"U{u}", kind, t, enter))
            t += rng.randrange(0, 30_000)
            updates.append(VisitUpdate("exit", hotspot, f"U{u}", kind, t, enter))
            t += rng.randrange(1, 25) * MIN
    updates.sort(key=lambda x: x.ts_ms)
    batches, i = [], 0
    while i < len(updates):
        n = rng.choice([1, 5, 40, 300])
        batches.append(updates[i : i + n])
        i += n
    return batches


#: a plain window, one with a minimum visit, one for outreach workers only
THREE_WINDOWS = (
    Window(DAILY, time(14), time(15), 10.0),
    Window(DAILY, time(14, 30), time(16), 25.0, min_visit_minutes=2),
    Window(DAILY, time(15, 10), time(15, 25), 4.0, unit_types=frozenset({"outreach"})),
)


def side_by_side(
    hotspots: int, partitions: int, second: type[CoverageStage] = CoverageStage
) -> tuple[tuple[CoverageStage, dict[bytes, bytes]], tuple[CoverageStage, dict[bytes, bytes]]]:
    """Two stages over the same hot spots (with :data:`THREE_WINDOWS`), each with its own store."""
    spots = spots_with(THREE_WINDOWS, hotspots)
    return (
        (CoverageStage(spots, CoverageSettings(), partitions), {}),
        (second(spots, CoverageSettings(), partitions), {}),
    )


@pytest.mark.parametrize("seed", range(6))
def test_visiting_only_due_hotspots_decides_exactly_the_same(seed: int) -> None:
    """Event clock: catching up only the hot spots whose wake time the watermark passed (and
    those with updates) fires the same alerts, at the same times, and stores the same, as
    catching up every hot spot after every clock step."""
    rng = random.Random(seed)
    (lazy, lazy_store), (eager, eager_store) = side_by_side(10, 4, EveryHotspotEachTime)
    got: list[tuple[str, str, int]] = []
    want: list[tuple[str, str, int]] = []
    first = T0 - 30 * MIN
    for number, batch in enumerate(random_day(rng, 10)):
        watermark = max(u.ts_ms for u in batch) - rng.choice([0, 0, 10_000, 5 * MIN])
        records = event_records(lazy, batch, {"pings:0": watermark}, first, number)
        for stage, store, alerts in ((lazy, lazy_store, got), (eager, eager_store, want)):
            out = stage.process(records, store, None, range(4))
            apply_writes(store, stage.take_writes())
            alerts += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
    end = event_records(lazy, [], {"pings:0": T0 + 600 * MIN}, first, 10**6)
    for stage, store, alerts in ((lazy, lazy_store, got), (eager, eager_store, want)):
        out = stage.process(end, store, None, range(4))
        apply_writes(store, stage.take_writes())
        alerts += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
    assert got == want
    assert {t for _, t, _ in want} >= {"met", "gap"}
    assert lazy_store == eager_store


@pytest.mark.parametrize("seed", range(6))
def test_presence_batches_taken_together_decide_exactly_the_same(seed: int) -> None:
    """Event clock: a stage batch holding the records of several presence batches (the stage
    takes each hot spot's updates of all of them at once) fires the same alerts at the same
    times, and stores the same ledgers, as one presence batch a stage batch."""
    rng = random.Random(seed)
    (alone, alone_store), (together, together_store) = side_by_side(10, 4)
    got: list[tuple[str, str, int]] = []
    want: list[tuple[str, str, int]] = []
    first = T0 - 30 * MIN
    group: list[Record] = []
    days = random_day(rng, 10)
    for number, batch in enumerate(days):
        watermark = max(u.ts_ms for u in batch) - rng.choice([0, 0, 10_000, 5 * MIN])
        records = event_records(alone, batch, {"pings:0": watermark}, first, number)
        out = alone.process(records, alone_store, None, range(4))
        apply_writes(alone_store, alone.take_writes())
        want += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
        group += records
        if rng.random() < 0.3 or number == len(days) - 1:
            out = together.process(group, together_store, None, range(4))
            apply_writes(together_store, together.take_writes())
            got += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
            group = []
    end = event_records(alone, [], {"pings:0": T0 + 600 * MIN}, first, 10**6)
    for stage, store, alerts in ((alone, alone_store, want), (together, together_store, got)):
        out = stage.process(end, store, None, range(4))
        apply_writes(store, stage.take_writes())
        alerts += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
    assert sorted(got) == sorted(want)
    assert {t for _, t, _ in want} >= {"met", "gap"}
    assert without_clocks(together_store) == without_clocks(alone_store)


def test_updates_the_watermark_has_not_reached_wait_in_their_kept_form() -> None:
    """Event clock: what waits for the watermark is held as ``kept_updates`` makes it (tuples
    sharing their kind and unit type strings), whether it came before the clock or after."""
    (stage, store), _ = side_by_side(4, 2)
    first = T0 - 30 * MIN
    spot = "HS-01"
    batch = [VisitUpdate("enter", spot, "U1", "police", T0, T0)] + [
        VisitUpdate("inside", spot, "U1", "police", T0 + n * 10_000, T0) for n in range(1, 30)
    ]
    stage.process(
        event_records(stage, batch, {"pings:0": T0 + 95_000}, first, 0), store, None, [0, 1]
    )
    later = [
        VisitUpdate("inside", spot, "U1", "police", T0 + n * 10_000, T0) for n in range(30, 40)
    ]
    stage.process(
        event_records(stage, later, {"pings:0": T0 + 95_000}, first, 1), store, None, [0, 1]
    )
    waiting = stage.pending[spot]
    assert [u[3] for u in waiting] == [T0 + n * 10_000 for n in range(10, 40)]
    assert all(type(u) is tuple for u in waiting)
    assert len({id(u[0]) for u in waiting}) == 1
    assert len({id(u[2]) for u in waiting}) == 1


def without_clocks(store: dict[bytes, bytes]) -> dict[bytes, Any]:
    """The store's entries, decoded, without each header's clock: a header is written when
    it changes, not when only its clock moves, so the clock stored is the one of the last
    write, which depends on when writes were taken."""
    entries: dict[bytes, Any] = {}
    for key, raw in store.items():
        value = orjson.loads(raw)
        if isinstance(value, dict):
            value["ledger"].pop("now_ms")
        entries[key] = value
    return entries


def pending_of(stage: CoverageStage) -> dict[str, list[Any]]:
    return {h: sorted(updates) for h, updates in stage.pending.items() if updates}


@pytest.mark.parametrize("seed", range(4))
def test_a_restart_in_event_time_with_updates_pending_decides_the_same(seed: int) -> None:
    """Event clock, one pings partition read ahead of the other (so updates wait for the
    watermark), and later a third one behind both: a stage restarted from what it wrote, at a
    random batch with updates pending, fires the same alerts at the same times as one that
    never stopped, and ends with the same ledgers and pending updates."""
    rng = random.Random(seed)
    windows = (
        Window(DAILY, time(14), time(15), 10.0),
        Window(DAILY, time(14, 30), time(16), 25.0, min_visit_minutes=2),
    )
    spots = spots_with(windows, 6)
    steady = CoverageStage(spots, CoverageSettings(), 2)
    restarted = CoverageStage(spots, CoverageSettings(), 2)
    steady_store: dict[bytes, bytes] = {}
    store: dict[bytes, bytes] = {}
    days = random_day(rng, 6)
    restart_at = rng.randrange(1, len(days) // 2)
    late_from = rng.randrange(1, len(days))
    want: list[tuple[str, str, int]] = []
    got: list[tuple[str, str, int]] = []
    first = T0 - 30 * MIN
    held = restarts = 0
    for number, batch in enumerate(days):
        ahead = max(u.ts_ms for u in batch)
        parts = {"pings:0": ahead, "pings:1": ahead - rng.choice([0, 10_000, 3 * MIN, 20 * MIN])}
        if number >= late_from:  # a pings partition reporting late, behind the others
            parts["pings:2"] = ahead - 40 * MIN
        records = event_records(steady, batch, parts, first, number)
        if restart_at <= number and restarts == 0 and stored_chunks(store.items()):
            restarts += 1
            restarted = CoverageStage(spots, CoverageSettings(), 2)
        for stage, s, alerts in ((steady, steady_store, want), (restarted, store, got)):
            out = stage.process(records, s, None, range(2))
            apply_writes(s, stage.take_writes())
            alerts += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
        held = max(held, sum(map(len, steady.pending.values())))
        stored: dict[str, list[Any]] = {}
        for partition, chunks in stored_chunks(steady_store.items()).items():
            stored.update(PendingLog(partition, chunks).restored)
        assert {h: sorted(u) for h, u in stored.items()} == pending_of(steady)
    assert held > 10, "updates never waited for the watermark"
    assert restarts == 1, "no restart with updates pending"
    assert got == want
    assert {t for _, t, _ in want} >= {"met"}
    for hotspot_id, ledger in steady.ledgers.items():
        assert restarted.ledger(hotspot_id, store).to_dict() == ledger.to_dict()
    assert pending_of(restarted) == pending_of(steady)
    no_pending = {k: v for k, v in steady_store.items() if k[:1] != PENDING_KEY_PREFIX}
    assert {k: v for k, v in store.items() if k[:1] != PENDING_KEY_PREFIX} == no_pending


@pytest.mark.parametrize("seed", range(3))
def test_writes_taken_in_slices_are_the_writes_taken_at_once(seed: int) -> None:
    """The worker flushes the coverage writes a few thousand at a time, whole hot spots each,
    the pending updates last: together they are the writes taken at once, each key once."""
    rng = random.Random(seed)
    (whole, whole_store), (sliced, sliced_store) = side_by_side(6, 2)
    first = T0 - 30 * MIN
    most = 3
    slices_of_a_flush = []
    for number, batch in enumerate(random_day(rng, 6)):
        ahead = max(u.ts_ms for u in batch)
        parts = {"pings:0": ahead, "pings:1": ahead - rng.choice([0, 3 * MIN, 20 * MIN])}
        records = event_records(whole, batch, parts, first, number)
        whole.process(records, whole_store, None, range(2))
        sliced.process(records, sliced_store, None, range(2))
        want = whole.take_writes()
        got: dict[bytes, tuple[int, bytes | None]] = {}
        slices = 0
        while sliced.unwritten:
            part = sliced.take_writes(most)
            assert not got.keys() & part.keys(), "a key written in two slices"
            got.update(part)
            slices += 1
        assert got == want
        assert sliced.take_writes(most) == {}
        slices_of_a_flush.append(slices)
        apply_writes(whole_store, want)
        apply_writes(sliced_store, got)
    assert max(slices_of_a_flush) > 2, "no flush needed several slices"
    assert sliced_store == whole_store


def test_the_watermark_does_not_go_back_when_a_late_partition_reports() -> None:
    """What the stage applied stays applied: its pending log stores only what is after the
    watermark (stream/worker/pending.py), also across a restart."""
    spots = collection(2)
    stage = CoverageStage(spots, CoverageSettings(), 2)
    store: dict[bytes, bytes] = {}
    update = [VisitUpdate("enter", "HS-00", "U1", "police", T0 + 5 * MIN, T0 + 5 * MIN)]
    for parts in ({"pings:0": T0 + 2 * MIN}, {"pings:1": T0 - MIN}):
        records = event_records(stage, update, parts, T0, 0)
        stage.process(records, store, None, range(2))
        apply_writes(store, stage.take_writes())
        assert stage.watermark_ms(0) == stage.watermark_ms(1) == T0 + 2 * MIN
        update = []
    restarted = CoverageStage(spots, CoverageSettings(), 2)
    late = event_records(restarted, [], {"pings:2": T0 - 9 * MIN}, T0, 1)
    restarted.process(late, store, None, range(2))
    partition = stage.partition_of["HS-00"]
    assert restarted.watermark_ms(partition) == T0 + 2 * MIN
    assert restarted.pending["HS-00"] == stage.pending["HS-00"] != []


@pytest.mark.parametrize("seed", range(8))
def test_a_stage_that_flushes_every_few_batches_loses_nothing_in_a_crash(seed: int) -> None:
    """Event clock, the worker's flushes: writes are taken every few batches only, and the
    batches processed since are acked only then. A stage that crashes between flushes is
    restored from the store as of the last flush and read on from the batch after it (the
    committed offset): it fires exactly the alerts, at the same times, of a stage that never
    stopped and wrote after every batch, keeps the same pending updates, and what a restart
    reads from its store is what it reads from that stage's."""
    rng = random.Random(seed)
    spots = spots_with(THREE_WINDOWS, 6)
    first = T0 - 30 * MIN
    shape = CoverageStage(spots, CoverageSettings(), 2)
    batches = []
    behind = first
    for number, batch in enumerate(random_day(rng, 6)):
        ahead = max(u.ts_ms for u in batch)
        # a pings partition read behind the other; each part only grows, as a worker sends it
        behind = max(behind, ahead - rng.choice([0, 10_000, 3 * MIN, 20 * MIN]))
        parts = {"pings:0": ahead, "pings:1": behind}
        batches.append(event_records(shape, batch, parts, first, number))
    # the end of the day: every ledger caught up to the same clock (a ledger's clock moves only
    # when it must, and a restart moves every one)
    batches.append(event_records(shape, [], {"pings:0": T0 + 600 * MIN}, first, len(batches)))

    steady = CoverageStage(spots, CoverageSettings(), 2)
    steady_store: dict[bytes, bytes] = {}
    want: list[tuple[str, str, int]] = []
    for records in batches:
        want += [
            (a.alert_id, a.type, a.ts_ms)
            for a in steady.process(records, steady_store, None, range(2)).decided
        ]
        apply_writes(steady_store, steady.take_writes())

    every = rng.randrange(2, 8)
    crashes = sorted(rng.sample(range(1, len(batches)), min(3, len(batches) - 1)))
    stage = CoverageStage(spots, CoverageSettings(), 2)
    store: dict[bytes, bytes] = {}
    got: list[tuple[str, str, int]] = []
    since_flush: list[tuple[str, str, int]] = []
    committed = 0  # the next batch to read after a restart
    number = 0
    while number < len(batches):
        if crashes and number == crashes[0]:
            crashes.pop(0)
            stage = CoverageStage(spots, CoverageSettings(), 2)
            since_flush = []  # fired but not acked: fired again after the restart
            number = committed
            continue
        out = stage.process(batches[number], store, None, range(2))
        since_flush += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
        number += 1
        if number % every == 0 or number == len(batches):
            apply_writes(store, stage.take_writes())
            got += since_flush
            since_flush = []
            committed = number
    assert got == want
    assert {t for _, t, _ in want} >= {"met"}
    assert pending_of(stage) == pending_of(steady)
    # What a restart reads from either store, on the same clock, is the same. (The live
    # ledgers may differ in what they have pruned: a ledger looks at its window instances only
    # when it must decide, and every restored one does at its first clock.)
    end = T0 + 600 * MIN
    from_store = CoverageStage(spots, CoverageSettings(), 2)
    from_steady_store = CoverageStage(spots, CoverageSettings(), 2)
    for hotspot_id in steady.ledgers:
        restored = from_store.ledger(hotspot_id, store)
        steady_restored = from_steady_store.ledger(hotspot_id, steady_store)
        assert restored.advance(end) == steady_restored.advance(end)
        assert restored.to_dict() == steady_restored.to_dict()


def test_records_are_sliced_by_their_bytes_in_order() -> None:
    records = [Record("visits", 0, n, None, b"x" * size) for n, size in enumerate([3, 4, 9, 1, 2])]
    slices = [[r.offset for r in part] for part in record_slices(records, 7)]
    assert slices == [[0, 1], [2], [3, 4]]
    assert list(record_slices([], 7)) == []


@pytest.mark.parametrize("seed", range(3))
def test_a_batch_taken_in_slices_decides_as_taken_whole(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Event clock: however small the slices a batch is taken in, the same alerts at the same
    times, the same ledgers and the same visits stored. Only clocks may differ: a ledger with
    nothing due is not moved to the watermark (``_due``), as with any other batch boundary."""
    rng = random.Random(seed)
    spots = spots_with((Window(DAILY, time(14), time(15), 10.0),), 6)
    records: list[Record] = []
    for number, batch in enumerate(random_day(rng, 6)):
        rng.shuffle(batch)
        parts = {"pings:0": max(u.ts_ms for u in batch) - rng.choice([0, 3 * MIN])}
        records += event_records(
            CoverageStage(spots, CoverageSettings(), 2), batch, parts, T0 - 30 * MIN, number
        )
    got = {}
    for name, most in (("whole", 1 << 30), ("sliced", 200)):
        monkeypatch.setattr(coverage_stage, "SLICE_BYTES", most)
        stage = CoverageStage(spots, CoverageSettings(), 2)
        store: dict[bytes, bytes] = {}
        decided: list[Any] = []
        for start in range(0, len(records), 40):
            out = stage.process(records[start : start + 40], store, None, range(2))
            apply_writes(store, stage.take_writes())
            decided += [(a.alert_id, a.type, a.ts_ms) for a in out.decided]
        ledgers = {h: {**ledger.to_dict(), "now_ms": None} for h, ledger in stage.ledgers.items()}
        visits = {k: v for k, v in store.items() if k[:1] == b"\x00"}
        got[name] = (sorted(decided), ledgers, visits)
    assert len(list(record_slices(records[:40], 200))) > 5
    assert got["sliced"] == got["whole"]
    assert {t for _, t, _ in got["whole"][0]} >= {"met"}


def test_coverage_reads_the_one_exit_grace_of_the_presence_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gap waits the exit grace after a window's end: the presence rules' one, which the
    worker's coverage settings cannot hold another value of."""
    monkeypatch.setenv("HOTSPOT_EXIT_GRACE_S", "7.5")
    presence = presence_from_env()
    assert coverage_from_env(presence).grace_ms == presence.exit_grace_ms == 7500
    settings = Settings(presence=presence)
    assert settings.coverage.presence == presence and settings.coverage.grace_ms == 7500
    other = Settings(presence=presence, coverage=CoverageSettings(co_patrol_minutes=9))
    assert other.coverage.grace_ms == 7500 and other.coverage.co_patrol_minutes == 9
    assert Settings().coverage.grace_ms == PresenceSettings().exit_grace_ms == 60_000


def test_live_a_batch_applied_in_parts_decides_as_one() -> None:
    """Live clock: the coverage agent applies a batch in parts, letting the presence loop run
    in between; the hot spots are decided once, at the batch's clock, after the last part. A
    part decided on its own would see the hot spot after one unit left and before the next
    one's enter (short, nobody there) and raise an ``at_risk`` the whole batch does not."""
    spots = collection(1)
    left = [
        VisitUpdate("enter", "HS-00", "U0", "police", T0 + 40 * MIN, T0 + 40 * MIN),
        VisitUpdate("exit", "HS-00", "U0", "police", T0 + 41 * MIN, T0 + 40 * MIN),
    ]
    arrived = [VisitUpdate("enter", "HS-00", "U1", "police", T0 + 50 * MIN, T0 + 50 * MIN)]
    now = T0 + 50 * MIN + 10_000  # ten minutes left of a window owing ten, one done

    def run(split: str) -> list[tuple[str, str]]:
        stage = CoverageStage(spots, CoverageSettings(), 1)
        store: dict[bytes, bytes] = {}
        first, second = (
            [Record("visits", 0, n, None, raw) for _, raw in update_messages(u, stage.partition_of)]
            for n, u in enumerate((left, arrived))
        )
        if split == "whole":
            outs = [stage.process(first + second, store, now, range(1))]
        else:
            outs = [
                stage.process(first, store, now, range(1), decide=split == "each part decides"),
                stage.process(second, store, now, range(1)),
            ]
        return sorted((a.type, a.hotspot_id) for out in outs for a in out.decided)

    assert run("parts") == run("whole") == []
    assert run("each part decides") == [("at_risk", "HS-00")]  # what deciding early would do
