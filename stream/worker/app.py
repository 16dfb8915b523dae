"""The Faust application: topics, the changelog-backed tables, the presence loop, the coverage
and assignments agents, and the clock.

The presence loop is thin: it takes a batch of the pings topics' records from the intake
(:mod:`stream.worker.intake`), hands it to :class:`stream.worker.presence_stage.PresenceStage`, carries the
output to Kafka and acks the batch.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

import faust
from faust.types import TP

from geofences.hotspots import HotSpotCollection
from geofences.index import HotSpotIndex
from stream.alerts.webhooks import WebhookDispatcher, endpoints_from_env
from stream.control_room.access import Access
from stream.control_room.feed import Feed, read_outputs
from stream.control_room.server import ControlRoom
from stream.records import Consumed, Message, Outgoing, Record
from stream.worker import memory, metrics
from stream.worker.checkpoint import Changelog, Checkpoint
from stream.worker.coverage_stage import (
    CoverageOutput,
    CoverageStage,
    clock_message,
    update_messages,
)
from stream.worker.faust_internals import (
    HotspotApp,
    committed_offset,
    forget_key_partitions,
    read_in_bulk,
)
from stream.worker.intake import Batch, Intake, track
from stream.worker.outbox import outbox_of
from stream.worker.presence_stage import PresenceStage, StageOutput
from stream.worker.settings import Settings
from stream.worker.topics import MAX_BATCH_BYTES, TopicPlan

log = logging.getLogger("hotspot")

RAW = {"key_serializer": "raw", "value_serializer": "raw"}


def batch_records(batches: Iterable[Batch]) -> list[Consumed]:
    """The intake's batches' records, in order (``Record``s read off the fetched batches)."""
    return [record for batch in batches for record in batch.records]


def as_records(events: Iterable[Any]) -> list[Record]:
    """Faust events as the stages' plain records."""
    records = []
    for e in events:
        m = e.message
        ts = m.timestamp  # Faust gives seconds as a float
        ts_ms = None if ts is None else round(ts * 1000)
        records.append(Record(m.topic, m.partition, m.offset, m.key, m.value, ts_ms))
    return records


#: the cyclic collector's thresholds (``gc.set_threshold``; Python's are 700, 10, 10)
GC_THRESHOLDS = (100_000, 50, 100)


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector's cost off the ping path.

    Each ping allocates a few dozen short-lived containers, nearly all freed by reference
    counting, and a few that live on (the unit's new state, its visits, coverage updates
    waiting for the watermark). With Python's thresholds the collector walks the young
    generation every 700 allocations, and the older ones in turn, which hold the unit states.
    Timed from ``gc.callbacks`` in a worker over the full-size bench load: with thresholds of
    (10,000, 10, 10), 5.5 s of collections in 40 s of CPU (gen 0: 670 runs, 2.8 s; gen 1: 61
    runs, 1.9 s; gen 2: 6 runs, 0.8 s); with :data:`GC_THRESHOLDS`, 1.1 s (288 runs of gen 0
    at about 3.5 ms, 25 of gen 1, 3 of gen 2), and 11-15 % less CPU a ping, measured side by
    side (README: Performance). And the oldest generation is collected whenever it grew by a
    quarter; such a pass walks every object the worker holds (Faust, aiokafka, the states:
    around a million), stopping the event loop for 100-400 ms (measured: a ping-to-event p99
    of 400 ms in ``live`` mode at 2,000 pings/s, against 60 ms around it). What exists once
    the worker is assigned and restored lives as long as the assignment, so it is moved out
    of the collector's sight (``gc.freeze``)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Processor:
    """Everything the worker holds, wired to one Faust app."""

    def __init__(self, settings: Settings, collection: HotSpotCollection, partitions: int) -> None:
        self.settings = settings
        self.collection = collection
        self.plan = TopicPlan(settings.topics, settings.app_id, partitions)
        self.index = HotSpotIndex(collection.hotspots)
        self.stage = PresenceStage(
            self.index,
            settings.presence,
            settings.topics.pings,
            coalesce_inside=settings.clock == "live",
        )
        self.coverage = CoverageStage(collection, settings.coverage, partitions)
        self._sent_parts: dict[str, int] = {}
        self._next_offset: dict[TP, int] = {}
        self._idle: set[TP] = set()
        self.ready = False
        endpoints = endpoints_from_env()
        self.webhooks = (
            WebhookDispatcher.for_settings(
                settings,
                {h.id: h.name for h in collection.hotspots},
                collection.timezone,
                endpoints,
            )
            if endpoints
            else None
        )
        self.feed = Feed()
        self.app = self._create_app()

    def _create_app(self) -> faust.App:
        s = self.settings
        app = HotspotApp(
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
            canonical_url=s.web_url or f"http://{s.web_host}:{s.web_port}",
            web_router_enabled=False,
            web_tables_enabled=False,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
            consumer_auto_offset_reset="earliest",
            producer_linger=0.005,
            producer_max_batch_size=MAX_BATCH_BYTES,  # one record batch per partition per publish
            consumer_max_fetch_size=MAX_BATCH_BYTES,
            table_standby_replicas=0,
            logging_config=None,
        )
        plan = self.plan
        self.source = app.topic(*plan.ping_topics, partitions=plan.partitions, **RAW)
        self.rekeyed_topic = app.topic(plan.rekeyed, partitions=plan.partitions, **RAW)
        self.geofence_topic = app.topic(s.topics.geofence_events, **RAW)
        self.dwell_topic = app.topic(s.topics.dwell_events, **RAW)
        self.dlq_topic = app.topic(s.topics.pings_dlq, **RAW)
        self.visit_topic = app.topic(plan.visit_updates, partitions=plan.partitions, **RAW)
        self.alerts_topic = app.topic(s.topics.coverage_alerts, **RAW)
        self.assignments_topic = app.topic(s.topics.assignments, **RAW)
        self.assignments_dlq_topic = app.topic(s.topics.assignments_dlq, **RAW)
        self.table = app.Table(
            "presence", partitions=plan.partitions, key_type=bytes, value_type=bytes
        )
        self.coverage_table = app.Table(
            "coverage", partitions=plan.partitions, key_type=bytes, value_type=bytes
        )

        self.intake = app.intake = Intake(set(plan.ping_topics), max_buffered=4 * s.batch_size)
        read_in_bulk(self.intake.topics)
        self.checkpoint = Checkpoint(
            app,
            outbox_of(app),
            (
                Changelog(self.stage, self.table, keep=False),  # the stage holds the states
                Changelog(self.coverage, self.coverage_table, keep=True),  # read at rebalance
            ),
            asyncio.Lock(),
        )
        app.before_handover = self._hand_over
        app.flow_control.manage_queue(self.intake)  # type: ignore[arg-type]
        app.topics.add(self.source)
        app.task(self._presence_loop)
        app.agent(self.visit_topic, name="coverage", concurrency=1)(self._coverage_agent)
        app.agent(self.assignments_topic, name="assignments", concurrency=1)(
            self._assignments_agent
        )
        app.timer(s.tick_interval_s, name="clock")(self._on_tick)
        app.timer(memory.RELEASE_INTERVAL_S, name="release-memory")(self._release_memory)
        if self.webhooks is not None:
            app.task(self.webhooks.serve)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)
        app.monitor = metrics.faust_monitor()
        app.task(self._read_outputs)

        async def metrics_page(web: Any, request: Any) -> Any:
            states = self.stage.states
            room = self.control_room
            metrics.observe_gauges(
                len(states),
                sum(1 for state in states.values() if state.visits),
                (h["state"] for h in room.local_hotspots(room.now_ms())),
            )
            return metrics.exposition(web)

        app.page("/metrics")(metrics_page)

        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"ready": self.ready, "units": len(self.stage.states)})

        app.page("/healthz")(healthz)
        self.control_room = ControlRoom(self, Access.from_env(), self.feed)
        self.control_room.register(app)
        return app

    async def _read_outputs(self) -> None:
        """The control room's feed: every worker reads the output topics in full."""
        topics = self.settings.topics
        try:
            await read_outputs(
                self.feed,
                self.settings.bootstrap_servers,
                {
                    "geofence": topics.geofence_events,
                    "dwell": topics.dwell_events,
                    "alert": topics.coverage_alerts,
                },
                lambda: self.app.should_stop,
            )
        finally:
            await self.control_room.close()

    # -- agent ---------------------------------------------------------------------------

    async def _presence_loop(self) -> None:
        """The pings topics' batches (stream/worker/intake.py) through the presence stage. Their
        output goes to the producer at once; they are acked at the next checkpoint (every
        ``state_flush_s``). A failure, a checkpoint's included, stops the worker."""
        s = self.settings
        consumer = self.app.consumer
        checkpoint = self.checkpoint
        try:
            while not self.app.should_stop:
                checkpoint.check()
                batches = await self.intake.take(s.batch_size, s.batch_within_s, idle_s=1.0)
                if batches:
                    track(consumer, batches)
                    await self._presence_batch(batches)
                    checkpoint.hold(batches)
                if checkpoint.due(s.state_flush_s):
                    await checkpoint.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("presence: processing failed")
            await self.app.crash(exc)
            raise

    async def _presence_batch(self, batches: list[Batch]) -> None:
        s = self.settings
        for batch in batches:
            self._next_offset[batch.tp] = batch.records[-1].offset + 1
        started = time.perf_counter()
        out = self.stage.process(batch_records(batches), self._stored_state)
        clock_ready = s.clock == "event" and self._event_clock_ready()
        if clock_ready:
            watermark = self.stage.watermark_ms()
            if watermark is not None:
                self.stage.expire(watermark, self._owned_partitions(), out)
        metrics.batch_seconds.observe(time.perf_counter() - started)
        await self.publish(out)
        if clock_ready:
            await self._broadcast_watermark()

    async def _hand_over(self) -> None:
        """Before a rebalance goes on, and at shutdown: everything processed is committed."""
        await self.checkpoint.run(wait=True)

    def _stored_state(self, key: bytes) -> bytes | None:
        """A unit's state as recovered from the changelog, if the stage does not hold it."""
        return self.table.data.get(key) or None

    def _event_clock_ready(self) -> bool:
        """Whether the event-time watermark may move: not while a pings partition this worker
        reads holds records it has not delivered yet.

        The contract's watermark is over partitions "that have delivered a ping"; when a recorded
        day is replayed, the consumer may hand over one partition's records before another's, and
        the watermark would run ahead of pings that are merely not yet read. A partition that has
        delivered counts by its largest ts; one that has not holds the clock until it has been
        read up to its high watermark."""
        consumer = self.app.consumer
        names = set(self.plan.ping_topics)
        for tp in self.app.assignor.assigned_actives():
            if (
                tp.topic not in names
                or tp in self._idle
                or (tp.topic, tp.partition) in self.stage.partition_max_ts
            ):
                continue
            try:
                highwater = consumer.highwater(tp)
            except Exception:
                return False
            if highwater is None:
                return False
            read = self._next_offset.get(tp, committed_offset(consumer, tp) or 0)
            if read < highwater:
                return False
            self._idle.add(tp)
        return True

    async def _broadcast_watermark(self) -> None:
        """Event mode: tell every coverage partition how far event time has got here."""
        parts = self.stage.watermark_parts()
        if parts == self._sent_parts:
            return
        self._sent_parts = parts
        message = clock_message(parts, self.stage.first_ts)
        visit_topic = self.visit_topic.get_topic_name()
        await outbox_of(self.app).send(
            (visit_topic, None, message, partition) for partition in range(self.plan.partitions)
        )

    async def _coverage_agent(self, stream: faust.StreamT[Any]) -> None:
        s = self.settings
        store = self.coverage_table.data
        async for events in stream.take_events(s.batch_size, within=s.coverage_within_s):
            records = as_records(events)
            live_now = wall_clock_ms() if s.clock == "live" else None
            # Not during a checkpoint's writes: what it writes is then exactly what the records
            # it acks changed, and a batch's records are held only once its alerts are sent.
            async with self.checkpoint.lock:
                out = self.coverage.process(
                    records, store, live_now, self._owned_partitions(self.plan.visit_updates)
                )
                await self.publish_coverage(out)
                self.checkpoint.hold_messages([event.message for event in events])

    async def _assignments_agent(self, stream: faust.StreamT[Any]) -> None:
        async for events in stream.take_events(100, within=0.2):
            records = as_records(events)
            routed, dead = self.coverage.route_assignments(records)
            await self._send_all(self.visit_topic, routed)
            await self._send_all(self.assignments_dlq_topic, dead)

    async def publish_coverage(self, out: CoverageOutput) -> None:
        await outbox_of(self.app).send(
            chain(
                self._outgoing(self.alerts_topic, out.alerts),
                self._outgoing(self.dlq_topic, out.dead_letters),
            )
        )
        metrics.record_alerts(out.decided)

    async def _send_all(self, topic: Any, messages: Iterable[Message]) -> None:
        await outbox_of(self.app).send(self._outgoing(topic, messages))

    @staticmethod
    def _outgoing(topic: Any, messages: Iterable[Message]) -> Iterator[Outgoing]:
        name = topic.get_topic_name()
        return ((name, key, value, None) for key, value in messages)

    async def publish(self, out: StageOutput) -> None:
        """Send a stage's output (dead letters, re-keyed pings, events, visit updates) at once,
        one record batch per topic partition (stream/worker/outbox.py). Unit states go with the next
        checkpoint."""
        visit_topic = self.visit_topic.get_topic_name()
        await outbox_of(self.app).send(
            chain(
                self._outgoing(self.dlq_topic, out.dead_letters),
                self._outgoing(self.rekeyed_topic, out.rekeyed),
                self._outgoing(self.geofence_topic, out.geofence_events),
                self._outgoing(self.dwell_topic, out.dwell_events),
                (
                    (visit_topic, None, message, partition)
                    for partition, message in update_messages(
                        out.visit_updates, self.coverage.partition_of
                    )
                ),
            )
        )
        metrics.record(out)

    # -- clock and rebalancing -----------------------------------------------------------

    def owned_coverage_partitions(self) -> set[int]:
        """The partitions of the visit updates (and so the hot spots) this worker owns."""
        return self._owned_partitions(self.plan.visit_updates)

    @property
    def coverage_store(self) -> Any:
        """The coverage ledgers' table, as recovered and written."""
        return self.coverage_table.data

    def _owned_partitions(self, *topics: str) -> set[int]:
        names = set(topics or self.plan.ping_topics)
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in names}

    async def _release_memory(self) -> None:
        memory.release_free_memory()

    async def _on_tick(self) -> None:
        """Live mode: the wall clock drives signal loss and coverage, pings or no pings."""
        if self.ready and self.settings.clock == "live":
            await self._tick()

    async def _tick(self) -> None:
        now_ms = wall_clock_ms()
        out = self.stage.expire(now_ms, self._owned_partitions())
        if out.events:
            await self.publish(out)
        owned = self._owned_partitions(self.plan.visit_updates)
        await self.publish_coverage(
            self.coverage.advance_all(now_ms, owned, self.coverage_table.data)
        )

    async def _on_revoked(self, app: faust.App, revoked: set[TP], **_: Any) -> None:
        self.ready = False
        self._idle.clear()

    def _restore_presence(self, owned: set[int]) -> int:
        """The presence stage after a rebalance: the states of partitions it no longer owns
        dropped, and every state Faust recovered from the changelog adopted (a partition new
        here is read from its beginning, so all of its units; one kept is read on from where
        recovery last stopped, so only states written since, which the stage may hold newer:
        each unit is then as it was last written, as after a restart). The states the stage
        adopted leave the table's memory (the stage holds them); returns how many were
        adopted."""
        data = self.table.data
        for unit_id in self.stage.forget_partitions(set(range(self.plan.partitions)) - owned):
            data.pop(unit_id.encode(), None)
        self.stage.reset_watermark()
        recovered = [(key, raw) for key, raw in data.items() if raw]
        restored = self.stage.restore(recovered, owned)
        adopted = [key for key, _ in recovered if key.decode() in self.stage.states]
        for key in adopted:
            del data[key]
        forget_key_partitions(data, adopted)
        return restored

    async def _on_rebalance_complete(self, app: faust.App, **_: Any) -> None:
        # Faust (0.15.3, Recovery.on_recovery_completed) sends this signal, then resumes the
        # stream partitions and only then seeks them to their committed offsets, with the
        # flow still running since changelog recovery. Records fetched from a newly assigned
        # partition's old position were processed meanwhile and committed (moving the group's
        # offset back); the seek then left a hole in the acked offsets, after which Faust never
        # committed that partition again, and records in flight around the seek were dropped
        # (tests/stream/worker/test_scale_out.py). Stop the flow here: Faust resumes it right after
        # the seek, and a fetch that returns while it is stopped seeks to committed itself.
        app.consumer.stop_flow()
        owned = self._owned_partitions()
        restored = self._restore_presence(owned)
        # Ledgers are read again from the table, as of the handover's flush; coverage records
        # processed since are not acked, and are read again from the committed offsets.
        self.coverage.forget()
        self.checkpoint.forget_messages()
        log.info("presence: %d unit states restored for partitions %s", restored, sorted(owned))
        if self.settings.clock == "live":
            # the first tick builds every owned hot spot's ledger (~0.3 s for 2,000): here, not
            # amid the first pings
            await self._tick()
        settle_garbage_collector()
        self.ready = True
