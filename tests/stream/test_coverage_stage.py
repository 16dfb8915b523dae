"""The coverage stage's input: a batch's visit updates, one message per coverage partition."""

from __future__ import annotations

from datetime import time

import orjson

from geofences.coverage import CoverageSettings
from geofences.hotspots import HotSpot, HotSpotCollection, Window
from stream.coverage_stage import CoverageStage, update_messages
from stream.presence_stage import Record, VisitUpdate

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


def test_one_message_per_partition_keeping_each_partitions_order() -> None:
    stage = CoverageStage(collection(6), CoverageSettings(), 4)
    messages = update_messages(updates(), stage.partition_of)
    assert [p for p, _ in messages] == sorted({stage.partition_of[u.hotspot_id] for u in updates()})
    for partition, raw in messages:
        kind, entries = orjson.loads(raw)
        assert kind == "updates"
        expected = [
            [u.hotspot_id, u.kind, u.unit_id, u.unit_type, u.ts_ms, u.enter_ms]
            for u in updates()
            if stage.partition_of[u.hotspot_id] == partition
        ]
        assert entries == expected


def test_batched_and_single_messages_decide_the_same_alerts() -> None:
    """Live clock: the same updates as one message per partition or one record per update."""
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
    single_records = [
        Record("visits", single.partition_of[u.hotspot_id], i, u.hotspot_id.encode(), u.encode())
        for i, u in enumerate(updates())
    ]
    now = T0 + 12 * MIN
    out_batched = batched.process(batched_records, stored.get, now, range(4))
    out_single = single.process(single_records, stored.get, now, range(4))
    assert sorted(a.alert_id for a in out_batched.decided) == sorted(
        a.alert_id for a in out_single.decided
    )
    assert sorted(a.type for a in out_batched.decided) == ["met"] * 6
    assert out_batched.writes == out_single.writes
