"""Prometheus metrics: Faust's own sensor plus the domain's. Labels never carry coordinates or
unit ids: outcomes, event and alert types, hot spot states and dead-letter reasons only."""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from geofences.coverage import Alert
    from stream.worker.presence_stage import StageOutput

HOTSPOT_STATES = ("covered", "met", "at_risk", "gap", "pending", "idle")

pings = Counter("hotspot_pings_total", "Pings by outcome", ["outcome"])
events = Counter("hotspot_events_total", "Geofence and dwell events by type", ["type"])
alerts = Counter("hotspot_alerts_total", "Coverage alerts by type", ["type"])
dead_letters = Counter("hotspot_dead_letters_total", "Dead-lettered values by reason", ["reason"])
batch_seconds = Histogram(
    "hotspot_batch_seconds",
    "Time to process one batch of pings",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
ping_to_event_seconds = Histogram(
    "hotspot_ping_to_event_seconds",
    "From a ping's Kafka timestamp to the sending of the geofence event it caused",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
units_tracked = Gauge("hotspot_units_tracked", "Units whose state this worker holds")
units_present = Gauge(
    "hotspot_units_present", "Units of this worker present in at least one hot spot"
)
hotspots_by_state = Gauge(
    "hotspot_hotspots", "Hot spots whose coverage this worker owns, by state", ["state"]
)
suggestions = Counter(
    "hotspot_dispatch_suggestions_total", "Dispatch suggestions written for hot spots at risk"
)
positions_known = Gauge(
    "hotspot_positions_known", "Units whose last fix this worker's dispatch view holds"
)
asyncio_tasks = Gauge(
    "hotspot_asyncio_tasks", "Asyncio tasks not yet done in the worker's event loop"
)
consumer_lag = Gauge(
    "hotspot_consumer_lag",
    "Records between this worker's fetch position and the partition's high watermark",
    ["topic", "partition"],
)

#: how long a scrape waits for the consumer thread's positions before it leaves the lag out
LAG_TIMEOUT_S = 2.0

_faust_metrics: FaustMetrics | None = None


def faust_monitor() -> PrometheusMonitor:
    """Faust's Prometheus sensor, on the default registry (created once per process)."""
    global _faust_metrics
    if _faust_metrics is None:
        _faust_metrics = FaustMetrics.create(REGISTRY, "faust")
    return PrometheusMonitor(metrics=_faust_metrics)


def record(out: StageOutput, sent_ms: int | None = None) -> None:
    """Count a presence batch's outcomes, events and dead letters; ``sent_ms`` is when its
    events were sent (for the ping-to-event latency)."""
    for outcome, count in out.outcomes.items():
        pings.labels(outcome).inc(count)
    for kind, count in Tally(getattr(e, "type", "dwell") for e in out.events).items():
        events.labels(kind).inc(count)
    for reason, count in Tally(r[:60] for r in out.dead_letter_reasons).items():
        dead_letters.labels(reason).inc(count)
    if sent_ms is None:
        sent_ms = time.time_ns() // 1_000_000
    for event, ping_ms in zip(out.events, out.event_record_ts, strict=True):
        if ping_ms is not None and hasattr(event, "type"):
            ping_to_event_seconds.observe(max(0, sent_ms - ping_ms) / 1000)


def record_alerts(decided: list[Alert]) -> None:
    for alert in decided:
        alerts.labels(str(alert.type)).inc()


def record_suggestions(count: int) -> None:
    suggestions.inc(count)


def observe_gauges(tracked: int, present: int, hotspot_states: Iterable[str]) -> None:
    """Set the gauges: units held, units present somewhere, owned hot spots by state.

    Read from the stages at each scrape, not from the control room's per-unit listing, which
    builds a dict and strings per unit."""
    units_tracked.set(tracked)
    units_present.set(present)
    states = Tally(hotspot_states)
    for state in HOTSPOT_STATES:
        hotspots_by_state.labels(state).set(states.get(state, 0))


def observe_tasks() -> None:
    """Set :data:`asyncio_tasks` from the running loop; called at each scrape, from the loop
    (the count is cheap, and a soak watches it for tasks that pile up)."""
    asyncio_tasks.set(len(asyncio.all_tasks()))


async def observe_lag(consumer: Any, topics: Iterable[str]) -> None:
    """Set :data:`consumer_lag` for the partitions of ``topics`` assigned to this worker, from
    Faust's consumer (``highwater``: the end offset its last fetch saw; ``position``: the next
    offset it fetches). Faust's sensor exports neither. Partitions no longer assigned, or not
    fetched yet, drop out; if the consumer does not answer in time the lag is left out."""
    wanted = set(topics)
    try:
        assigned = sorted(tp for tp in consumer.assignment() if tp.topic in wanted)
        highwaters = {tp: consumer.highwater(tp) for tp in assigned}
        positions = await asyncio.wait_for(
            asyncio.gather(*(consumer.position(tp) for tp in assigned)), LAG_TIMEOUT_S
        )
    except Exception:  # not started, rebalancing, or busy: no figure beats a wrong one
        consumer_lag.clear()
        return
    consumer_lag.clear()
    for tp, position in zip(assigned, positions, strict=True):
        highwater = highwaters[tp]
        if highwater is not None and position is not None:
            consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))


def exposition(web: Any) -> Any:
    return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
