"""The patrol simulator of the demo: deterministic, valid pings, realistic patrol behaviour."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import orjson
import pytest

from geofences.hotspots import HotSpotCollection, demo_hotspots_path, load_hotspots
from geofences.index import HotSpotIndex
from geofences.pings import ping_from_obj
from geofences.timefmt import parse_rfc3339_ms
from stream.tools.simulator import UNIT_TYPES, PatrolSimulator

START_MS = 1_795_356_000_000  # 2026-11-22T10:00:00Z
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def collection() -> HotSpotCollection:
    return load_hotspots(demo_hotspots_path())


@pytest.fixture(scope="module")
def three_hours(collection: HotSpotCollection) -> list[dict[str, Any]]:
    return PatrolSimulator(collection, start_ms=START_MS).pings_until(START_MS + 3 * HOUR_MS)


def by_unit(pings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    units: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ping in pings:
        units[ping["unit_id"]].append(ping)
    return units


def test_same_seed_same_pings_however_the_calls_are_split(collection: HotSpotCollection) -> None:
    whole = PatrolSimulator(collection, seed=3, start_ms=START_MS).pings_until(START_MS + HOUR_MS)
    sim = PatrolSimulator(collection, seed=3, start_ms=START_MS)
    pieces: list[dict[str, Any]] = []
    for step in range(1, 61):
        pieces.extend(sim.pings_until(START_MS + step * 60_000 - 1))
    pieces.extend(sim.pings_until(START_MS + HOUR_MS))
    assert pieces == whole
    assert sim.pings_until(START_MS + HOUR_MS) == []


def test_another_seed_other_pings(collection: HotSpotCollection) -> None:
    a = PatrolSimulator(collection, seed=1, start_ms=START_MS).pings_until(START_MS + 600_000)
    b = PatrolSimulator(collection, seed=2, start_ms=START_MS).pings_until(START_MS + 600_000)
    assert a != b


def test_pings_are_valid_and_in_time_order(three_hours: list[dict[str, Any]]) -> None:
    decoded = [ping_from_obj(p) for p in three_hours]
    times = [p.ts_ms for p in decoded]
    assert times == sorted(times)
    assert times[0] >= START_MS and times[-1] <= START_MS + 3 * HOUR_MS
    for ping in three_hours:
        assert set(ping) == {"unit_id", "ts", "lat", "lon", "accuracy_m", "unit_type"}
        assert ping["ts"].endswith("Z") and len(ping["ts"]) == 24
        assert all(type(ping[f]) is float for f in ("lat", "lon", "accuracy_m"))
    assert orjson.loads(orjson.dumps(three_hours)) == three_hours
    for pings in by_unit(three_hours).values():
        unit_times = [parse_rfc3339_ms(p["ts"]) for p in pings]
        assert all(b > a for a, b in itertools.pairwise(unit_times))


def test_units_of_every_type_report_about_every_ten_seconds(
    three_hours: list[dict[str, Any]],
) -> None:
    units = by_unit(three_hours)
    assert len(units) == 14
    assert {p["unit_type"] for p in three_hours} == set(UNIT_TYPES)
    assert {"police-01", "pcso-01", "outreach-01", "security-01", "police-04"} <= set(units)
    for unit_id, pings in units.items():
        assert all(p["unit_type"] == unit_id.rsplit("-", 1)[0] for p in pings)
        times = [parse_rfc3339_ms(p["ts"]) for p in pings]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        ordinary = sorted(g for g in gaps if g <= 20_000)
        assert 8_000 <= ordinary[len(ordinary) // 2] <= 12_000
        assert len(set(ordinary)) > 10  # slightly irregular


def visits(pings: list[dict[str, Any]], index: HotSpotIndex) -> list[tuple[str, str, int]]:
    """(unit_type, hotspot_id, minutes) of each stay: good fixes inside, less than 60 s apart."""
    found: list[tuple[str, str, int]] = []
    for unit_pings in by_unit(pings).values():
        open_: dict[str, tuple[int, int]] = {}  # hotspot -> (first, last) inside
        for ping in unit_pings:
            if ping["accuracy_m"] > 50:
                continue
            ts = parse_rfc3339_ms(ping["ts"])
            inside = index.containing(ping["lon"], ping["lat"])
            for hotspot_id, (first, last) in list(open_.items()):
                if ts - last > 60_000:
                    found.append((unit_pings[0]["unit_type"], hotspot_id, (last - first) // 60_000))
                    del open_[hotspot_id]
            for hotspot_id in inside:
                first, _ = open_.get(hotspot_id, (ts, ts))
                open_[hotspot_id] = (first, ts)
        for hotspot_id, (first, last) in open_.items():
            found.append((unit_pings[0]["unit_type"], hotspot_id, (last - first) // 60_000))
    return found


def test_units_dwell_in_hot_spots_for_a_patrol(
    collection: HotSpotCollection, three_hours: list[dict[str, Any]]
) -> None:
    index = HotSpotIndex(collection.hotspots)
    stays = visits(three_hours, index)
    longest: dict[str, int] = defaultdict(int)
    for unit_type, _, minutes in stays:
        longest[unit_type] = max(longest[unit_type], minutes)
    assert longest["police"] >= 12
    assert longest["pcso"] >= 12
    assert longest["outreach"] >= 30
    assert longest["security"] >= 8
    # most hot spots get a real visit
    assert len({h for _, h, minutes in stays if minutes >= 10}) >= 6
    # and a fair share of all good fixes lie inside some hot spot
    good = [p for p in three_hours if p["accuracy_m"] <= 50]
    inside = sum(1 for p in good if index.containing(p["lon"], p["lat"]))
    assert 0.5 < inside / len(good) < 0.95


def test_some_units_start_inside_a_hot_spot(collection: HotSpotCollection) -> None:
    index = HotSpotIndex(collection.hotspots)
    first_minute = PatrolSimulator(collection, start_ms=START_MS).pings_until(START_MS + 60_000)
    inside = {p["unit_id"] for p in first_minute if index.containing(p["lon"], p["lat"])}
    assert len(inside) >= 3


def test_jitter_puts_some_pings_just_outside_an_edge(
    collection: HotSpotCollection, three_hours: list[dict[str, Any]]
) -> None:
    index = HotSpotIndex(collection.hotspots)
    near_edge = 0
    for ping in three_hours:
        if ping["accuracy_m"] > 50 or index.containing(ping["lon"], ping["lat"]):
            continue
        if min(index.distance_m(ping["lon"], ping["lat"], h) for h in index.ids) < 15:
            near_edge += 1
    assert near_edge > 50


def test_trackers_go_silent_for_more_than_five_minutes(three_hours: list[dict[str, Any]]) -> None:
    silent_units = set()
    for unit_id, pings in by_unit(three_hours).items():
        times = [parse_rfc3339_ms(p["ts"]) for p in pings]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if any(g > 300_000 for g in gaps):
            silent_units.add(unit_id)
            assert max(gaps) <= 620_000 + 20_000
    assert len(silent_units) >= 2


def test_some_fixes_are_poor(three_hours: list[dict[str, Any]]) -> None:
    poor = [p for p in three_hours if p["accuracy_m"] > 50]
    assert 0.005 < len(poor) / len(three_hours) < 0.08
    assert any(60 <= p["accuracy_m"] <= 150 for p in poor)
    good = sorted(p["accuracy_m"] for p in three_hours if p["accuracy_m"] <= 50)
    assert 5 <= good[len(good) // 2] <= 30


def test_police_and_outreach_rarely_share_a_hot_spot(
    collection: HotSpotCollection, three_hours: list[dict[str, Any]]
) -> None:
    index = HotSpotIndex(collection.hotspots)
    services: dict[tuple[int, str], set[str]] = defaultdict(set)
    for ping in three_hours:
        if ping["accuracy_m"] > 50:
            continue
        minute = parse_rfc3339_ms(ping["ts"]) // 60_000
        service = {"pcso": "police"}.get(ping["unit_type"], ping["unit_type"])
        for hotspot_id in index.containing(ping["lon"], ping["lat"]):
            services[(minute, hotspot_id)].add(service)
    together = sum(1 for s in services.values() if {"police", "outreach"} <= s)
    assert together / len(services) < 0.05


def test_unit_count_and_validation(collection: HotSpotCollection) -> None:
    sim = PatrolSimulator(collection, units=3, start_ms=START_MS)
    ids = {p["unit_id"] for p in sim.pings_until(START_MS + 60_000)}
    assert ids == {"police-01", "pcso-01", "outreach-01"}
    with pytest.raises(ValueError):
        PatrolSimulator(collection, units=0)


def test_a_simulated_month_is_reproducible_and_its_crimes_lie_in_hot_spots() -> None:
    from geofences.hotspots import parse_hotspots
    from geofences.index import HotSpotIndex
    from stream.tools.simulator import simulate_month

    month = simulate_month(days=3, seed=5, first="2026-10-24")
    again = simulate_month(days=3, seed=5, first="2026-10-24")
    assert month == again
    assert (month.first, month.last) == ("2026-10-24", "2026-10-26")
    assert [p["ts"] for p in month.pings] == sorted(p["ts"] for p in month.pings)
    index = HotSpotIndex(parse_hotspots(month.hotspot_file).hotspots)
    assert month.crimes
    assert all(index.containing(c["lon"], c["lat"]) for c in month.crimes)
    assert len(month.patrol_days) == 3 * 5
    assert simulate_month(days=3, seed=6, first="2026-10-24").pings != month.pings
