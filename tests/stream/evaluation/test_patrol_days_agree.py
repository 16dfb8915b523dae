"""The report's patrol days agree with the live alerts: a simulated Friday replayed to a worker
on event time gives ``met`` and ``gap`` alerts; the ledger read back from ``dwell-events``
and the report built from it find each windowed hot spot's day met exactly when the worker
said ``met`` (and no ``gap``) for every window instance of that day."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from geofences.timefmt import parse_rfc3339_ms
from stream.broker.embedded import EmbeddedBroker
from stream.cli import main
from stream.evaluation.report import build_report
from stream.tools.simulator import simulate_month
from tests.stream.harness import Worker, consume, ping_messages, produce, values, wait_until

pytestmark = pytest.mark.integration

DAY = "2026-10-16"  # a Friday: HS-05's window is on; with seed 2, two hot spots met, two missed


def _window_alerts(bootstrap: str) -> list[dict[str, object]]:
    alerts = values(consume(bootstrap, "coverage-alerts", 1_000_000, timeout_s=2, settle_s=0))
    return [a for a in alerts if a["type"] in ("met", "gap")]


def test_patrol_days_from_the_ledger_agree_with_the_live_alerts(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    month = simulate_month(days=1, seed=2, first=DAY)
    hotspots = tmp_path / "hotspots.geojson"
    hotspots.write_bytes(orjson.dumps(month.hotspot_file))
    windowed = 4  # HS-01, HS-02, HS-03 daily; HS-05 on Fridays; HS-04 has none
    worker = Worker(broker.url, clock="event", geofences=hotspots).start()
    try:
        produce(broker.bootstrap, "pings", ping_messages(month.pings))
        assert wait_until(lambda: len(_window_alerts(broker.bootstrap)) >= windowed, 180)
        alerts = _window_alerts(broker.bootstrap)
        ledger = tmp_path / "ledger.csv"
        argv = ["ledger", "--broker", broker.url, "--from", DAY, "--to", DAY, "--out"]
        assert main([*argv, str(ledger), "--no-progress"]) == 0
    finally:
        worker.stop()
    assert len(alerts) == windowed

    zone = ZoneInfo("Europe/London")
    live: dict[str, Counter[str]] = {}
    for alert in alerts:
        start = parse_rfc3339_ms(str(alert["window_start"]))
        assert datetime.fromtimestamp(start / 1000, tz=zone).date().isoformat() == DAY
        live.setdefault(str(alert["hotspot_id"]), Counter())[str(alert["type"])] += 1

    day = date.fromisoformat(DAY)
    report = build_report(ledger, hotspots, day, day)
    rows = {r.hotspot_id: r for r in report.result.rows}
    assert sorted(live) == ["HS-01", "HS-02", "HS-03", "HS-05"]
    for hotspot_id, counts in live.items():
        row = rows[hotspot_id]
        assert row.windows == counts["met"] + counts["gap"]
        assert row.windows_met == counts["met"]
        assert row.patrol_day == (counts["gap"] == 0)
    assert {h: r.patrol_day for h, r in rows.items()} == {
        h: month.patrol_days[(h, DAY)] for h in rows
    }
    assert {h: c["gap"] == 0 for h, c in live.items()} == {
        "HS-01": True, "HS-02": False, "HS-03": True, "HS-05": False,
    }  # fmt: skip
