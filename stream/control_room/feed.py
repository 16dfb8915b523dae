"""The control room's feed: the latest enter/exit/dwell events, the recent coverage alerts, and
each hot spot's latest dispatch suggestion.

Every worker reads the output topics in full (all partitions, no consumer group), so whichever
worker the page asks shows the whole picture. Alerts are read from the beginning of the topic
(a few per window per hot spot per day) and the latest ``max_alerts`` kept for
``/api/alerts?since=``; dispatch suggestions from the latest 1,000 of each partition, the
latest per hot spot kept for ``/api/hotspots``; geofence and dwell events from near the end of each partition, for the
feed. Each item produced since the worker started is also handed to every subscribed event
stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from geofences.timefmt import parse_rfc3339_ms
from stream.kafka import KafkaSecurity
from stream.worker.topics import MAX_BATCH_BYTES
from stream.worker.whole_topics import assign_whole

log = logging.getLogger("hotspot.feed")

FeedItem = dict[str, Any]
#: the feed's Fetch ``max_wait``. The control room can take a quarter of a second, and a shorter
#: wait on Tansu (which holds a Fetch for most of it, ``stream/broker/tansu.py``) costs the
#: worker's event loop a request and a response for three topics' partitions many times a second.
#: On Kafka, which answers as soon as records are there, the wait only bounds an idle Fetch.
FEED_FETCH_WAIT_MS = 250
#: dispatch suggestions read back per partition at start: a hot spot's latest matters only in
#: its current window, and the topic keeps 30 days of them
SUGGESTION_HISTORY = 1000
#: records produced before the worker started (less this slack) are history, not news
_LIVE_SLACK_MS = 5_000


class Feed:
    """Recent output events in arrival order, and subscribers waiting for new ones."""

    def __init__(self, max_events: int = 500, max_alerts: int = 10_000) -> None:
        self._events: deque[FeedItem] = deque(maxlen=max_events)
        self._alerts: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max_alerts)
        self._subscribers: set[asyncio.Queue[FeedItem]] = set()
        #: hot spot -> its latest dispatch suggestion (by ``ts``)
        self._suggestions: dict[str, dict[str, Any]] = {}
        self.ready = False

    def add(self, kind: str, event: dict[str, Any], live: bool = True) -> None:
        if kind == "dispatch":  # shown with its hot spot's state, not in the feed
            hotspot_id = str(event.get("hotspot_id"))
            held = self._suggestions.get(hotspot_id)
            if held is None or str(held.get("ts")) <= str(event.get("ts")):
                self._suggestions[hotspot_id] = event
            return
        item = {"kind": kind, "event": event}
        self._events.append(item)
        if kind == "alert":
            self._alerts.append((parse_rfc3339_ms(str(event.get("ts"))), event))
        if live:
            for queue in self._subscribers:
                if queue.qsize() < 1000:
                    queue.put_nowait(item)

    def subscribe(self) -> asyncio.Queue[FeedItem]:
        queue: asyncio.Queue[FeedItem] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[FeedItem]) -> None:
        self._subscribers.discard(queue)

    def events(self, limit: int) -> list[FeedItem]:
        """The latest ``limit`` items, oldest first."""
        items = list(self._events)
        return items[-limit:] if limit > 0 else []

    def suggestion(self, hotspot_id: str) -> dict[str, Any] | None:
        """The hot spot's latest dispatch suggestion, if any."""
        return self._suggestions.get(hotspot_id)

    def alerts(self, since_ms: int | None, limit: int) -> list[dict[str, Any]]:
        """Alerts decided after ``since_ms`` (all kept ones when None), by decision time."""
        chosen = [a for ts, a in self._alerts if since_ms is None or ts > since_ms]
        chosen.sort(key=lambda a: str(a.get("ts")))
        return chosen[-limit:] if limit > 0 else []


def feed_consumer(bootstrap: list[str], security: KafkaSecurity) -> AIOKafkaConsumer:
    """The feed's consumer: no group, it reads every partition of the output topics."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=FEED_FETCH_WAIT_MS,
        max_partition_fetch_bytes=MAX_BATCH_BYTES,
        **security.client_kwargs(),
    )


async def read_outputs(
    feed: Feed,
    bootstrap: list[str],
    topics: Mapping[str, str],
    should_stop: Callable[[], bool],
    event_history: int = 100,
    *,
    security: KafkaSecurity,
) -> None:
    """Fill ``feed`` from the output topics until ``should_stop()``: ``topics`` maps a feed kind
    (``geofence``, ``dwell``, ``alert``, ``dispatch``) to its topic. For ``app.task``."""
    consumer = feed_consumer(bootstrap, security)
    kinds = {topic: kind for kind, topic in topics.items()}
    try:
        assigned = await assign_whole(consumer, kinds, should_stop, log, "feed")
        if assigned is None:
            return
        tail = [tp for tp in assigned if kinds[tp.topic] != "alert"]
        if tail:
            for tp, end in (await consumer.end_offsets(tail)).items():
                history = SUGGESTION_HISTORY if kinds[tp.topic] == "dispatch" else event_history
                consumer.seek(tp, max(0, end - history))
        started_ms = time.time_ns() // 1_000_000
        while not should_stop():
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batch.items():
                for record in records:
                    try:
                        event = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(event, dict):
                        live = record.timestamp >= started_ms - _LIVE_SLACK_MS
                        feed.add(kinds[tp.topic], event, live)
            if not batch:
                feed.ready = True
    finally:
        await consumer.stop()
