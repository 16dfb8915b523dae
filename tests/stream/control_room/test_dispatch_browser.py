"""The control-room page shows who to send to a hot spot at risk, in headless Chromium against
a real worker: the card lists the suggested units, and the map draws a line from the hot spot
to each. A screenshot is kept in ``test-artifacts/control-room-dispatch.png``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geofences.timefmt import format_ms
from stream.broker.embedded import EmbeddedBroker
from tests.stream.control_room.test_control_room_browser import (
    WAIT_MS,
    offline_page,
    send_pings,
)
from tests.stream.harness import ROOT, Worker
from tests.stream.worker.test_dispatch_pipeline import TARGET, at, hotspot_file

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(sync_api: Any, broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Worker]:
    started = Worker(
        broker.url,
        clock="live",
        geofences=hotspot_file(tmp_path),
        data_dir=tmp_path / "data",
        extra_env={"HOTSPOT_DISPATCH_REFRESH_S": "1"},
    ).start()
    try:
        yield started
    finally:
        assert started.stop() == 0, started.log_tail()


def test_the_card_of_a_hot_spot_at_risk_lists_the_suggested_units_and_the_map_draws_lines(
    sync_api: Any, broker: EmbeddedBroker, worker: Worker
) -> None:
    with offline_page(sync_api, f"http://127.0.0.1:{worker.web_port}/") as (page, seen):
        row = page.locator(f'#board .row[data-hotspot-id="{TARGET}"][data-state="at_risk"]')
        row.wait_for(timeout=WAIT_MS)
        now = format_ms(int(time.time() * 1000))
        pings = []
        for unit, unit_type, east in (("P-1", "police", 400), ("C-1", "pcso", 150)):
            lon, lat = at(east, 50)
            pings.append(
                {"unit_id": unit, "unit_type": unit_type, "ts": now, "lat": lat, "lon": lon}
            )
        send_pings(broker.bootstrap, pings)

        chip = row.locator('.suggested-unit[data-unit-id="P-1"]')
        chip.wait_for(timeout=WAIT_MS)
        assert "300 m (~4 min)" in chip.inner_text()
        assert row.locator('.suggested-unit[data-unit-id="C-1"]').count() == 0  # not police
        # (attached: a line due east has no height, which Playwright counts as hidden)
        line = page.locator(f"path.suggestion-line.hs-{TARGET}")
        line.first.wait_for(state="attached", timeout=WAIT_MS)
        assert line.count() == 1, line.evaluate_all("ls => ls.map(l => l.outerHTML)")
        assert (line.get_attribute("d") or "").startswith("M")
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "control-room-dispatch.png"), full_page=True)
    assert seen.errors == []
    assert seen.failed == []
