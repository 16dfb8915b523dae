"""The control room's JSON API, event stream, access control and metrics, against real workers
on the embedded broker."""

from __future__ import annotations

import base64
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from geofences.timefmt import format_ms
from stream.broker.embedded import EmbeddedBroker
from tests.stream.harness import Worker, ping_messages, produce, wait_until
from tests.stream.worker.test_presence_pipeline import LAT0, LON0, SIDE_M, at

pytestmark = pytest.mark.integration

TOKEN = "wall-screen-7"


def windowed_square(tmp_path: Path) -> Path:
    """The test square with a daily window from an hour ago to an hour ahead (London time),
    needing a few seconds of patrol."""
    local = datetime.now(ZoneInfo("Europe/London"))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=1)).strftime("%H:%M")
    east, north = at(SIDE_M, SIDE_M)
    ring = [[LON0, LAT0], [east, LAT0], [east, north], [LON0, north], [LON0, LAT0]]
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "id": "HS-A",
                    "name": "Square",
                    "windows": [{"start": start, "end": end, "required_minutes": 0.1}],
                },
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }
    path = tmp_path / "square.geojson"
    path.write_bytes(orjson.dumps(collection))
    return path


def get(
    worker: Worker, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.web_port}{path}", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def api(worker: Worker, path: str) -> Any:
    status, _, body = get(worker, path, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    return orjson.loads(body)


class EventStream(threading.Thread):
    """Reads ``/api/stream`` in the background, collecting (event, data) messages."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.messages: list[tuple[str, Any]] = []
        self.stopped = False

    def run(self) -> None:
        with urllib.request.urlopen(self.url, timeout=30) as response:
            event = ""
            while not self.stopped:
                line = response.readline().decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    self.messages.append((event, orjson.loads(line[len("data: ") :])))

    def of(self, event: str) -> list[Any]:
        return [data for name, data in list(self.messages) if name == event]


def now_ping(unit: str, seconds_ago: float, east_m: float, unit_type: str) -> dict[str, Any]:
    lon, lat = at(east_m)
    ts = format_ms(time.time_ns() // 1_000_000 - round(seconds_ago * 1000))
    return {"unit_id": unit, "ts": ts, "lat": lat, "lon": lon, "unit_type": unit_type}


def test_api_stream_access_and_metrics(broker: EmbeddedBroker, tmp_path: Path) -> None:
    worker = Worker(
        broker.url,
        clock="live",
        geofences=windowed_square(tmp_path),
        extra_env={"HOTSPOT_WEB_TOKEN": TOKEN},
    ).start()
    try:
        status, headers, _ = get(worker, "/api/hotspots")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert get(worker, "/", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(worker, "/healthz")[0] == 200
        assert get(worker, f"/?token={TOKEN}")[0] == 200

        before = api(worker, "/api/hotspots")
        assert [h["id"] for h in before["hotspots"]] == ["HS-A"]
        square = before["hotspots"][0]
        assert square["state"] == "pending" and square["name"] == "Square"
        assert square["geometry"]["type"] == "Polygon"
        assert square["window"]["required_minutes"] == 0.1

        stream = EventStream(f"http://127.0.0.1:{worker.web_port}/api/stream?token={TOKEN}")
        stream.start()
        assert wait_until(lambda: stream.of("state"), 15)
        started = format_ms(time.time_ns() // 1_000_000 - 60_000)

        produce(
            broker.bootstrap,
            "pings",
            ping_messages(
                [
                    now_ping("U1", 20, 75.0, "police"),
                    now_ping("U2", 20, SIDE_M + 500, "pcso"),
                    now_ping("U1", 5, 80.0, "police"),
                ]
            ),
        )

        def covered() -> bool:
            # U1's two fixes may reach coverage in two batches (up to HOTSPOT_COVERAGE_WITHIN_S
            # apart): "covered" comes with the enter, the minutes with the second fix
            square = api(worker, "/api/hotspots")["hotspots"][0]
            return square["state"] == "covered" and square["window"]["covered_minutes"] >= 0.1

        assert wait_until(covered, 30)
        square = api(worker, "/api/hotspots")["hotspots"][0]
        assert [p["unit_id"] for p in square["present"]] == ["U1"]
        assert square["window"]["covered_minutes"] >= 0.1

        units = {u["unit_id"]: u for u in api(worker, "/api/units")["units"]}
        assert set(units) == {"U1", "U2"}
        assert list(units["U1"]["present_in"]) == ["HS-A"] and units["U2"]["present_in"] == {}
        assert units["U2"]["unit_type"] == "pcso" and units["U2"]["stale"] is False
        assert 0 <= units["U1"]["age_s"] < 300

        assert wait_until(lambda: api(worker, f"/api/alerts?since={started}")["alerts"], 30)
        (met,) = api(worker, f"/api/alerts?since={started}")["alerts"]
        assert met["type"] == "met" and met["hotspot_id"] == "HS-A"
        assert api(worker, f"/api/alerts?since={met['ts']}")["alerts"] == []
        assert (
            get(worker, "/api/alerts?since=yesterday", {"Authorization": f"Bearer {TOKEN}"})[0]
            == 400
        )

        def streamed() -> bool:
            feed = stream.of("feed")
            return any(
                f["kind"] == "geofence" and f["event"]["unit_id"] == "U1" for f in feed
            ) and any(f["kind"] == "alert" and f["event"]["type"] == "met" for f in feed)

        assert wait_until(streamed, 15)
        assert wait_until(
            lambda: any(s["hotspots"][0]["state"] == "covered" for s in stream.of("state")), 15
        )
        assert all("geometry" not in h for s in stream.of("state") for h in s["hotspots"])
        events = api(worker, "/api/events?limit=10")["events"]
        assert [e["event"]["type"] for e in events if e["kind"] == "geofence"] == ["enter"]
        stream.stopped = True

        status, _, body = get(worker, "/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        assert samples[("hotspot_pings_total", (("outcome", "usable"),))] == 3
        assert samples[("hotspot_events_total", (("type", "enter"),))] == 1
        assert samples[("hotspot_alerts_total", (("type", "met"),))] == 1
        assert samples[("hotspot_hotspots", (("state", "covered"),))] == 1
        assert samples[("hotspot_units_present", ())] == 1
        assert samples[("hotspot_ping_to_event_seconds_count", ())] == 1
        # what `hotspot soak` reads: the worker's tasks, memory, descriptors and CPU
        assert samples[("hotspot_asyncio_tasks", ())] > 0
        for name in ("process_resident_memory_bytes", "process_open_fds"):
            assert samples[(name, ())] > 0
        assert ("process_cpu_seconds_total", ()) in samples
        assert "faust_messages_received" in families
        label_values = {v for f in families.values() for s in f.samples for v in s.labels.values()}
        assert not label_values & {"U1", "U2"}
    finally:
        assert worker.stop() == 0


def test_basic_auth_guards_the_page(broker: EmbeddedBroker, tmp_path: Path) -> None:
    worker = Worker(
        broker.url,
        clock="live",
        geofences=windowed_square(tmp_path),
        extra_env={"HOTSPOT_WEB_USER": "sergeant", "HOTSPOT_WEB_PASSWORD": "pw"},
    ).start()
    try:
        status, headers, _ = get(worker, "/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        good = base64.b64encode(b"sergeant:pw").decode()
        bad = base64.b64encode(b"sergeant:nope").decode()
        assert get(worker, "/", {"Authorization": f"Basic {good}"})[0] == 200
        assert get(worker, "/api/units", {"Authorization": f"Basic {bad}"})[0] == 401
        assert get(worker, "/metrics")[0] == 200
    finally:
        assert worker.stop() == 0


def test_any_worker_shows_the_whole_picture(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Two workers split the partitions; each answers for every unit and hot spot."""
    geofences = windowed_square(tmp_path)
    first = Worker(broker.url, clock="live", geofences=geofences).start()
    second = Worker(broker.url, app_id=first.app_id, clock="live", geofences=geofences)
    try:
        second.start()
        units = [f"W{n:02d}" for n in range(40)]
        produce(
            broker.bootstrap,
            "pings",
            ping_messages(
                [
                    now_ping(u, 5, 75.0 if n % 2 else SIDE_M + 300, "police")
                    for n, u in enumerate(units)
                ]
            ),
        )

        def split_and_whole() -> bool:
            own = [{u["unit_id"] for u in w.units()} for w in (first, second)]
            whole = [{u["unit_id"] for u in w.units_view()} for w in (first, second)]
            return (
                all(own)
                and own[0].isdisjoint(own[1])
                and own[0] | own[1] == set(units)
                and all(w == set(units) for w in whole)
            )

        assert wait_until(split_and_whole, 60)
        for worker in (first, second):

            def hotspots(w: Worker = worker) -> list[tuple[str, str]]:
                view = api_plain(w, "/api/hotspots")
                assert view["unreachable"] == []
                return [(h["id"], h["state"]) for h in view["hotspots"]]

            assert wait_until(lambda: hotspots() == [("HS-A", "covered")], 30), hotspots()
    finally:
        second.stop()
        first.stop()


def api_plain(worker: Worker, path: str) -> Any:
    status, _, body = get(worker, path)
    assert status == 200, body
    return orjson.loads(body)
