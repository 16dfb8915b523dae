"""End to end on the embedded broker: pings in, exactly the events docs/interface.md defines out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from geofences.projection import metres_per_degree
from geofences.timefmt import format_ms, parse_rfc3339_ms
from stream.broker.embedded import EmbeddedBroker
from tests.stream.harness import Worker, consume, ping_messages, produce, values

pytestmark = pytest.mark.integration

LON0, LAT0 = -1.1340, 52.6360
M_LON, M_LAT = metres_per_degree(LAT0)
SIDE_M = 150.0
T0 = parse_rfc3339_ms("2026-11-20T14:00:00Z")


def at(east_m: float, north_m: float = 75.0) -> tuple[float, float]:
    """(lon, lat) ``east_m`` east and ``north_m`` north of the square's south-west corner."""
    return LON0 + east_m / M_LON, LAT0 + north_m / M_LAT


def square_file(
    tmp_path: Path, lon0: float = LON0, lat0: float = LAT0, side_m: float = SIDE_M
) -> Path:
    """A hot spot file of one square, ``HS-A``, ``side_m`` a side from its south-west corner."""
    m_lon, m_lat = metres_per_degree(lat0)
    east, north = lon0 + side_m / m_lon, lat0 + side_m / m_lat
    ring = [[lon0, lat0], [east, lat0], [east, north], [lon0, north], [lon0, lat0]]
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"id": "HS-A", "name": "Square"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }
    path = tmp_path / "square.geojson"
    path.write_bytes(orjson.dumps(collection))
    return path


def ping(
    unit: str, seconds: float, east_m: float, unit_type: str | None = None, **extra: Any
) -> dict[str, Any]:
    lon, lat = at(east_m)
    value: dict[str, Any] = {
        "unit_id": unit,
        "ts": format_ms(T0 + round(seconds * 1000)),
        "lat": lat,
        "lon": lon,
    }
    if unit_type:
        value["unit_type"] = unit_type
    value.update(extra)
    return value


def scripted_day() -> list[dict[str, Any]]:
    inside, edge_out, far_out = 75.0, SIDE_M + 10, SIDE_M + 40
    return [
        ping("U1", 0, -60, "police"),
        ping("U1", 30, inside),  # enter
        ping("U2", 40, inside, "outreach"),  # enter
        ping("U1", 60, inside),
        ping("U1", 45, inside),  # late: no events
        ping("U3", 50, inside, "pcso"),  # enter
        ping("U1", 90, edge_out),  # streak starts within the buffer
        ping("U1", 100, inside, accuracy_m=80),  # poor accuracy: ignored
        ping("U1", 120, inside),  # streak ends
        ping("U3", 100, edge_out),  # streak starts at 100
        ping("U3", 130, edge_out),
        ping("U1", 150, far_out),  # beyond the buffer: exit left at 150
        ping("U3", 160, edge_out),  # streak lasted 60 s: exit left at 100
        ping("U2", 440, inside),  # 400 s of silence: signal lost at 40, then enter again at 440
        ping("U1", 500, inside, "police"),  # enter again
    ]


def expected_events() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    def ts(seconds: float) -> str:
        return format_ms(T0 + round(seconds * 1000))

    geofence = [
        ("enter", "U1", "police", ts(30), None),
        ("enter", "U2", "outreach", ts(40), None),
        ("enter", "U3", "pcso", ts(50), None),
        ("exit", "U1", "police", ts(150), "left"),
        ("exit", "U3", "pcso", ts(100), "left"),
        ("exit", "U2", "outreach", ts(40), "signal_lost"),
        ("enter", "U2", "outreach", ts(440), None),
        ("enter", "U1", "police", ts(500), None),
    ]
    dwell = [
        ("U1", "police", ts(30), ts(150), 120.0, "left"),
        ("U3", "pcso", ts(50), ts(100), 50.0, "left"),
        ("U2", "outreach", ts(40), ts(40), 0.0, "signal_lost"),
    ]
    return geofence, dwell


def geofence_key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["type"], e["unit_id"], e["unit_type"], e["ts"], e["reason"])


def dwell_key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e["unit_id"],
        e["unit_type"],
        e["enter_ts"],
        e["exit_ts"],
        e["duration_s"],
        e["exit_reason"],
    )


def per_unit(rows: list[tuple[Any, ...]], unit_index: int) -> dict[str, list[tuple[Any, ...]]]:
    result: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        result.setdefault(row[unit_index], []).append(row)
    return result


def test_scripted_day_gives_exactly_the_defined_events(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    worker = Worker(broker.url, geofences=square_file(tmp_path), data_dir=tmp_path / "data").start()
    try:
        pings = scripted_day()
        messages = ping_messages(pings)
        # U3's tracker gateway sends no key (into one partition, which keeps their order):
        # the worker re-keys its pings by unit_id.
        messages = [(None, value) if key == b"U3" else (key, value) for key, value in messages]
        produce(broker.bootstrap, "pings", messages, unkeyed_partition=0)
        want_geofence, want_dwell = expected_events()
        geofence = values(
            consume(broker.bootstrap, "geofence-events", len(want_geofence), settle_s=3)
        )
        dwell = values(consume(broker.bootstrap, "dwell-events", len(want_dwell), settle_s=0.5))
    finally:
        assert worker.stop() == 0

    assert sorted(geofence_key(e) for e in geofence) == sorted(want_geofence)
    # per unit, events come out in the order they happened
    assert per_unit([geofence_key(e) for e in geofence], 1) == per_unit(want_geofence, 1)
    assert sorted(dwell_key(e) for e in dwell) == sorted(want_dwell)
    assert all(e["hotspot_id"] == "HS-A" for e in geofence + dwell)
    assert len({e["event_id"] for e in geofence + dwell}) == len(geofence) + len(dwell)
    exits = {(e["unit_id"], e["ts"]): e for e in geofence if e["type"] == "exit"}
    u1_exit = exits[("U1", format_ms(T0 + 150_000))]
    assert (u1_exit["lon"], u1_exit["lat"]) == pytest.approx(at(SIDE_M + 40))


def test_malformed_values_go_to_the_dead_letter_topic_and_the_worker_goes_on(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    worker = Worker(broker.url, geofences=square_file(tmp_path), data_dir=tmp_path / "data").start()
    good = ping("U9", 0, 75.0, "police")
    bad: list[tuple[bytes, str]] = [
        (b"not json at all", "not JSON"),
        (orjson.dumps({**good, "lat": "52.6"}), "lat must be a number"),
        (orjson.dumps({**good, "unit_id": 42}), "unit_id must be a string"),
        (orjson.dumps({**good, "lat": 123.0}), "outside -90..90"),
        (orjson.dumps({**good, "lon": -181.0}), "outside -180..180"),
        (b"", "empty value"),
        (b"\xff\xfe\xfa not utf-8", "not UTF-8"),
        (orjson.dumps({**good, "pad": "x" * 20_000}), "too large"),
        (orjson.dumps([1, 2, 3]), "JSON object"),
        (orjson.dumps({**good, "ts": "yesterday"}), "RFC 3339"),
    ]
    try:
        produce(broker.bootstrap, "pings", [(b"bad", value) for value, _ in bad])
        produce(broker.bootstrap, "pings", ping_messages([good]))
        dead = consume(broker.bootstrap, "pings-dlq", len(bad), settle_s=2)
        entered = values(consume(broker.bootstrap, "geofence-events", 1, settle_s=0.5))
    finally:
        assert worker.stop() == 0

    letters = [orjson.loads(r.value) for r in dead]
    assert len(letters) == len(bad)
    for value, reason in bad:
        try:
            raw = value.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            raw = base64.b64encode(value).decode()
        # an oversized value keeps a prefix of itself, with its size
        [letter] = [
            letter
            for letter in letters
            if letter["raw_bytes"] == len(value)
            and (
                letter["raw"] == raw or (letter["raw_truncated"] and raw.startswith(letter["raw"]))
            )
        ]
        assert letter["raw_truncated"] == (letter["raw"] != raw)
        assert reason in letter["error"], letter
        assert "\n" not in letter["error"]
        assert letter["topic"] == "pings"
        assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)
    assert [(e["type"], e["unit_id"]) for e in entered] == [("enter", "U9")]


def test_a_restarted_worker_still_closes_the_visit_it_had_open(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Stopped mid-visit and restarted: the visit's exit comes once, with the original enter time.
    On Tansu this needs the changelog end-offset work-around (stream/broker/tansu.py)."""
    geofences = square_file(tmp_path)
    first = Worker(broker.url, geofences=geofences, data_dir=tmp_path / "data").start()
    units = [f"R{i:02d}" for i in range(12)]
    try:
        produce(
            broker.bootstrap, "pings", ping_messages([ping(u, 10, 75.0, "police") for u in units])
        )
        produce(broker.bootstrap, "pings", ping_messages([ping(u, 20, 70.0) for u in units]))
        assert len(consume(broker.bootstrap, "geofence-events", len(units), settle_s=2)) == len(
            units
        )
    finally:
        assert first.stop() == 0

    second = Worker(
        broker.url, app_id=first.app_id, geofences=geofences, data_dir=tmp_path / "data"
    ).start()
    try:
        assert second.health()["units"] == len(units)  # type: ignore[index]
        produce(broker.bootstrap, "pings", ping_messages([ping(u, 30, SIDE_M + 40) for u in units]))
        events = values(consume(broker.bootstrap, "geofence-events", 2 * len(units), settle_s=3))
        dwell = values(consume(broker.bootstrap, "dwell-events", len(units), settle_s=0.5))
    finally:
        assert second.stop() == 0

    assert sorted((e["type"], e["unit_id"]) for e in events) == sorted(
        [("enter", u) for u in units] + [("exit", u) for u in units]
    )
    assert sorted((d["unit_id"], d["enter_ts"], d["duration_s"]) for d in dwell) == [
        (u, format_ms(T0 + 10_000), 20.0) for u in units
    ]
