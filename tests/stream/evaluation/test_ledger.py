"""``hotspot ledger`` against the embedded broker: known dwell events, duplicates included,
produced to ``dwell-events``; the file holds each visit of the dates once, exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from stream.broker.embedded import EmbeddedBroker
from stream.cli import main
from stream.kafka import PLAINTEXT, ensure_topic
from tests.stream.harness import produce

pytestmark = pytest.mark.integration


def _event(event_id: str, hotspot: str, unit: str, enter: str, exit_: str) -> dict[str, object]:
    return {
        "event_id": event_id, "unit_id": unit, "unit_type": "police", "hotspot_id": hotspot,
        "enter_ts": enter, "exit_ts": exit_, "duration_s": 0.0, "exit_reason": "left",
    }  # fmt: skip


EVENTS = [
    # 23:50 BST on the 23rd to 00:10 BST on the 24th: overlaps the 24th
    _event("e1", "HS-01", "P1", "2026-10-23T22:50:00.000Z", "2026-10-23T23:10:00.000Z"),
    _event("e2", "HS-02", "P2", "2026-10-24T13:00:00.000Z", "2026-10-24T13:15:30.500Z"),
    _event("e3", "HS-01", "P3", "2026-10-25T12:00:00.000Z", "2026-10-25T12:45:00.000Z"),
    # before the dates (ends at midnight BST on the 24th) and after them
    _event("e4", "HS-01", "P1", "2026-10-23T20:00:00.000Z", "2026-10-23T23:00:00.000Z"),
    _event("e5", "HS-01", "P1", "2026-10-26T00:00:00.000Z", "2026-10-26T00:10:00.000Z"),
]


def test_the_ledger_holds_each_visit_of_the_dates_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    url = f"kafka://{broker.bootstrap}"
    asyncio.run(ensure_topic(url, "dwell-events", 3, security=PLAINTEXT))
    duplicated = [*EVENTS, EVENTS[1], EVENTS[2], EVENTS[1]]
    produce(
        broker.bootstrap,
        "dwell-events",
        [(e["hotspot_id"].encode(), orjson.dumps(e)) for e in duplicated],
    )  # type: ignore[union-attr]
    out = tmp_path / "ledger.csv"
    argv = ["ledger", "--broker", url, "--from", "2026-10-24", "--to", "2026-10-25", "--out"]
    assert main([*argv, str(out), "--no-progress"]) == 0
    assert out.read_text().splitlines() == [
        "event_id,hotspot_id,unit_id,unit_type,enter_ts,exit_ts,minutes,exit_reason",
        "e1,HS-01,P1,police,2026-10-23T22:50:00.000Z,2026-10-23T23:10:00.000Z,20.0,left",
        "e2,HS-02,P2,police,2026-10-24T13:00:00.000Z,2026-10-24T13:15:30.500Z,15.5083,left",
        "e3,HS-01,P3,police,2026-10-25T12:00:00.000Z,2026-10-25T12:45:00.000Z,45.0,left",
    ]
    jsonl = tmp_path / "ledger.jsonl"
    assert main([*argv, str(jsonl), "--no-progress"]) == 0
    rows = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    assert [r["event_id"] for r in rows] == ["e1", "e2", "e3"]
    assert rows[1]["minutes"] == 15.5083
