"""The dispatch desk, the positions feed's records, the presence stage's positions, and the
suggestions as the control room and the webhooks take them (no broker: the pipeline test runs
them on one)."""

from __future__ import annotations

from datetime import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import shapely
from aiokafka.structs import TopicPartition

from geofences.coverage import Alert, CoverageSettings, HotspotCoverage, window_alert_id
from geofences.dispatch import DispatchSettings
from geofences.hotspots import HotSpot, HotSpotCollection, Window
from geofences.index import HotSpotIndex
from geofences.positions import Fix
from geofences.presence import PresenceSettings
from geofences.projection import metres_per_degree
from geofences.timefmt import format_ms
from stream.alerts.webhooks import WebhookDispatcher, WebhookEndpoint
from stream.control_room.feed import Feed
from stream.kafka import PLAINTEXT
from stream.records import Record
from stream.worker.dispatch_stage import DispatchDesk
from stream.worker.positions_feed import take_record
from stream.worker.presence_stage import PresenceStage

LON0, LAT0 = -1.134, 52.636
M_LON, M_LAT = metres_per_degree(LAT0)
DAY = 1_795_132_800_000  # 2026-11-20T00:00:00Z
#: a police window of 4 h from 18:00 UTC owing 230 min: at risk from its start
WINDOW = Window(frozenset(range(7)), time(18, 0), time(22, 0), 230.0, 0.0, frozenset({"police"}))
START = DAY + 18 * 3_600_000
TIMEOUT_MS = 300_000


def at(east_m: float, north_m: float) -> tuple[float, float]:
    return LON0 + east_m / M_LON, LAT0 + north_m / M_LAT


def square(west_m: float) -> Any:
    (w, s), (e, n) = at(west_m, 0), at(west_m + 100, 100)
    return shapely.box(w, s, e, n)


COLLECTION = HotSpotCollection(
    (
        HotSpot("HS-T", "Target", square(0), (WINDOW,)),
        HotSpot("HS-O", "Other", square(-300), (WINDOW,)),
    ),
    "UTC",
)


def ledger(hotspot_id: str, now_ms: int) -> HotspotCoverage:
    coverage = HotspotCoverage(hotspot_id, (WINDOW,), "UTC", CoverageSettings())
    coverage.advance(now_ms)
    return coverage


def fix(unit: str, east_m: float, ts_ms: int, unit_type: str = "police", inside=()) -> Fix:
    lon, lat = at(east_m, 50)
    return Fix(unit, unit_type, lon, lat, ts_ms, tuple(inside))


def desk(refresh_s: float = 60.0) -> DispatchDesk:
    made = DispatchDesk(COLLECTION, DispatchSettings(refresh_s=refresh_s), TIMEOUT_MS)
    made.caught_up = True  # as the positions feed sets it once it has read to the end
    return made


def units_of(message: tuple[bytes | None, bytes]) -> list[tuple[str, bool]]:
    return [(u["unit_id"], u["busy"]) for u in orjson.loads(message[1])["units"]]


def test_an_at_risk_alert_gets_a_suggestion_at_once_keyed_by_its_hot_spot() -> None:
    now = START + 60_000
    ledgers = {"HS-T": ledger("HS-T", now)}
    alerts = ledgers["HS-T"].advance(now) or [
        Alert("a1", "at_risk", "HS-T", now, START, START + 4 * 3_600_000, 230.0, 0)
    ]
    d = desk()
    d.view.put(fix("P-1", 400, now - 5_000))
    messages = d.on_alerts(alerts, ledgers, now)
    assert len(messages) == 1
    key, value = messages[0]
    body = orjson.loads(value)
    assert key == b"HS-T"
    assert body["alert_id"] == alerts[0].alert_id
    assert body["ts"] == format_ms(now)
    assert [(u["unit_id"], u["fix_age_s"]) for u in body["units"]] == [("P-1", 5.0)]


def test_review_refreshes_only_a_changed_ranking_and_at_most_once_a_refresh() -> None:
    now = START + 60_000
    ledgers = {"HS-T": ledger("HS-T", now), "HS-O": ledger("HS-O", now)}
    d = desk(refresh_s=60)
    d.view.put(fix("P-1", 400, now))
    # no watch yet (as after a restart): a suggestion at once, and the short windows
    suggestions, shorts = d.review(ledgers, now)
    assert [units_of(m) for m in suggestions] == [[("P-1", False)]] * 2  # both at risk
    assert {orjson.loads(v)["short_until"] for _, v in shorts} == {START + 4 * 3_600_000}
    # a nearer unit arrives: not before the refresh interval
    d.view.put(fix("P-2", 150, now + 1_000))
    assert d.review(ledgers, now + 30_000) == ([], [])
    suggestions, _ = d.review(ledgers, now + 60_000)
    assert [units_of(m) for m in suggestions if m[0] == b"HS-T"] == [
        [("P-2", False), ("P-1", False)]
    ]
    # the same ranking a minute later: nothing new
    assert d.review(ledgers, now + 125_000)[0] == []


def test_a_unit_inside_a_hot_spot_still_short_is_busy_and_ranked_after_a_free_one() -> None:
    now = START + 60_000
    d = desk()
    d.view.put(fix("P-busy", -250, now, inside=("HS-O",)))  # 250 m from HS-T, inside HS-O
    d.view.put(fix("P-free", 600, now))  # 500 m
    take_record(d, "short", b"HS-O", orjson.dumps({"short_until": now + 60_000}))
    ledgers = {"HS-T": ledger("HS-T", now)}
    suggestions, _ = d.review(ledgers, now)
    assert units_of(suggestions[0]) == [("P-free", False), ("P-busy", True)]
    take_record(d, "short", b"HS-O", orjson.dumps({"short_until": None}))
    assert d.short_until == {}


def test_a_watch_ends_when_the_hot_spot_is_met_or_no_longer_owned() -> None:
    now = START + 60_000
    d = desk(refresh_s=1)
    ledgers = {"HS-T": ledger("HS-T", now)}
    d.review(ledgers, now)
    assert set(d.watches) == {"HS-T"}
    met = Alert("m1", "met", "HS-T", now + 1, START, START + 4 * 3_600_000, 230.0, 230 * 60_000)
    d.on_alerts([met], ledgers, now + 1)
    assert d.watches == {}
    d.review(ledgers, now + 2_000)  # still at risk by its ledger: watched again
    assert set(d.watches) == {"HS-T"}
    assert d.review({}, now + 4_000) == ([], [])  # handed over
    assert d.watches == {}


def test_the_positions_feed_keeps_the_newest_fix_and_skips_bad_records() -> None:
    d = desk()
    take_record(d, "position", b"P-1", orjson.dumps(fix("P-1", 10, 2_000).to_json_dict()))
    take_record(d, "position", b"P-1", orjson.dumps(fix("P-1", 99, 1_000).to_json_dict()))
    assert d.view.fixes["P-1"].ts_ms == 2_000
    take_record(d, "position", b"P-2", b"not json")
    take_record(d, "position", b"P-2", orjson.dumps({"unit_id": "P-2"}))
    take_record(d, "position", None, orjson.dumps(fix("P-3", 0, 1).to_json_dict()))
    assert set(d.view.fixes) == {"P-1"}
    take_record(d, "position", b"P-1", None)  # a tombstone
    assert len(d.view) == 0


def test_the_presence_stage_publishes_a_fix_every_30_s_or_50_m() -> None:
    stage = PresenceStage(HotSpotIndex(COLLECTION.hotspots), PresenceSettings(), "pings")

    def ping(offset: int, east_m: float, ts_ms: int) -> Record:
        lon, lat = at(east_m, 50)
        value = {"unit_id": "P-1", "ts": format_ms(ts_ms), "lon": lon, "lat": lat}
        return Record("pings", 0, offset, b"P-1", orjson.dumps(value), None)

    published = []
    for offset, (east, ts) in enumerate(
        [(400, 0), (420, 10_000), (440, 20_000), (445, 30_000), (500, 40_000), (50, 45_000)]
    ):
        out = stage.process([ping(offset, east, START + ts)], lambda key: None)
        published += [orjson.loads(v) for _, v in out.positions]
    assert [(p["ts"] - START, p["inside"]) for p in published] == [
        (0, []),
        (30_000, []),  # 30 s after the first
        (40_000, []),  # 55 m from the last published
        (45_000, ["HS-T"]),  # moved into a hot spot
    ]


def test_the_feed_keeps_each_hot_spots_latest_suggestion_out_of_the_events() -> None:
    feed = Feed()
    early = {"hotspot_id": "HS-T", "ts": "2026-11-20T18:01:00.000Z", "units": []}
    late = {"hotspot_id": "HS-T", "ts": "2026-11-20T18:02:00.000Z", "units": [{"unit_id": "x"}]}
    feed.add("dispatch", late)
    feed.add("dispatch", early)  # read out of order: the later one stays
    assert feed.suggestion("HS-T") == late
    assert feed.events(10) == []


#: a DispatchSuggestion as the worker writes it
SUGGESTION = {
    "alert_id": "a-1",
    "hotspot_id": "HS-T",
    "ts": "2026-11-20T18:01:00.000Z",
    "units": [
        {
            "unit_id": "police-04",
            "unit_type": "police",
            "distance_m": 420.0,
            "eta_minutes": 5.0,
            "fix_age_s": 3.0,
            "busy": False,
        }
    ],
    "suggestion_id": "s-1",
}


#: a signed JSON endpoint and a chat tool's text one
ENDPOINTS = [
    WebhookEndpoint("https://ops.example/hooks", "s3cret"),
    WebhookEndpoint("https://chat.example/hooks", None, "text"),
]


def dispatcher_of(endpoints: list[WebhookEndpoint]) -> WebhookDispatcher:
    """A dispatcher of alerts and suggestions, never started (nothing connects)."""
    return WebhookDispatcher(
        "localhost:9092",
        "coverage-alerts",
        "g",
        endpoints,
        {"HS-T": "Target"},
        "UTC",
        security=PLAINTEXT,
        suggestions_topic="dispatch-suggestions",
    )


def test_a_suggestion_is_its_own_webhook_delivery_json_and_text() -> None:
    dispatcher = dispatcher_of(ENDPOINTS)
    raw = orjson.dumps(SUGGESTION)
    prepared = dispatcher._bodies(raw, "dispatch-suggestions")
    assert prepared is not None
    msg_id, (json_body, text_body) = prepared
    assert msg_id == "s-1"
    assert json_body == raw
    assert text_body is not None
    assert orjson.loads(text_body) == {
        "text": "HS-T Target: at risk — nearest: police-04, 420 m (~5 min)"
    }
    assert dispatcher._bodies(b'{"alert_id": "a-1"}', "dispatch-suggestions") is None


def test_an_at_risk_alert_polled_with_its_suggestion_takes_its_words_in_text() -> None:
    dispatcher = dispatcher_of(ENDPOINTS)
    polled = SimpleNamespace(topic="dispatch-suggestions", value=orjson.dumps(SUGGESTION))
    garbled = SimpleNamespace(topic="dispatch-suggestions", value=b"{")
    batch = {TopicPartition("dispatch-suggestions", 0): [garbled, polled]}
    nearest = dispatcher._nearest_in(batch)
    assert nearest == {"a-1": ("s-1", "nearest: police-04, 420 m (~5 min)")}
    alert = {
        "alert_id": "a-1",
        "type": "at_risk",
        "hotspot_id": "HS-T",
        "window_start": "2026-11-20T17:00:00.000Z",
        "window_end": "2026-11-20T19:00:00.000Z",
        "required_minutes": 40,
        "covered_minutes": 12.0,
        "ts": "2026-11-20T18:01:00.000Z",
    }
    raw = orjson.dumps(alert)
    prepared = dispatcher._bodies(raw, "coverage-alerts", nearest["a-1"][1])
    assert prepared is not None
    _, (json_body, text_body) = prepared
    assert json_body == raw  # the JSON endpoint gets the alert as it is
    assert text_body is not None
    line = orjson.loads(text_body)["text"]
    assert line.startswith("HS-T Target: at risk — ")
    assert line.endswith(" — nearest: police-04, 420 m (~5 min)")
    # without a text endpoint nothing is paired
    assert dispatcher_of(ENDPOINTS[:1])._nearest_in(batch) == {}


def test_dispatch_can_be_turned_off_and_its_settings_are_checked() -> None:
    from stream.worker.settings import SettingError, worker_settings

    settings = worker_settings({}, {})
    assert settings.dispatch_enabled and settings.dispatch == DispatchSettings()
    off = worker_settings({}, {"HOTSPOT_DISPATCH": "off", "HOTSPOT_WALKING_SPEED_MPS": "1.2"})
    assert not off.dispatch_enabled and off.dispatch.walking_speed_mps == 1.2
    for env, name in (
        ({"HOTSPOT_DISPATCH": "maybe"}, "HOTSPOT_DISPATCH"),
        ({"HOTSPOT_WALKING_SPEED_MPS": "0"}, "HOTSPOT_WALKING_SPEED_MPS"),
        ({"HOTSPOT_DISPATCH_REFRESH_S": "-1"}, "HOTSPOT_DISPATCH_REFRESH_S"),
        ({"HOTSPOT_TOPIC_DISPATCH_SUGGESTIONS": ""}, "HOTSPOT_TOPIC_DISPATCH_SUGGESTIONS"),
    ):
        with pytest.raises(SettingError, match=name):
            worker_settings({}, env)
    stage = PresenceStage(
        HotSpotIndex(COLLECTION.hotspots), PresenceSettings(), "pings", publish_rule=None
    )
    lon, lat = at(10, 10)
    value = {"unit_id": "P-1", "ts": format_ms(START), "lon": lon, "lat": lat}
    out = stage.process([Record("pings", 0, 0, b"P-1", orjson.dumps(value), None)], dict().get)
    assert out.positions == []


def test_the_demo_prints_a_line_per_suggestion(tmp_path: Any) -> None:
    import argparse

    from stream.tools.demo import Demo

    demo = Demo(argparse.Namespace(), COLLECTION, None, tmp_path)  # type: ignore[arg-type]
    line = demo.describe("dispatch-suggestions", orjson.dumps(SUGGESTION))
    assert line.startswith("18:01:00  SEND   nearest: police-04, 420 m (~5 min)")
    assert line.endswith("HS-T Target")


def test_no_suggestion_before_the_view_has_read_the_positions_topic_to_its_end() -> None:
    now = START + 60_000
    d = DispatchDesk(COLLECTION, DispatchSettings(), TIMEOUT_MS)
    ledgers = {"HS-T": ledger("HS-T", now)}
    at_risk = Alert("a1", "at_risk", "HS-T", now, START, START + 4 * 3_600_000, 230.0, 0)
    assert d.on_alerts([at_risk], ledgers, now) == []
    suggestions, shorts = d.review(ledgers, now)
    assert suggestions == [] and len(shorts) == 1  # short windows go out regardless
    d.caught_up = True
    suggestions, _ = d.review(ledgers, now + 1_000)  # at once, for the alert that fired
    assert [orjson.loads(v)["alert_id"] for _, v in suggestions] == [
        window_alert_id("at_risk", ledgers["HS-T"].instances()[0].key)
    ]
