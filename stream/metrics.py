"""Domain metrics for Prometheus. Labels never carry coordinates or unit ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

if TYPE_CHECKING:
    from geofences.coverage import Alert
    from stream.presence_stage import StageOutput

pings = Counter("hotspot_pings_total", "Pings by outcome", ["outcome"])
events = Counter("hotspot_events_total", "Geofence and dwell events by type", ["type"])
alerts = Counter("hotspot_alerts_total", "Coverage alerts by type", ["type"])
dead_letters = Counter("hotspot_dead_letters_total", "Dead-lettered values by reason", ["reason"])
batch_seconds = Histogram(
    "hotspot_batch_seconds",
    "Time to process one batch of pings",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def record(out: StageOutput) -> None:
    for outcome, count in out.outcomes.items():
        pings.labels(outcome).inc(count)
    for event in out.events:
        events.labels(getattr(event, "type", "dwell")).inc()
    for reason in out.dead_letter_reasons:
        dead_letters.labels(reason[:60]).inc()


async def metrics_view(web: Any, request: Any) -> Any:
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def record_alerts(decided: list[Alert]) -> None:
    for alert in decided:
        alerts.labels(str(alert.type)).inc()
