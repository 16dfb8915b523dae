"""The worker's wiring: the Faust app, its topics, tables, agents and timers, and the parts
they connect.

The parts: the intake (stream/worker/intake.py) hands the pings topics' records over a fetch
at a time; the presence loop runs them through the presence stage and publishes its output
through the outbox; the coverage agent does the same for the visit updates; the checkpoint
(stream/worker/checkpoint.py) writes the states and commits what was processed; the clock
(stream/worker/clock.py) says what time it is; the rebalance handling
(stream/worker/rebalance.py) restores the states after a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

import faust
from faust.types.auth import CredentialsT

from geofences.hotspots import HotSpotCollection
from geofences.index import HotSpotIndex
from stream import logs
from stream.alerts.webhooks import WebhookDispatcher, endpoints_from_env
from stream.control_room.access import Access
from stream.control_room.feed import Feed, read_outputs
from stream.control_room.server import ControlRoom
from stream.kafka import KafkaSecurity, broker_answers
from stream.records import Consumed, Message, Outgoing, Record
from stream.worker import memory, metrics
from stream.worker.checkpoint import Changelog, Checkpoint
from stream.worker.clock import CLOCKS, Clock, ClockParts
from stream.worker.coverage_stage import (
    CoverageOutput,
    CoverageStage,
    record_slices,
    update_messages,
)
from stream.worker.dispatch_stage import DispatchDesk
from stream.worker.faust_internals import HotspotApp, read_in_bulk
from stream.worker.intake import Batch, Intake, track
from stream.worker.outbox import outbox_of
from stream.worker.positions_feed import read_positions
from stream.worker.presence_stage import PUBLISH_RULE, PresenceStage, StageOutput
from stream.worker.rebalance import Ownership, Rebalancing
from stream.worker.settings import SESSION_TIMEOUT_S, Settings
from stream.worker.topics import MAX_BATCH_BYTES, TopicPlan

log = logging.getLogger("hotspot")

#: how often a worker that lost its broker asks whether it is back
BROKER_PROBE_S = 2.0

#: how often the hot spots a worker owns are reviewed for dispatch: suggestions of those still
#: at risk, and whether their open windows are short (stream/worker/dispatch_stage.py)
DISPATCH_REVIEW_S = 5.0

#: the visit updates (in record bytes) the coverage agent applies before it lets the presence
#: loop run: a batch gathers ``coverage_within_s`` of updates, and applied at once it held
#: every ping that arrived meanwhile back for as long as it took; a batch boundary changes no
#: decision (:meth:`CoverageStage.process`)
YIELD_BYTES = 64 * 1024

RAW = {"key_serializer": "raw", "value_serializer": "raw"}


def broker_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """Faust's form of the security settings, for every client the app makes (its producer,
    consumers and topic creation): Faust hands ``SSLCredentials``' context, and
    ``SASLCredentials``' mechanism, user, password and context (SASL_SSL when it has one), to
    aiokafka as they are. The context is :meth:`KafkaSecurity.ssl_context`: the CA bundle,
    the client certificate for mutual TLS, and the host name check as set."""
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            ssl_context=security.ssl_context(),
            mechanism=security.sasl_mechanism,
        )
    if security.uses_tls:
        return faust.SSLCredentials(security.ssl_context())
    return None


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
            coalesce_inside=CLOCKS[settings.clock].coalesce_inside,
            publish_rule=PUBLISH_RULE if settings.dispatch_enabled else None,
        )
        self.coverage = CoverageStage(collection, settings.coverage, partitions)
        self.dispatch = DispatchDesk(
            collection, settings.dispatch, settings.presence.signal_timeout_ms
        )
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
        session_timeout_s = s.session_timeout_s or SESSION_TIMEOUT_S  # resolved by the CLI
        app = HotspotApp(
            s.app_id,
            broker=s.broker,
            broker_credentials=broker_credentials(s.kafka),
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
            broker_session_timeout=session_timeout_s,
            broker_heartbeat_interval=min(3.0, session_timeout_s / 3),
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
        self.dispatch_topic = app.topic(s.topics.dispatch_suggestions, **RAW)
        self.positions_topic = app.topic(plan.positions, **RAW)
        self.short_topic = app.topic(plan.short_windows, **RAW)
        self.assignments_topic = app.topic(s.topics.assignments, **RAW)
        self.assignments_dlq_topic = app.topic(s.topics.assignments_dlq, **RAW)
        self.table = app.Table(
            "presence", partitions=plan.partitions, key_type=bytes, value_type=bytes
        )
        self.coverage_table = app.Table(
            "coverage", partitions=plan.partitions, key_type=bytes, value_type=bytes
        )

        self.outbox = outbox_of(app)
        self.ownership = Ownership(app, plan)
        #: the checkpoint's lock on the coverage ledgers, and its guard on the unit states
        #: (see stream/worker/checkpoint.py)
        ledgers_lock, states_guard = asyncio.Lock(), asyncio.Lock()
        self.clock: Clock = CLOCKS[s.clock](
            ClockParts(
                app,
                self.stage,
                self.coverage,
                self.ownership,
                self.outbox,
                lambda: self.coverage_table.data,
                self.publish,
                self.publish_coverage,
                plan.visit_updates,
                plan.partitions,
                ledgers_lock,
                states_guard,
            )
        )
        self.intake = app.intake = Intake(set(plan.ping_topics), max_buffered=4 * s.batch_size)
        read_in_bulk(self.intake.topics)
        app.flow_control.manage_queue(self.intake)  # type: ignore[arg-type]
        self.checkpoint = Checkpoint(
            app,
            self.outbox,
            (
                Changelog(
                    self.stage, self.table, keep=False, snapshot=True
                ),  # the stage holds them
                Changelog(self.coverage, self.coverage_table, keep=True),  # read at rebalance
            ),
            ledgers_lock,
            states_guard,
        )
        app.before_handover = self._hand_over
        self.rebalancing = Rebalancing(
            app,
            plan,
            self.ownership,
            self.stage,
            self.table,
            self.coverage,
            self.checkpoint,
            self.clock,
        )

        app.topics.add(self.source)
        app.task(self._presence_loop)
        app.agent(self.visit_topic, name="coverage", concurrency=1)(self._coverage_agent)
        app.agent(self.assignments_topic, name="assignments", concurrency=1)(
            self._assignments_agent
        )
        app.timer(s.tick_interval_s, name="clock")(self._on_tick)
        app.timer(memory.RELEASE_INTERVAL_S, name="release-memory")(self._release_memory)
        app.timer(BROKER_PROBE_S, name="broker-link")(self._watch_broker)
        if s.dispatch_enabled:
            review_s = min(DISPATCH_REVIEW_S, s.dispatch.refresh_s)
            app.timer(review_s, name="dispatch")(self._review_dispatch)
            app.task(self._read_positions)
        if self.webhooks is not None:
            app.task(self.webhooks.serve)
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
            metrics.positions_known.set(len(self.dispatch.view))
            metrics.observe_tasks()
            await metrics.observe_lag(app.consumer, (*plan.ping_topics, plan.visit_updates))
            return metrics.exposition(web)

        app.page("/metrics")(metrics_page)

        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"ready": self.ready, "units": len(self.stage.states)})

        app.page("/healthz")(healthz)
        self.control_room = ControlRoom(self, Access.from_env(), self.feed)
        self.control_room.register(app)
        return app

    @property
    def ready(self) -> bool:
        """Assigned, and the states restored."""
        return self.rebalancing.ready

    def owned_coverage_partitions(self) -> set[int]:
        """The partitions of the visit updates (and so the hot spots) this worker owns."""
        return self.ownership.coverage_partitions()

    @property
    def coverage_store(self) -> Any:
        """The coverage ledgers' table, as recovered and written."""
        return self.coverage_table.data

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
                    "dispatch": topics.dispatch_suggestions,
                },
                lambda: self.app.should_stop,
                security=self.settings.kafka,
            )
        finally:
            await self.control_room.close()

    async def _read_positions(self) -> None:
        """Every worker's view of the units' last fixes and of the short windows."""
        await read_positions(
            self.dispatch,
            self.settings.bootstrap_servers,
            self.plan.positions,
            self.plan.short_windows,
            lambda: self.app.should_stop,
            security=self.settings.kafka,
        )

    def _owned_ledgers(self) -> dict[str, Any]:
        owned = self.ownership.coverage_partitions()
        partition_of = self.coverage.partition_of
        return {
            h: ledger for h, ledger in self.coverage.ledgers.items() if partition_of[h] in owned
        }

    def _dispatch_now_ms(self, fallback_ms: int | None = None) -> int | None:
        """When a suggestion is decided: the clock's time (the watermark in event mode)."""
        now_ms = self.clock.now_ms()
        return fallback_ms if now_ms is None else now_ms

    async def _review_dispatch(self) -> None:
        now_ms = self._dispatch_now_ms()
        if not self.ready or now_ms is None:
            return
        suggestions, shorts = self.dispatch.review(self._owned_ledgers(), now_ms)
        await self.outbox.send(
            chain(
                self._outgoing(self.short_topic, shorts),
                self._outgoing(self.dispatch_topic, suggestions),
            )
        )
        metrics.record_suggestions(len(suggestions))

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
        started = time.perf_counter()
        out = self.stage.process(batch_records(batches), self._stored_state)
        self.clock.batch_processed(batches, out)
        metrics.batch_seconds.observe(time.perf_counter() - started)
        await self.publish(out)
        await self.clock.batch_published()

    async def _hand_over(self) -> None:
        """Before a rebalance goes on, and at shutdown: everything processed is committed."""
        await self.checkpoint.run(wait=True)

    def _stored_state(self, key: bytes) -> bytes | None:
        """A unit's state as recovered from the changelog, if the stage does not hold it."""
        return self.table.data.get(key) or None

    async def _coverage_agent(self, stream: faust.StreamT[Any]) -> None:
        s = self.settings
        store = self.coverage_table.data
        async for events in stream.take_events(s.batch_size, within=s.coverage_within_s):
            records = as_records(events)
            # Not during a checkpoint's writes: what it writes is then exactly what the records
            # it acks changed, and a batch's records are held only once its alerts are sent.
            async with self.checkpoint.lock:
                now_ms = self.clock.coverage_now_ms()
                owned = self.ownership.coverage_partitions()
                parts = list(record_slices(records, YIELD_BYTES))
                for i, part in enumerate(parts):
                    last = i == len(parts) - 1
                    out = self.coverage.process(part, store, now_ms, owned, decide=last)
                    await self.publish_coverage(out)
                    if not last:
                        await asyncio.sleep(0)  # the presence loop's turn
                self.checkpoint.hold_messages([event.message for event in events])

    async def _assignments_agent(self, stream: faust.StreamT[Any]) -> None:
        async for events in stream.take_events(100, within=0.2):
            records = as_records(events)
            routed, dead = self.coverage.route_assignments(records)
            await self._send_all(self.visit_topic, routed)
            await self._send_all(self.assignments_dlq_topic, dead)

    async def publish_coverage(self, out: CoverageOutput) -> None:
        await self.outbox.send(
            chain(
                self._outgoing(self.alerts_topic, out.alerts),
                self._outgoing(self.dlq_topic, out.dead_letters),
            )
        )
        metrics.record_alerts(out.decided)
        if self.settings.dispatch_enabled and any(a.type != "co_patrol" for a in out.decided):
            # advisory, after the alerts they answer: never part of the ledgers
            now_ms = self._dispatch_now_ms(max(alert.ts_ms for alert in out.decided))
            assert now_ms is not None
            suggestions = self.dispatch.on_alerts(out.decided, self._owned_ledgers(), now_ms)
            await self._send_all(self.dispatch_topic, suggestions)
            metrics.record_suggestions(len(suggestions))

    async def _send_all(self, topic: Any, messages: Iterable[Message]) -> None:
        await self.outbox.send(self._outgoing(topic, messages))

    @staticmethod
    def _outgoing(topic: Any, messages: Iterable[Message]) -> Iterator[Outgoing]:
        name = topic.get_topic_name()
        return ((name, key, value, None) for key, value in messages)

    async def publish(self, out: StageOutput) -> None:
        """Send a stage's output (dead letters, re-keyed pings, events, visit updates) at once,
        one record batch per topic partition (stream/worker/outbox.py). Unit states go with the next
        checkpoint."""
        visit_topic = self.visit_topic.get_topic_name()
        await self.outbox.send(
            chain(
                self._outgoing(self.dlq_topic, out.dead_letters),
                self._outgoing(self.rekeyed_topic, out.rekeyed),
                self._outgoing(self.geofence_topic, out.geofence_events),
                self._outgoing(self.dwell_topic, out.dwell_events),
                self._outgoing(self.positions_topic, out.positions),
                (
                    (visit_topic, None, message, partition)
                    for partition, message in update_messages(
                        out.visit_updates, self.coverage.partition_of
                    )
                ),
            )
        )
        metrics.record(out)

    async def _watch_broker(self) -> None:
        """While the logs say the broker is lost, ask it; once it answers, say it is back."""
        if logs.broker_link.lost and await broker_answers(
            self.settings.broker, security=self.settings.kafka
        ):
            logs.broker_link.back()

    async def _release_memory(self) -> None:
        memory.release_free_memory()

    async def _on_tick(self) -> None:
        if self.ready:
            await self.clock.tick()
