"""The monitoring in deploy/: every metric the alert rules and the dashboard query is one a
worker exports, the dashboard is well formed, and the consumer lag gauge follows the
consumer's assignment."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from faust.types import TP
from prometheus_client import REGISTRY

from stream.broker.embedded import EmbeddedBroker
from stream.worker import metrics
from tests.stream.harness import Worker, ping_messages, produce, wait_until
from tests.stream.worker.test_presence_pipeline import scripted_day, square_file

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hotspot.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def metric_names(expression: str) -> set[str]:
    """The metric names in a PromQL expression: the worker's (``hotspot_``, ``faust_``) and
    Prometheus's own ``up``."""
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expression))
    return {t for t in tokens if t.startswith(("hotspot_", "faust_")) or t == "up"}


def exported_families(exposition: str) -> set[str]:
    """Every metric family of a Prometheus text page (``# TYPE`` lines: a labelled metric
    without samples yet still has one)."""
    return {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}


def is_exported(name: str, families: set[str]) -> bool:
    if name == "up" or name in families:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in families for s in HISTOGRAM_SUFFIXES)


def test_metric_names_are_found_in_expressions() -> None:
    expr = 'sum by (le) (rate(hotspot_x_bucket{outcome="a"}[$__rate_interval])) and up == 0'
    assert metric_names(expr) == {"hotspot_x_bucket", "up"}
    assert is_exported("hotspot_x_bucket", {"hotspot_x"})
    assert not is_exported("hotspot_y_total", {"hotspot_x"})


def test_the_dashboard_parses_and_every_panel_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert metric_names(target["expr"]), (panel["title"], target["expr"])


def test_every_alert_says_what_to_do() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 5
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


class FakeConsumer:
    def __init__(self, assigned: dict[TP, tuple[int | None, int | None]]) -> None:
        self.assigned = assigned

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def highwater(self, tp: TP) -> int | None:
        return self.assigned[tp][0]

    async def position(self, tp: TP) -> int | None:
        return self.assigned[tp][1]


def lag_samples() -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.consumer_lag.collect()
        for s in family.samples
    }


def test_the_lag_follows_the_assignment() -> None:
    consumer = FakeConsumer(
        {
            TP("pings", 0): (120, 100),
            TP("pings", 1): (None, 5),  # not fetched yet
            TP("geofence-events", 0): (9, 1),  # not a topic asked for
        }
    )
    asyncio.run(metrics.observe_lag(consumer, ["pings"]))
    assert lag_samples() == {("pings", "0"): 20}
    consumer.assigned = {TP("pings", 1): (7, 7)}  # partition 0 went to another worker
    asyncio.run(metrics.observe_lag(consumer, ["pings"]))
    assert lag_samples() == {("pings", "1"): 0}


def test_the_task_gauge_counts_the_loops_unfinished_tasks() -> None:
    async def count_with(extra: int) -> float:
        hold = asyncio.Event()
        tasks = [asyncio.create_task(hold.wait()) for _ in range(extra)]
        await asyncio.sleep(0)
        metrics.observe_tasks()
        hold.set()
        await asyncio.gather(*tasks)
        return float(REGISTRY.get_sample_value("hotspot_asyncio_tasks") or 0)

    assert asyncio.run(count_with(0)) == 1  # the coroutine asking
    assert asyncio.run(count_with(5)) == 6


def scrape(worker: Worker) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


@pytest.mark.integration
def test_every_monitored_metric_is_exported(broker: EmbeddedBroker, tmp_path: Path) -> None:
    worker = Worker(broker.url, clock="event", geofences=square_file(tmp_path)).start()
    try:
        produce(broker.bootstrap, "pings", ping_messages(scripted_day()))
        page: dict[str, Any] = {}

        def counted_with_lag() -> bool:
            page["text"] = text = scrape(worker)
            return (
                re.search(r'^hotspot_pings_total\{outcome="usable"\} [1-9]', text, re.M) is not None
                and re.search(r'^hotspot_consumer_lag\{.*topic="pings"', text, re.M) is not None
            )

        assert wait_until(counted_with_lag, 60)
        families = exported_families(page["text"])
        wanted = {n for e in alert_expressions() + dashboard_expressions() for n in metric_names(e)}
        assert {"hotspot_consumer_lag", "hotspot_webhook_deliveries_total"} <= wanted
        assert sorted(n for n in wanted if not is_exported(n, families)) == []
    finally:
        assert worker.stop() == 0
