"""The Faust application: topics, the changelog-backed presence table, the agent and the clock.

The agent is a thin loop: it takes a batch of records, hands it to
:class:`stream.presence_stage.PresenceStage` and carries the output to Kafka.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import faust
from faust.types import TP

from geofences.hotspots import HotSpotCollection
from geofences.index import HotSpotIndex
from geofences.timefmt import format_ms
from stream import metrics
from stream.presence_stage import PresenceStage, Record, StageOutput
from stream.settings import Settings
from stream.topics import TopicPlan

log = logging.getLogger("hotspot")

RAW = {"key_serializer": "raw", "value_serializer": "raw"}


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Processor:
    """Everything the worker holds, wired to one Faust app."""

    def __init__(self, settings: Settings, collection: HotSpotCollection, partitions: int) -> None:
        self.settings = settings
        self.collection = collection
        self.plan = TopicPlan(settings.topics, settings.app_id, partitions)
        self.index = HotSpotIndex(collection.hotspots)
        self.stage = PresenceStage(self.index, settings.presence, settings.topics.pings)
        self.ready = False
        self.app = self._create_app()

    def _create_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=s.broker,
            store="memory://",
            datadir=str(s.data_dir),
            topic_partitions=self.plan.partitions,
            topic_replication_factor=s.replication_factor,
            topic_allow_declare=True,
            web_port=s.web_port,
            web_bind=s.web_host,
            web_host=s.web_host,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
            consumer_auto_offset_reset="earliest",
            producer_linger=0.005,
            table_standby_replicas=0,
            logging_config=None,
        )
        plan = self.plan
        self.source = app.topic(s.topics.pings, plan.rekeyed, partitions=plan.partitions, **RAW)
        self.rekeyed_topic = app.topic(plan.rekeyed, partitions=plan.partitions, **RAW)
        self.geofence_topic = app.topic(s.topics.geofence_events, **RAW)
        self.dwell_topic = app.topic(s.topics.dwell_events, **RAW)
        self.dlq_topic = app.topic(s.topics.pings_dlq, **RAW)
        self.table = app.Table(
            "presence",
            partitions=plan.partitions,
            key_type=bytes,
            value_type=bytes,
        )

        app.agent(self.source, name="presence", concurrency=1)(self._presence_agent)
        app.timer(s.tick_interval_s, name="signal-loss")(self._on_tick)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)
        app.page("/metrics")(metrics.metrics_view)

        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"ready": self.ready, "units": len(self.stage.states)})

        app.page("/healthz")(healthz)

        async def units(web: Any, request: Any) -> Any:
            return web.json({"units": self.units_view()})

        app.page("/api/units")(units)
        return app

    # -- agent ---------------------------------------------------------------------------

    async def _presence_agent(self, stream: faust.StreamT[Any]) -> None:
        s = self.settings
        load = self.table.data.get
        async for events in stream.take_events(s.batch_size, within=s.batch_within_s):
            records = [
                Record(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                )
                for e in events
            ]
            started = time.perf_counter()
            out = self.stage.process(records, load)
            if s.clock == "event":
                watermark = self.stage.watermark_ms()
                if watermark is not None:
                    self.stage.expire(watermark, self._owned_partitions(), out)
            metrics.batch_seconds.observe(time.perf_counter() - started)
            await self.publish(out)

    async def publish(self, out: StageOutput) -> None:
        """Send a stage's output: dead letters, re-keyed pings, events, then state changes."""
        for key, value in out.dead_letters:
            await self.dlq_topic.send(key=key, value=value)
        for key, value in out.rekeyed:
            await self.rekeyed_topic.send(key=key, value=value)
        for key, value in out.geofence_events:
            await self.geofence_topic.send(key=key, value=value)
        for key, value in out.dwell_events:
            await self.dwell_topic.send(key=key, value=value)
        self._write_states(out.writes.items())
        metrics.record(out)

    def _write_states(self, writes: Iterable[tuple[bytes, tuple[int, bytes]]]) -> None:
        """Write unit states with an explicit changelog partition (the unit's own).

        Faust's ``table[key] = value`` takes the partition from the current event, which a
        batch or a timer does not have; the state remembers its partition, so we say it.
        """
        data = self.table.data
        for key, (partition, value) in writes:
            data[key] = value
            self.table.send_changelog(partition, key, value)

    def units_view(self) -> list[dict[str, Any]]:
        """Every unit this worker owns: type, last usable fix and open visits."""
        result = []
        for unit_id in sorted(self.stage.states):
            state = self.stage.states[unit_id]
            result.append(
                {
                    "unit_id": unit_id,
                    "unit_type": state.unit_type,
                    "last_ts": None if state.last_ms is None else format_ms(state.last_ms),
                    "lat": state.last_lat,
                    "lon": state.last_lon,
                    "present_in": {
                        hotspot_id: {
                            "enter_ts": format_ms(visit.enter_ms),
                            "last_inside_ts": format_ms(visit.last_inside_ms),
                            "outside_since": None
                            if visit.streak_ms is None
                            else format_ms(visit.streak_ms),
                        }
                        for hotspot_id, visit in sorted(state.visits.items())
                    },
                }
            )
        return result

    # -- clock and rebalancing -----------------------------------------------------------

    def _owned_partitions(self) -> set[int]:
        names = {self.settings.topics.pings, self.plan.rekeyed}
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in names}

    async def _on_tick(self) -> None:
        if not self.ready or self.settings.clock != "live":
            return
        out = self.stage.expire(wall_clock_ms(), self._owned_partitions())
        if out.writes:
            await self.publish(out)

    async def _on_revoked(self, app: faust.App, revoked: set[TP], **_: Any) -> None:
        self.ready = False

    async def _on_rebalance_complete(self, app: faust.App, **_: Any) -> None:
        owned = self._owned_partitions()
        self.stage.forget_partitions(set(range(self.plan.partitions)))
        restored = self.stage.restore(list(self.table.data.items()), owned)
        log.info("presence: %d unit states restored for partitions %s", restored, sorted(owned))
        self.ready = True
