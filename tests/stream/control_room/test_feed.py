"""The control room's feed: recent events in order, alerts since a time, live subscribers."""

from __future__ import annotations

import pytest

from stream.control_room.feed import Feed
from stream.control_room.server import parse_since


def alert(ts: str, kind: str = "met") -> dict[str, str]:
    return {"type": kind, "hotspot_id": "HS-01", "ts": ts}


def test_events_are_the_latest_oldest_first() -> None:
    feed = Feed(max_events=3)
    for n in range(5):
        feed.add("geofence", {"n": n})
    assert [i["event"]["n"] for i in feed.events(10)] == [2, 3, 4]
    assert [i["event"]["n"] for i in feed.events(2)] == [3, 4]
    assert feed.events(0) == []


def test_alerts_since_a_time_in_decision_order() -> None:
    feed = Feed()
    feed.add("alert", alert("2026-11-22T14:05:00.000Z", "gap"))
    feed.add("alert", alert("2026-11-22T14:01:00.000Z"))
    feed.add("geofence", {"type": "enter"})
    since = parse_since("2026-11-22T14:00:00Z")
    assert [a["type"] for a in feed.alerts(since, 10)] == ["met", "gap"]
    assert [a["type"] for a in feed.alerts(parse_since("2026-11-22T14:01:00Z"), 10)] == ["gap"]
    assert [a["type"] for a in feed.alerts(None, 1)] == ["gap"]


def test_since_takes_rfc3339_or_epoch_seconds() -> None:
    assert parse_since("1795356000") == 1_795_356_000_000
    assert parse_since("2026-11-22T14:00:00+01:00") == parse_since("2026-11-22T13:00:00Z")
    assert parse_since(None) is None
    with pytest.raises(ValueError):
        parse_since("yesterday")


def test_subscribers_get_live_items_only() -> None:
    feed = Feed()
    queue = feed.subscribe()
    feed.add("geofence", {"n": 1}, live=False)
    feed.add("geofence", {"n": 2})
    assert queue.get_nowait()["event"] == {"n": 2}
    assert queue.empty()
    feed.unsubscribe(queue)
    feed.add("geofence", {"n": 3})
    assert queue.empty()
