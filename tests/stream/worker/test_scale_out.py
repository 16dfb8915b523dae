"""Scale-out on the embedded broker: two workers share the partitions; one is killed mid-stream;
the survivor takes over every partition and the visits come out exactly as the pure core says."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from geofences.hotspots import load_hotspots
from geofences.index import HotSpotIndex
from geofences.pings import decode_ping
from geofences.presence import walk
from geofences.projection import metres_per_degree
from geofences.timefmt import format_ms, parse_rfc3339_ms
from stream.broker.embedded import EmbeddedBroker
from stream.kafka import key_partition
from stream.worker.settings import presence_from_env
from tests.stream.harness import (
    Worker,
    committed,
    consume,
    ping_messages,
    produce,
    values,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 8
LON0, LAT0 = -1.1340, 52.6360
M_LON, M_LAT = metres_per_degree(LAT0)
T0 = parse_rfc3339_ms("2026-11-20T14:00:00Z")
STEP_S = 10
UNITS = [f"W{i:02d}" for i in range(40)]
ROUNDS = 30
#: metres east of HS-A's west edge along the line north = 75 m: HS-A spans 0..150, HS-B
#: 300..450. Out and back, each leg entering and leaving both (every exit is beyond the buffer).
ROUTE = [-60, 20, 75, 130, 220, 320, 375, 430, 520, 430, 375, 320, 220, 130, 75, 20]
FAR_WEST = -200  # every unit's last ping: outside both, so every visit ends


def two_squares(tmp_path: Path) -> Path:
    def ring(west_m: float) -> list[list[float]]:
        west, east = LON0 + west_m / M_LON, LON0 + (west_m + 150) / M_LON
        north = LAT0 + 150 / M_LAT
        return [[west, LAT0], [east, LAT0], [east, north], [west, north], [west, LAT0]]

    features = [
        {
            "type": "Feature",
            "properties": {"id": hotspot_id, "name": hotspot_id},
            "geometry": {"type": "Polygon", "coordinates": [ring(west_m)]},
        }
        for hotspot_id, west_m in (("HS-A", 0.0), ("HS-B", 300.0))
    ]
    path = tmp_path / "two-squares.geojson"
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": features}))
    return path


def round_pings(step: int) -> list[dict[str, Any]]:
    """One ping from every unit; each unit starts at its own point of the route."""
    pings = []
    for i, unit in enumerate(UNITS):
        east = FAR_WEST if step == ROUNDS else ROUTE[(step + i) % len(ROUTE)]
        pings.append(
            {
                "unit_id": unit,
                "ts": format_ms(T0 + step * STEP_S * 1000),
                "lat": LAT0 + 75 / M_LAT,
                "lon": LON0 + east / M_LON,
                "unit_type": ("police", "pcso", "outreach", "security")[i % 4],
            }
        )
    return pings


def rounds(first: int, last: int) -> list[dict[str, Any]]:
    return [p for step in range(first, last) for p in round_pings(step)]


def partition_of(unit: str) -> int:
    """The partition the producer's default partitioner puts the unit's pings in."""
    return key_partition(unit.encode(), PARTITIONS)


def expected_events(geofences: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Geofence and dwell events by event_id, from the pure core over all the pings at once."""
    index = HotSpotIndex(load_hotspots(geofences).hotspots)
    pings = [decode_ping(orjson.dumps(p)) for p in rounds(0, ROUNDS + 1)]
    _, events = walk(
        pings,
        lambda p: index.containing(p.lon, p.lat),
        lambda p, hotspot_id: index.distance_m(p.lon, p.lat, hotspot_id),
        presence_from_env(),
    )
    geofence, dwell = {}, {}
    for event in events:
        payload = event.to_json_dict()
        (dwell if "exit_reason" in payload else geofence)[payload["event_id"]] = payload
    return geofence, dwell


def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Events deduplicated by event_id (at-least-once may redeliver); a redelivery must be
    the very same event."""
    result: dict[str, dict[str, Any]] = {}
    for event in events:
        first = result.setdefault(event["event_id"], event)
        assert first == event, f"two different events share an id: {first} {event}"
    return result


def split_between(a: Worker, b: Worker) -> bool:
    """Both workers' latest assignments: each owns some partitions, together all, none twice."""
    ours, theirs = a.restored_partitions(), b.restored_partitions()
    if not ours or not theirs:
        return False
    mine, other = ours[-1], theirs[-1]
    return (
        bool(mine) and bool(other) and not mine & other and mine | other == set(range(PARTITIONS))
    )


def test_killed_worker_partitions_move_and_every_visit_comes_out_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    geofences = two_squares(tmp_path)
    want_geofence, want_dwell = expected_events(geofences)
    assert {partition_of(u) for u in UNITS} == set(range(PARTITIONS))
    assert len(want_dwell) > 2 * len(UNITS)

    survivor = Worker(broker.url, geofences=geofences, data_dir=tmp_path / "a").start()
    victim = Worker(
        broker.url, app_id=survivor.app_id, geofences=geofences, data_dir=tmp_path / "b"
    )
    try:
        victim.start()
        assert wait_until(lambda: split_between(survivor, victim)), (
            survivor.restored_partitions(),
            victim.restored_partitions(),
        )
        victim_partitions = victim.restored_partitions()[-1]

        produce(broker.bootstrap, "pings", ping_messages(rounds(0, 10)))

        def both_hold_units() -> bool:
            ours, theirs = survivor.units(), victim.units()
            seen = [u["unit_id"] for u in ours + theirs]
            return bool(ours) and bool(theirs) and sorted(seen) == UNITS

        assert wait_until(both_hold_units)
        # each worker holds exactly the units of the partitions it owns
        victim_units = {u["unit_id"] for u in victim.units()}
        assert victim_units == {u for u in UNITS if partition_of(u) in victim_partitions}

        # mid-stream: the victim is killed right after a phase it has been handed, with
        # no chance to commit or leave the group; production goes on.
        produce(broker.bootstrap, "pings", ping_messages(rounds(10, 20)))
        victim.kill()
        produce(broker.bootstrap, "pings", ping_messages(rounds(20, ROUNDS + 1)))

        # done when the group has committed every ping: a worker commits an offset only once
        # what it produced for the records before it is flushed.
        produced = Counter(partition_of(p["unit_id"]) for p in rounds(0, ROUNDS + 1))
        assert wait_until(
            lambda: committed(broker.bootstrap, survivor.app_id, "pings") == produced, 90
        ), (committed(broker.bootstrap, survivor.app_id, "pings"), produced)
        final_units = survivor.units()
        geofence = by_id(
            values(consume(broker.bootstrap, "geofence-events", len(want_geofence), 15, settle_s=1))
        )
        dwell = by_id(values(consume(broker.bootstrap, "dwell-events", len(want_dwell), 15)))
    finally:
        victim.kill()
        assert survivor.stop() == 0

    # (1) exactly the visits of the pure core, each under its own id: none lost, none doubled,
    # and none left open (every unit's last ping is outside every hot spot)
    assert dwell == want_dwell
    assert geofence == want_geofence
    assert not [u for u in final_units if u["present_in"]]
    # (2) the survivor took over all partitions: its last rebalance restored all eight, and it
    # holds every unit, of every partition, the victim's included
    assert survivor.restored_partitions()[-1] == set(range(PARTITIONS))
    assert sorted(u["unit_id"] for u in final_units) == UNITS
    assert victim_units and {partition_of(u) for u in victim_units} == victim_partitions
