"""No officer's position and no unit id in the worker's log at INFO or above.

A worker logging at ``info`` is taken through enters, exits, a signal loss, dead letters (one of
them a raw value holding a unit id and coordinates), invalid assignments and a restart (its
restored states are logged), once with text lines and once with JSON lines; then every line of
its log is scanned for the distinctive unit ids and coordinate digits the scenario used."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from geofences.projection import metres_per_degree
from geofences.timefmt import format_ms, parse_rfc3339_ms
from stream.broker.embedded import EmbeddedBroker
from tests.stream.harness import Worker, consume, ping_messages, produce
from tests.stream.worker.test_presence_pipeline import square_file as presence_square_file

pytestmark = pytest.mark.integration

# an origin whose digits appear in nothing else a log holds (timestamps, ports, offsets)
LON0, LAT0 = -1.13863, 52.63917
M_LON, M_LAT = metres_per_degree(LAT0)
SIDE_M = 150.0
T0 = parse_rfc3339_ms("2026-11-20T14:00:00Z")
UNITS = ("PRIV-UNIT-7781", "PRIV-UNIT-7782", "PRIV-UNIT-7783")
#: in dead letters and an assignment only
STRAY_UNIT = "PRIV-UNIT-7789"
#: every coordinate the scenario sends, valid or not
SENT: set[float] = set()


def at(east_m: float, north_m: float = 75.0) -> tuple[float, float]:
    lon, lat = LON0 + east_m / M_LON, LAT0 + north_m / M_LAT
    SENT.update((lon, lat))
    return lon, lat


def square_file(tmp_path: Path) -> Path:
    return presence_square_file(tmp_path, LON0, LAT0, SIDE_M)


def ping(unit: str, seconds: float, east_m: float, **extra: Any) -> dict[str, Any]:
    lon, lat = at(east_m)
    value = {"unit_id": unit, "ts": format_ms(T0 + round(seconds * 1000)), "lat": lat, "lon": lon}
    return {**value, **extra}


def leak_patterns() -> list[re.Pattern[str]]:
    """A unit id, or a sent coordinate as printed to 3 decimals or more (rounded or cut; a
    longitude with its sign, as ``1.138`` alone could be a duration)."""
    texts = set(UNITS) | {STRAY_UNIT}
    for value in SENT:
        sign = "-" if value < 0 else ""
        magnitude = abs(value)
        texts.add(f"{sign}{magnitude:.3f}")
        whole, _, decimals = f"{magnitude:.12f}".partition(".")
        texts.add(f"{sign}{whole}.{decimals[:3]}")
        texts.add(f"{whole}.{decimals[:4]}")  # 4 decimals or more: distinctive without the sign
        texts.add(f"{magnitude:.4f}")
    return [re.compile(re.escape(text)) for text in sorted(texts)]


def leaks(log: str) -> list[str]:
    patterns = leak_patterns()
    return [line for line in log.splitlines() if any(p.search(line) for p in patterns)]


def line_levels(log: str, fmt: str) -> set[str]:
    if fmt == "json":
        return {
            orjson.loads(line)["level"]
            for line in log.splitlines()
            if line.startswith("{") and line.endswith("}")
        }
    return {m.group(1) for m in re.finditer(r"^\S+ \S+ (INFO|WARNING|ERROR|CRITICAL) ", log, re.M)}


def run_scenario(broker: EmbeddedBroker, tmp_path: Path, fmt: str) -> list[Path]:
    geofences, data = square_file(tmp_path), tmp_path / "data"
    env = {"HOTSPOT_LOG_FORMAT": fmt}
    inside, far_out = 75.0, SIDE_M + 40
    u1, u2, u3 = UNITS
    first = Worker(broker.url, geofences=geofences, data_dir=data, extra_env=env).start()
    try:
        good = ping(STRAY_UNIT, 0, inside, unit_type="police")
        bad = [
            orjson.dumps({**good, "lat": f"{good['lat']}"}),  # a string: unit id and coordinates
            f"{STRAY_UNIT} at {good['lat']},{good['lon']}".encode(),  # not JSON
            orjson.dumps({**good, "lat": 123.0}),
            orjson.dumps({**good, "ts": "yesterday"}),
            orjson.dumps({**good, "pad": "x" * 20_000}),
        ]
        produce(broker.bootstrap, "pings", [(STRAY_UNIT.encode(), value) for value in bad])
        assignments = [
            orjson.dumps(
                {"hotspot_id": STRAY_UNIT, "unit_id": STRAY_UNIT, "lat": good["lat"]}
            ),  # unknown hot spot
            f'{{"hotspot_id": "HS-A", "lon": {good["lon"]}'.encode(),  # not JSON
        ]
        produce(broker.bootstrap, "assignments", [(b"HS-A", value) for value in assignments])
        pings = [
            ping(u1, 0, -60, unit_type="police"),
            ping(u1, 30, inside),  # enter
            ping(u2, 40, inside, unit_type="outreach"),  # enter
            ping(u3, 50, inside, unit_type="pcso"),  # enter
            ping(u1, 150, far_out),  # exit
            ping(u3, 440, inside),  # u2 silent 400 s: signal lost
        ]
        produce(broker.bootstrap, "pings", ping_messages(pings))
        assert len(consume(broker.bootstrap, "pings-dlq", len(bad), settle_s=1)) == len(bad)
        assert len(consume(broker.bootstrap, "assignments-dlq", 2, settle_s=0.5)) == 2
        before = len(consume(broker.bootstrap, "geofence-events", 5, settle_s=2))
        assert before >= 5
    finally:
        assert first.stop() == 0

    second = Worker(
        broker.url, app_id=first.app_id, geofences=geofences, data_dir=data, extra_env=env
    ).start()
    try:
        assert second.health()["units"] > 0  # type: ignore[index]
        produce(broker.bootstrap, "pings", ping_messages([ping(u3, 460, far_out)]))
        after = len(consume(broker.bootstrap, "geofence-events", before + 1, settle_s=1))
        assert after > before  # the exit of a unit whose state was restored
    finally:
        assert second.stop() == 0
    return [first.log_path, second.log_path]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_log_at_info_holds_no_unit_id_and_no_coordinate(
    broker: EmbeddedBroker, tmp_path: Path, fmt: str
) -> None:
    logs = [path.read_text(errors="replace") for path in run_scenario(broker, tmp_path, fmt)]
    whole = "\n".join(logs)
    # the scan read real logs: INFO lines of both runs, the restored states among them
    assert "INFO" in line_levels(whole, fmt)
    assert all("unit states restored" in log for log in logs)
    assert leaks(whole) == []


def test_the_scan_finds_what_it_looks_for() -> None:
    lon, lat = at(75.0)
    found = leaks(
        f"a INFO hotspot: {UNITS[0]} moved\n"
        f"b INFO hotspot: at {lat:.3f}\n"
        f"c INFO hotspot: at {lon!r}\n"
        f'{{"level":"INFO","message":"raw {{\\"lat\\":{lat}}}"}}\n'
        "d INFO hotspot: took 1.138 s on port 52639\n"
    )
    assert len(found) == 4
