"""The control-room page in a real browser (headless Debian Chromium) against a real worker.

The browser may reach nothing but the worker on loopback: the page, Leaflet and the data must all
come from the worker, and a configured tile server that cannot be reached must not matter. Then
pings put two units into a hot spot, and its board row and its polygon on the map must turn to
``covered``; the worker restarts and the page must say so and come back by itself. Screenshots
are kept in ``test-artifacts/`` (``control-room.png``, ``control-room-reconnecting.png``).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from geofences.timefmt import format_ms
from stream.broker.embedded import EmbeddedBroker
from tests.stream.harness import CHROMIUM, ROOT, Worker, ping_messages, produce

pytestmark = pytest.mark.integration

DEMO_FILE = ROOT / "geofences" / "data" / "leicester.geojson"
TILE_URL = "https://tiles.example.org/{z}/{x}/{y}.png"
COVERED_FILL = "#34d399"  # STATE_STYLE.covered in stream/control_room/static/app.js
WAIT_MS = 60_000  # generous: a worker on a busy CI machine; never a timing assertion

# Two points in HS-01 "Clock Tower" of the packaged demo file, and one (on the map, some 30 m
# from the nearest) outside every hot spot.
INSIDE_HS01 = {"T-POL": (52.63650, -1.13390), "T-OUT": (52.63672, -1.13350)}
OUTSIDE_ALL = (52.63500, -1.13150)


@dataclass
class Browsing:
    """What the page did besides what a test looks at."""

    blocked: list[str] = field(default_factory=list)  # requests beyond loopback, refused
    errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page
    failed: list[str] = field(default_factory=list)  # loopback responses with an HTTP error


@contextmanager
def offline_page(sync_api: Any, url: str) -> Iterator[tuple[Any, Browsing]]:
    """A 1920×1080 page in headless Chromium that may reach loopback only, opened at ``url``
    and ready (hot spots loaded, first state received). The browser's own time zone is New
    York: the page must show the hot spots' time, not the viewer's."""
    seen = Browsing()

    def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            seen.blocked.append(route.request.url)
            route.abort("internetdisconnected")

    def on_response(response: Any) -> None:
        if response.status >= 400:
            seen.failed.append(f"{response.status} {response.url}")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context(
                viewport={"width": 1920, "height": 1080}, timezone_id="America/New_York"
            )
            context.route("**/*", only_loopback)
            page = context.new_page()
            page.on("pageerror", lambda error: seen.errors.append(str(error)))
            page.on("response", on_response)
            page.goto(url, wait_until="load")
            try:
                page.wait_for_function(
                    "() => window.hotspotControlRoom && window.hotspotControlRoom.ready",
                    timeout=WAIT_MS,
                )
            except sync_api.TimeoutError:
                pytest.fail(f"the page did not get ready: {seen}")
            yield page, seen
        finally:
            browser.close()


def now_ts(offset_s: float = 0.0) -> str:
    return format_ms(round((time.time() + offset_s) * 1000))


def ping(
    unit_id: str, unit_type: str, where: tuple[float, float], offset_s: float
) -> dict[str, Any]:
    lat, lon = where
    return {
        "unit_id": unit_id,
        "unit_type": unit_type,
        "ts": now_ts(offset_s),
        "lat": lat,
        "lon": lon,
        "accuracy_m": 8,
    }


def send_pings(bootstrap: str, pings: Sequence[dict[str, Any]]) -> None:
    """Produce on another thread: Playwright's sync API keeps an event loop on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(produce, bootstrap, "pings", ping_messages(pings)).result()


def demo_hotspot_ids() -> list[str]:
    collection = orjson.loads(DEMO_FILE.read_bytes())
    return sorted(str(f["properties"]["id"]) for f in collection["features"])


def start_worker(broker: EmbeddedBroker, tmp_path: Path, **env: str) -> Worker:
    return Worker(
        broker.url,
        clock="live",
        data_dir=tmp_path / "data",
        extra_env={"HOTSPOT_TILE_URL": TILE_URL, "HOTSPOT_TILE_ATTRIBUTION": "test tiles", **env},
    ).start()


@pytest.fixture
def worker(sync_api: Any, broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Worker]:
    started = start_worker(broker, tmp_path)
    try:
        yield started
    finally:
        assert started.stop() == 0, started.log_tail()


def test_page_works_offline_and_shows_a_hot_spot_becoming_covered(
    sync_api: Any, broker: EmbeddedBroker, worker: Worker
) -> None:
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with offline_page(sync_api, f"http://127.0.0.1:{worker.web_port}/") as (page, seen):
        # Every hot spot of the file is on the board and on the map; none is covered yet.
        rows = page.locator("#board .row[data-hotspot-id]")
        assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.hotspotId)")) == (
            demo_hotspot_ids()
        )
        for hotspot_id in demo_hotspot_ids():
            assert page.locator(f"path.hs-poly.hs-{hotspot_id}").count() == 1
        row = page.locator('#board .row[data-hotspot-id="HS-01"]')
        polygon = page.locator("path.hs-poly.hs-HS-01")
        before_state = row.get_attribute("data-state")
        before_fill = polygon.get_attribute("fill")
        assert before_state != "covered"
        assert f"state-{before_state}" in (polygon.get_attribute("class") or "")
        assert page.locator("#conn").inner_text().strip().endswith("Live")
        # Times are the hot spots' (Europe/London), not the browser's (New York).
        assert page.locator("#tz").inner_text() in ("GMT", "BST")

        # A unit outside every hot spot appears on the map, with its type.
        send_pings(broker.bootstrap, [ping("T-PCSO", "pcso", OUTSIDE_ALL, 0)])
        marker = page.locator('.unit-marker[data-unit-id="T-PCSO"]')
        marker.wait_for(state="visible", timeout=WAIT_MS)
        assert "PCSO" in marker.inner_text()
        assert row.get_attribute("data-state") != "covered"

        # Two units of both services walk into HS-01 (whichever window is open now, one of
        # them is eligible for it): its row and its polygon turn to covered.
        inside = [
            ping(unit, unit_type, INSIDE_HS01[unit], offset)
            for offset in (-1.0, 0.0)
            for unit, unit_type in (("T-POL", "police"), ("T-OUT", "outreach"))
        ]
        send_pings(broker.bootstrap, inside)
        page.locator('#board .row[data-hotspot-id="HS-01"][data-state="covered"]').wait_for(
            timeout=WAIT_MS
        )
        page.locator("path.hs-poly.hs-HS-01.state-covered").wait_for(timeout=WAIT_MS)
        assert polygon.get_attribute("fill") == COVERED_FILL != before_fill
        assert "COVERED" in row.locator(".badge").inner_text()
        present = row.locator(".row-present").inner_text()
        assert "T-POL" in present and "T-OUT" in present
        page.locator(".feed-item.type-enter", has_text="T-OUT").first.wait_for(timeout=WAIT_MS)
        page.locator('.unit-marker[data-unit-id="T-OUT"]').wait_for(timeout=WAIT_MS)

        page.screenshot(path=str(artifacts / "control-room.png"), full_page=True)

        # The worker restarts: the page says it is reconnecting, then comes back by itself.
        assert worker.stop() == 0, worker.log_tail()
        page.locator("body.disconnected #banner", has_text="reconnecting").wait_for(timeout=WAIT_MS)
        page.screenshot(path=str(artifacts / "control-room-reconnecting.png"), full_page=True)
        worker.start()
        page.wait_for_function(
            "() => window.hotspotControlRoom.connected && !document.body.classList.contains("
            "'disconnected')",
            timeout=WAIT_MS,
        )
        assert page.locator("#conn").inner_text().strip().endswith("Live")
        assert page.locator("#banner").is_hidden()
        row.and_(page.locator('[data-state="covered"]')).wait_for(timeout=WAIT_MS)

    assert seen.errors == []
    assert seen.failed == []
    # Nothing but the (unreachable) tile server was asked for beyond the worker itself.
    assert {urlsplit(url).hostname for url in seen.blocked} <= {"tiles.example.org"}


def test_with_a_token_the_page_passes_it_on_every_request(
    sync_api: Any, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    token = "control-room-token"
    worker = start_worker(broker, tmp_path, HOTSPOT_WEB_TOKEN=token)
    try:
        base = f"http://127.0.0.1:{worker.web_port}"
        with urllib.request.urlopen(f"{base}/api/hotspots?token={token}") as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/hotspots")
        assert refused.value.code == 401
        refused.value.close()
        # The browser is given the token only in the page's URL: the page's own requests for
        # the API and the event stream must carry it on.
        with offline_page(sync_api, f"{base}/?token={token}") as (page, seen):
            rows = page.locator("#board .row[data-hotspot-id]")
            assert rows.count() == len(demo_hotspot_ids())
            page.wait_for_function(
                "() => window.hotspotControlRoom.connected && window.hotspotControlRoom.stateCount > 1",
                timeout=WAIT_MS,
            )
    finally:
        assert worker.stop() == 0, worker.log_tail()

    assert seen.errors == []
    assert seen.failed == []
