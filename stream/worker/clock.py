"""The worker's clock: what time signal loss and coverage are decided at (docs/interface.md,
The clock: ``--clock``).

:class:`LiveClock` reads the wall clock: a timer expires silent units and moves every owned
hot spot's coverage on, pings or no pings. :class:`EventClock` reads the pings' own
timestamps: after each presence batch, the watermark (the least of the partitions' largest
ts) expires silent units and is sent to every coverage partition, which decides by it. Both
offer the same calls, so the worker's wiring never asks which one it has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from faust.types import TP

from stream.worker.coverage_stage import CoverageOutput, CoverageStage, clock_message
from stream.worker.faust_internals import committed_offset
from stream.worker.intake import Batch
from stream.worker.outbox import Outbox
from stream.worker.presence_stage import PresenceStage, StageOutput
from stream.worker.rebalance import Ownership


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ClockParts:
    """What a clock works with (each takes what it needs)."""

    app: Any
    stage: PresenceStage
    coverage: CoverageStage
    ownership: Ownership
    outbox: Outbox
    #: the coverage ledgers' table data
    coverage_store: Callable[[], Any]
    publish: Callable[[StageOutput], Awaitable[None]]
    publish_coverage: Callable[[CoverageOutput], Awaitable[None]]
    #: the visit updates topic and its partitions, which the watermark is sent to
    visit_topic: str
    partitions: int
    #: the checkpoint's lock on the ledgers and guard on the unit states (checkpoint.py): held
    #: by a tick while it changes either and publishes what that made
    ledgers_lock: asyncio.Lock
    states_guard: asyncio.Lock


class Clock(Protocol):
    #: the ``--clock`` value
    name: str
    #: whether the presence stage may send only a visit's latest "inside" update of a batch:
    #: in event time coverage decides at each fix's own ts, so every fix must reach it
    coalesce_inside: bool

    def now_ms(self) -> int | None:
        """The time the control room's views use (None before event time has begun)."""
        ...

    def coverage_now_ms(self) -> int | None:
        """The time the coverage stage decides a batch at; None: by its watermark."""
        ...

    def batch_processed(self, batches: Sequence[Batch], out: StageOutput) -> None:
        """After the presence stage processed ``batches``, before ``out`` is published."""
        ...

    async def batch_published(self) -> None:
        """After a presence batch's output was published."""
        ...

    async def tick(self) -> None:
        """Every ``tick_interval_s`` while the worker is assigned and restored."""
        ...

    async def assigned(self) -> None:
        """Once a rebalance has completed and the states are restored."""
        ...

    def revoked(self) -> None:
        """When a rebalance takes this worker's partitions away."""
        ...


class LiveClock:
    """The wall clock drives signal loss and coverage."""

    name = "live"
    coalesce_inside = True

    def __init__(self, parts: ClockParts) -> None:
        self.stage = parts.stage
        self.coverage = parts.coverage
        self.ownership = parts.ownership
        self.coverage_store = parts.coverage_store
        self.publish = parts.publish
        self.publish_coverage = parts.publish_coverage
        self.ledgers_lock = parts.ledgers_lock
        self.states_guard = parts.states_guard

    def now_ms(self) -> int | None:
        return wall_clock_ms()

    def coverage_now_ms(self) -> int | None:
        return wall_clock_ms()

    def batch_processed(self, batches: Sequence[Batch], out: StageOutput) -> None:
        pass

    async def batch_published(self) -> None:
        pass

    async def tick(self) -> None:
        """Expire units silent for too long; move every owned hot spot's coverage on."""
        now_ms = wall_clock_ms()
        async with self.states_guard:
            out = self.stage.expire(now_ms, self.ownership.ping_partitions())
            if out.events:
                await self.publish(out)
        # not amid a coverage batch applied in parts, nor a checkpoint's ledger writes
        async with self.ledgers_lock:
            owned = self.ownership.coverage_partitions()
            ledgers = self.coverage.advance_all(now_ms, owned, self.coverage_store())
            await self.publish_coverage(ledgers)

    async def assigned(self) -> None:
        # the first tick builds every owned hot spot's ledger: here, not amid the first pings
        await self.tick()

    def revoked(self) -> None:
        pass


class EventClock:
    """The pings' timestamps drive signal loss and coverage, through the watermark."""

    name = "event"
    coalesce_inside = False

    def __init__(self, parts: ClockParts) -> None:
        self.app = parts.app
        self.stage = parts.stage
        self.ownership = parts.ownership
        self.outbox = parts.outbox
        self.visit_topic = parts.visit_topic
        self.partitions = parts.partitions
        #: the next offset to read of each pings partition this worker has read
        self._next_offset: dict[TP, int] = {}
        #: pings partitions read up to their high watermark without delivering a ping
        self._idle: set[TP] = set()
        self._sent_parts: dict[str, int] = {}
        self._moved = False

    def now_ms(self) -> int | None:
        return self.stage.watermark_ms()

    def coverage_now_ms(self) -> int | None:
        return None

    def batch_processed(self, batches: Sequence[Batch], out: StageOutput) -> None:
        """Expire units silent since before the watermark, if the watermark may move."""
        for batch in batches:
            self._next_offset[batch.tp] = batch.records[-1].offset + 1
        self._moved = self.ready()
        if self._moved:
            watermark = self.stage.watermark_ms()
            if watermark is not None:
                self.stage.expire(watermark, self.ownership.ping_partitions(), out)

    async def batch_published(self) -> None:
        """Tell every coverage partition how far event time has got here."""
        if not self._moved:
            return
        parts = self.stage.watermark_parts()
        if parts == self._sent_parts:
            return
        self._sent_parts = parts
        message = clock_message(parts, self.stage.first_ts)
        await self.outbox.send(
            (self.visit_topic, None, message, partition) for partition in range(self.partitions)
        )

    def ready(self) -> bool:
        """Whether the watermark may move: not while a pings partition this worker reads holds
        records it has not delivered yet.

        The watermark is over partitions "that have delivered a ping"; when a
        recorded day is replayed, the consumer may hand over one partition's records before
        another's, and the watermark would run ahead of pings that are merely not read yet. A
        partition that has delivered counts by its largest ts; one that has not holds the
        clock until it has been read up to its high watermark."""
        consumer = self.app.consumer
        delivered = self.stage.partition_max_ts
        for tp in self.ownership.ping_tps():
            if tp in self._idle or (tp.topic, tp.partition) in delivered:
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

    async def tick(self) -> None:
        pass

    async def assigned(self) -> None:
        pass

    def revoked(self) -> None:
        self._idle.clear()


#: the clocks by ``--clock`` value
CLOCKS: dict[str, type[LiveClock] | type[EventClock]] = {
    LiveClock.name: LiveClock,
    EventClock.name: EventClock,
}
