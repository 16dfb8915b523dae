"""Coverage on the embedded broker: met, at risk then saved, gap; silent trackers; restarts."""

from __future__ import annotations

import base64
import http.server
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import orjson
import pytest

from geofences.projection import metres_per_degree
from geofences.timefmt import format_ms, parse_rfc3339_ms
from stream.alerts.webhooks import verify
from stream.broker.embedded import EmbeddedBroker
from tests.stream.harness import Worker, committed, consume, ping_messages, produce, values

pytestmark = pytest.mark.integration

LAT0, LON0 = 52.6360, -1.1400
M_LON, M_LAT = metres_per_degree(LAT0)
DAY = "2026-11-20"  # a Friday in GMT: local time is UTC


def square(index: int) -> list[list[float]]:
    """A 100 m square, 300 m east of the previous one."""
    west = LON0 + index * 300 / M_LON
    east, north = west + 100 / M_LON, LAT0 + 100 / M_LAT
    return [[west, LAT0], [east, LAT0], [east, north], [west, north], [west, LAT0]]


def centre(index: int) -> tuple[float, float]:
    return LON0 + (index * 300 + 50) / M_LON, LAT0 + 50 / M_LAT


def away() -> tuple[float, float]:
    return LON0 - 500 / M_LON, LAT0 - 500 / M_LAT


def hotspot_file(tmp_path: Path, windows: list[dict[str, Any]], count: int = 3) -> Path:
    features = [
        {
            "type": "Feature",
            "properties": {
                "id": f"HS-{'ABC'[i]}",
                "name": f"Square {'ABC'[i]}",
                "windows": windows,
            },
            "geometry": {"type": "Polygon", "coordinates": [square(i)]},
        }
        for i in range(count)
    ]
    path = tmp_path / "hotspots.geojson"
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": features}))
    return path


def at(hhmm: str) -> int:
    return parse_rfc3339_ms(f"{DAY}T{hhmm}:00Z")


def track(
    unit: str, unit_type: str, plan: list[tuple[str, str, int | None]]
) -> list[dict[str, Any]]:
    """Pings every minute: ``plan`` is (from HH:MM, to HH:MM exclusive, hot spot index or None)."""
    pings = []
    for start, end, where in plan:
        for ts in range(at(start), at(end), 60_000):
            lon, lat = away() if where is None else centre(where)
            pings.append(
                {
                    "unit_id": unit,
                    "unit_type": unit_type,
                    "ts": format_ms(ts),
                    "lat": lat,
                    "lon": lon,
                }
            )
    return pings


def scripted_day() -> list[dict[str, Any]]:
    p1 = track(
        "P1", "police", [("13:50", "14:05", None), ("14:05", "14:31", 0), ("14:31", "15:10", None)]
    )
    p2 = track(
        "P2",
        "police",
        [
            ("13:50", "14:10", None),
            ("14:10", "14:15", 1),
            ("14:15", "14:35", None),
            ("14:35", "14:53", 1),
            ("14:53", "15:10", None),
        ],
    )
    x = track("X", "security", [("13:50", "15:10", None)])
    return sorted(p1 + p2 + x, key=lambda p: (p["ts"], p["unit_id"]))


WINDOW = {"start": "14:00", "end": "15:00", "required_minutes": 20}


def alert_rows(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((a["hotspot_id"], a["type"], a["window_start"], a["window_end"]) for a in alerts)


def test_met_at_risk_then_saved_and_gap(broker: EmbeddedBroker, tmp_path: Path) -> None:
    worker = Worker(broker.url, geofences=hotspot_file(tmp_path, [WINDOW])).start()
    day = scripted_day()
    half = next(i for i, p in enumerate(day) if p["ts"] >= format_ms(at("14:40")))
    try:
        produce(broker.bootstrap, "pings", ping_messages(day[:half]))
        first = values(consume(broker.bootstrap, "coverage-alerts", 3, settle_s=3))
        # killed after alerts, restarted: none of them is sent again
        time.sleep(3.5)
        worker.kill()
        worker = Worker(broker.url, app_id=worker.app_id, geofences=worker.geofences).start()
        produce(broker.bootstrap, "pings", ping_messages(day[half:]))
        alerts = values(consume(broker.bootstrap, "coverage-alerts", 5, settle_s=4))
    finally:
        worker.stop()

    start, end = format_ms(at("14:00")), format_ms(at("15:00"))
    assert alert_rows(first) == [
        ("HS-A", "met", start, end),
        ("HS-B", "at_risk", start, end),
        ("HS-C", "at_risk", start, end),
    ]
    assert alert_rows(alerts) == [
        ("HS-A", "met", start, end),
        ("HS-B", "at_risk", start, end),
        ("HS-B", "met", start, end),
        ("HS-C", "at_risk", start, end),
        ("HS-C", "gap", start, end),
    ]
    assert len({a["alert_id"] for a in alerts}) == 5
    # each decided at the event time it became due, whatever the batch boundaries
    by = {(a["hotspot_id"], a["type"]): (a["ts"], a["covered_minutes"]) for a in alerts}
    assert by == {
        ("HS-A", "met"): (format_ms(at("14:25")), 20),
        ("HS-B", "at_risk"): (format_ms(at("14:30")), 5),
        ("HS-B", "met"): (format_ms(at("14:50")), 20),
        ("HS-C", "at_risk"): (format_ms(at("14:25")), 0),
        ("HS-C", "gap"): (format_ms(at("15:01") + 1), 0),
    }
    assert all(a["required_minutes"] == 20 for a in alerts)


def test_records_are_committed_only_once_what_they_changed_is_flushed(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """With a flush an hour apart, nothing the worker read is committed while it runs, though
    its alerts are out (Faust commits every 2.8 s); a clean stop flushes the unit states and the
    ledgers, then commits every pings and visit-update record read."""
    worker = Worker(
        broker.url,
        geofences=hotspot_file(tmp_path, [WINDOW]),
        extra_env={"HOTSPOT_STATE_FLUSH_S": "3600"},
    ).start()
    visit_updates = f"{worker.app_id}-visit-updates"
    day = scripted_day()
    half = next(i for i, p in enumerate(day) if p["ts"] >= format_ms(at("14:40")))
    try:
        produce(broker.bootstrap, "pings", ping_messages(day[:half]))
        assert len(consume(broker.bootstrap, "coverage-alerts", 3, settle_s=3)) == 3
        time.sleep(3.5)
        assert committed(broker.bootstrap, worker.app_id, "pings") == {}
        assert committed(broker.bootstrap, worker.app_id, visit_updates) == {}
    finally:
        assert worker.stop() == 0
    assert sum(committed(broker.bootstrap, worker.app_id, "pings").values()) == half
    read: dict[int, int] = {}
    for record in consume(broker.bootstrap, visit_updates, 1, settle_s=2):
        read[record.partition] = max(read.get(record.partition, 0), record.offset + 1)
    assert committed(broker.bootstrap, worker.app_id, visit_updates) == read


def test_gap_alert_when_every_tracker_is_silent(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Live clock: the only unit goes silent inside the window; the gap still comes, with the
    minutes it earned up to its last fix."""
    zone = ZoneInfo("Europe/London")
    now = datetime.now(UTC)
    end_utc = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (end_utc - now).total_seconds() < 20:  # time for the worker to start and see the pings
        end_utc += timedelta(minutes=1)
    start_utc = end_utc - timedelta(minutes=10)
    local = {
        "start": start_utc.astimezone(zone).strftime("%H:%M"),
        "end": end_utc.astimezone(zone).strftime("%H:%M"),
    }
    path = hotspot_file(tmp_path, [{**local, "required_minutes": 9}], count=1)
    env = {"HOTSPOT_EXIT_GRACE_S": "2", "HOTSPOT_SIGNAL_TIMEOUT_S": "600"}
    worker = Worker(broker.url, clock="live", geofences=path, extra_env=env).start()
    lon, lat = centre(0)
    base = int(time.time() * 1000) - 60_000
    pings = [
        {
            "unit_id": "S1",
            "unit_type": "pcso",
            "ts": format_ms(base + i * 20_000),
            "lat": lat,
            "lon": lon,
        }
        for i in range(4)
    ]
    try:
        produce(broker.bootstrap, "pings", ping_messages(pings))
        wait_s = (end_utc - datetime.now(UTC)).total_seconds() + 40
        alerts = values(
            consume(broker.bootstrap, "coverage-alerts", 2, timeout_s=wait_s, settle_s=1)
        )
    finally:
        worker.stop()
    gaps = [a for a in alerts if a["type"] == "gap"]
    assert len(gaps) == 1, alerts
    assert gaps[0]["window_end"] == format_ms(int(end_utc.timestamp() * 1000))
    assert gaps[0]["covered_minutes"] == 1.0  # 60 s from first to last fix, not up to the clock


class Receiver(http.server.BaseHTTPRequestHandler):
    """A real webhook receiver: records each delivery."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_assignments_join_the_file_windows_and_alerts_reach_the_webhook(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "whsec_" + base64.b64encode(b"sergeant-secret-key").decode()
    env = {"HOTSPOT_WEBHOOKS": f"http://127.0.0.1:{server.server_port}/alerts|{secret}"}
    worker = Worker(
        broker.url, geofences=hotspot_file(tmp_path, [], count=1), extra_env=env
    ).start()
    assignment = {"hotspot_id": "HS-A", "start": "14:00", "end": "15:00", "required_minutes": 20}
    try:
        produce(
            broker.bootstrap,
            "assignments",
            [
                (b"HS-A", orjson.dumps(assignment)),
                (b"HS-A", orjson.dumps({**assignment, "start": "25:00"})),
                (b"HS-Z", orjson.dumps({**assignment, "hotspot_id": "HS-Z"})),
            ],
        )
        dead = values(consume(broker.bootstrap, "assignments-dlq", 2, settle_s=1))
        time.sleep(1)
        produce(
            broker.bootstrap, "pings", ping_messages(track("P1", "police", [("13:50", "15:05", 0)]))
        )
        alerts = values(consume(broker.bootstrap, "coverage-alerts", 1, settle_s=2))
        deadline = time.monotonic() + 30
        while not Receiver.received and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.stop()
        server.shutdown()
    [(headers, body)] = Receiver.received
    assert orjson.loads(body) == alerts[0]
    assert headers["webhook-id"] == alerts[0]["alert_id"]
    assert verify(secret, headers, body, now=int(headers["webhook-timestamp"]))
    assert sorted(d["error"] for d in dead) == sorted(
        [
            "assignment for 'HS-A'.start: \"25:00\" is not HH:MM (00:00 to 23:59)",
            "assignment: unknown hotspot_id 'HS-Z'",
        ]
    ) or all("assignment" in d["error"] for d in dead)
    assert [
        (a["hotspot_id"], a["type"], a["window_start"], a["covered_minutes"]) for a in alerts
    ] == [("HS-A", "met", format_ms(at("14:00")), 20)]
