"""Dispatch suggestions on the embedded broker with two workers: a unit whose pings one worker
owns is suggested for a hot spot the other owns; the suggestion reaches its topic, the control
room's API and a webhook receiver (signed JSON, and the text line)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from geofences.projection import metres_per_degree
from geofences.timefmt import format_ms
from stream.alerts.webhooks import verify
from stream.broker.embedded import EmbeddedBroker
from stream.kafka import key_partition
from tests.stream.alerts.test_webhooks import Receiver
from tests.stream.harness import Worker, consume, ping_messages, produce, values, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 8
LON0, LAT0 = -1.1340, 52.6360
M_LON, M_LAT = metres_per_degree(LAT0)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TARGET, OTHER = "HS-T", "HS-O"


def square(west_m: float, south_m: float, side_m: float = 100.0) -> list[list[float]]:
    west, east = LON0 + west_m / M_LON, LON0 + (west_m + side_m) / M_LON
    south, north = LAT0 + south_m / M_LAT, LAT0 + (south_m + side_m) / M_LAT
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def at(east_m: float, north_m: float) -> tuple[float, float]:
    return LON0 + east_m / M_LON, LAT0 + north_m / M_LAT


def hotspot_file(tmp_path: Path) -> Path:
    """Two hot spots with a police window open now (UTC) that is at risk from its start: 230
    of its 240 minutes owed. HS-T spans 0..100 m east; HS-O 0..100 m west of -300 m."""
    now = time.gmtime()
    start = f"{(now.tm_hour - 1) % 24:02d}:00"
    end = f"{(now.tm_hour + 3) % 24:02d}:00"
    window = {"start": start, "end": end, "required_minutes": 230, "unit_types": ["police"]}
    features = [
        {
            "type": "Feature",
            "properties": {"id": hotspot_id, "name": name, "windows": [window]},
            "geometry": {"type": "Polygon", "coordinates": [square(west_m, 0.0)]},
        }
        for hotspot_id, name, west_m in ((TARGET, "Target", 0.0), (OTHER, "Other", -300.0))
    ]
    path = tmp_path / "dispatch.geojson"
    path.write_bytes(
        orjson.dumps({"type": "FeatureCollection", "timezone": "UTC", "features": features})
    )
    return path


def split(a: Worker, b: Worker) -> tuple[set[int], set[int]] | None:
    ours, theirs = a.restored_partitions(), b.restored_partitions()
    if not ours or not theirs:
        return None
    mine, other = ours[-1], theirs[-1]
    if mine and other and not mine & other and mine | other == set(range(PARTITIONS)):
        return mine, other
    return None


def unit_in(partitions: set[int], prefix: str) -> str:
    """A unit id whose pings go to one of ``partitions``."""
    return next(
        f"{prefix}-{i}"
        for i in range(1000)
        if key_partition(f"{prefix}-{i}".encode(), PARTITIONS) in partitions
    )


def hotspots(worker: Worker) -> dict[str, dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{worker.web}/api/hotspots", timeout=5) as response:
        return {h["id"]: h for h in orjson.loads(response.read())["hotspots"]}


@dataclass
class Loop:
    """An event loop on a thread of its own, running the webhook receiver."""

    loop: asyncio.AbstractEventLoop

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = Loop(loop)
    hook = Receiver()
    runner.run(hook.__aenter__())
    try:
        yield hook
    finally:
        runner.run(hook.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_a_unit_of_one_worker_is_suggested_for_a_hot_spot_of_the_other(
    broker: EmbeddedBroker, tmp_path: Path, receiver: Receiver
) -> None:
    geofences = hotspot_file(tmp_path)
    env = {
        "HOTSPOT_DISPATCH_REFRESH_S": "1",
        "HOTSPOT_WEBHOOKS": f"{receiver.url('/json')}|{SECRET},{receiver.url('/text')}||text",
    }
    a = Worker(
        broker.url, geofences=geofences, data_dir=tmp_path / "a", clock="live", extra_env=env
    ).start()
    b = Worker(
        broker.url,
        app_id=a.app_id,
        geofences=geofences,
        data_dir=tmp_path / "b",
        clock="live",
        extra_env=env,
    )
    try:
        b.start()
        assert wait_until(lambda: split(a, b) is not None), (
            a.restored_partitions(),
            b.restored_partitions(),
        )
        parts = split(a, b)
        assert parts is not None
        a_parts, b_parts = parts
        target_part = key_partition(TARGET.encode(), PARTITIONS)
        other_parts = b_parts if target_part in a_parts else a_parts
        # the free police unit is owned by the worker that does not own HS-T
        free = unit_in(other_parts, "police")
        busy = unit_in(set(range(PARTITIONS)), "busy")  # inside HS-O, whose window is short
        pcso = unit_in(set(range(PARTITIONS)), "pcso")  # nearest, but of the wrong type

        def pings() -> list[dict[str, Any]]:
            now = format_ms(int(time.time() * 1000))
            where = {free: at(400, 50), busy: at(-250, 50), pcso: at(120, 50)}
            kinds = {free: "police", busy: "police", pcso: "pcso"}
            return [
                {"unit_id": u, "ts": now, "lon": lon, "lat": lat, "unit_type": kinds[u]}
                for u, (lon, lat) in where.items()
            ]

        want = [(free, False), (busy, True)]

        def suggested(s: dict[str, Any]) -> list[tuple[str, bool]]:
            return [(u["unit_id"], u["busy"]) for u in s["units"]]

        found: list[dict[str, Any]] = []

        def the_suggestion() -> bool:
            produce(broker.bootstrap, "pings", ping_messages(pings()))
            records = consume(broker.bootstrap, "dispatch-suggestions", 1000, 2, settle_s=0.5)
            found[:] = [s for s in values(records) if s["hotspot_id"] == TARGET]
            return any(suggested(s) == want for s in found)

        assert wait_until(the_suggestion, 90, interval_s=1.0), found
        suggestion = next(s for s in found if suggested(s) == want)
        alerts = values(consume(broker.bootstrap, "coverage-alerts", 1000, 2, settle_s=0.5))
        at_risk = [x for x in alerts if x["hotspot_id"] == TARGET and x["type"] == "at_risk"]
        assert {x["alert_id"] for x in at_risk} == {suggestion["alert_id"]}
        first = suggestion["units"][0]
        assert first["distance_m"] == pytest.approx(300, abs=1)
        assert first["eta_minutes"] == pytest.approx(300 / 1.4 / 60, abs=0.1)
        assert suggestion["units"][1]["distance_m"] == pytest.approx(250, abs=1)

        # the API of either worker carries the latest suggestion
        def api_has_it() -> bool:
            got = [hotspots(w)[TARGET] for w in (a, b)]
            return all(
                h["state"] == "at_risk"
                and h["suggestion"] is not None
                and suggested(h["suggestion"]) == want
                for h in got
            )

        assert wait_until(api_has_it, 30), [hotspots(w)[TARGET] for w in (a, b)]
        assert hotspots(a)[OTHER]["suggestion"] is None  # covered: no suggestion

        # the webhooks: the suggestion as its own signed JSON delivery, and a text line
        def delivered() -> bool:
            ids = {h.msg_id for h in receiver.accepted("/json")}
            return suggestion["suggestion_id"] in ids and any(
                f"nearest: {free}, 300 m (~4 min)" in orjson.loads(h.body)["text"]
                for h in receiver.accepted("/text")
            )

        assert wait_until(delivered, 30), [(h.path, h.body) for h in receiver.hits]
        hit = next(h for h in receiver.accepted("/json") if h.msg_id == suggestion["suggestion_id"])
        assert verify(SECRET, hit.headers, hit.body, now=time.time())
        assert orjson.loads(hit.body) == suggestion
        # one line carries the words: the alert's, when its suggestion came in the same poll,
        # else the suggestion's own
        text = [orjson.loads(h.body)["text"] for h in receiver.accepted("/text")]
        words = [t for t in text if t.endswith(f"nearest: {free}, 300 m (~4 min)")]
        assert len(words) == 1 and words[0].startswith(f"{TARGET} Target: at risk — "), text
    finally:
        b.kill()
        assert a.stop() == 0
