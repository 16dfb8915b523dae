"""``report.html`` in headless Chromium: it opens from the file with no console error, asks for
nothing (every request but the file itself is refused and recorded), and its four charts are
drawn. A screenshot is kept in ``test-artifacts/report.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.cli import main
from tests.geofences.evaluation.small_case import COSTS, CRIMES, HARM_WEIGHTS, HOTSPOT_FILE, LEDGER
from tests.stream.harness import CHROMIUM, ROOT


def _write_inputs(folder: Path) -> list[str]:
    import orjson

    files = {
        "ledger.jsonl": LEDGER,
        "crimes.csv": CRIMES,
        "harm.csv": HARM_WEIGHTS,
        "costs.csv": COSTS,
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "hotspots.geojson").write_bytes(orjson.dumps(HOTSPOT_FILE))
    return [
        "report", "--ledger", str(folder / "ledger.jsonl"), "--hotspots",
        str(folder / "hotspots.geojson"), "--from", "2026-10-24", "--to", "2026-10-26",
        "--crimes", str(folder / "crimes.csv"), "--harm-weights", str(folder / "harm.csv"),
        "--costs", str(folder / "costs.csv"), "--out", str(folder / "report"),
    ]  # fmt: skip


def test_the_report_opens_offline_and_draws_its_charts(sync_api: Any, tmp_path: Path) -> None:
    assert main(_write_inputs(tmp_path)) == 0
    page_file = tmp_path / "report" / "report.html"
    for name in ("daily.csv", "summary.csv", "residual.csv", "dosage.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    url = page_file.as_uri()
    requested: list[str] = []
    console: list[str] = []

    def only_the_file(route: Any) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", only_the_file)
            page = context.new_page()
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: console.append(str(error)))
            page.goto(url, wait_until="load")
            charts = page.eval_on_selector_all(
                "figure.chart svg",
                "svgs => svgs.map(s => [s.querySelectorAll('path, use').length,"
                " s.getBoundingClientRect().width, s.getBoundingClientRect().height])",
            )
            headline = page.inner_text("p.lead")
            artifacts = ROOT / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        finally:
            browser.close()
    assert requested == []
    assert console == []
    assert len(charts) == 4
    for shapes, width, height in charts:
        assert shapes > 20 and width > 200 and height > 100
    assert "4 patrol days and 5 other days over 3 hot spots" in headline
