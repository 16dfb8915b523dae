"""Bulk intake: the pings topics' records reach the presence stage a whole fetch at a time.

Faust hands every consumed record to its agents one by one: a ``ConsumerMessage``, two tasks
raced in ``wait_first``, an ``Event``, a queue, stream iteration and its sensors, and an ack.
The presence stage works on whole batches anyway, so for its topics the worker's consumer
(:func:`stream.worker.faust_internals.bulk_consumer_class`) hands over each partition's
fetched records as one :class:`Batch`, and the presence loop acks a batch's offsets at the
next checkpoint (:mod:`stream.worker.checkpoint`).

Everything else stays Faust's: group membership and the co-partitioned assignment, changelog
recovery, seeking to committed offsets, flow control during rebalances, and committing. A
batch is tracked like an in-flight message, so a rebalance or shutdown waits for it, and its
offsets are acked through the bookkeeping Faust's own ``Consumer.ack`` keeps, gaps included.
Batches still queued when a rebalance starts are dropped with Faust's own queues
(``app.flow_control.clear()``); their offsets were never acked, so they are read again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from time import monotonic
from typing import Any

from faust.types import TP
from faust.types.tuples import ack_lock

from stream.worker import faust_internals as internals


class Batch:
    """One partition's records from one fetch, in offset order.

    In Faust's in-flight set while processed, hence ``acked`` and ``refcount`` (what
    Faust's ``wait_empty`` looks at); hashed by identity. A processed batch
    waiting for its ack (:func:`hold`) keeps only its offsets."""

    __slots__ = ("__weakref__", "_offsets", "acked", "records", "refcount", "tp")

    def __init__(self, tp: TP, records: Sequence[Any]) -> None:
        self.tp = tp
        self.records = records
        self._offsets: list[int] | None = None
        self.acked = False
        self.refcount = 1

    @property
    def offsets(self) -> list[int]:
        if self._offsets is None:
            return [r.offset for r in self.records]
        return self._offsets

    def drop_records(self) -> None:
        """Keep the offsets only (a held batch's records would be most of the memory)."""
        self._offsets = self.offsets
        self.records = ()

    def __repr__(self) -> str:
        offsets = self.offsets
        return f"<Batch {self.tp.topic}[{self.tp.partition}] offsets {offsets[0]}..{offsets[-1]}>"


class Intake:
    """The queue of batches between the consumer's fetch loop and the presence loop.

    Bounded by records, so a slow stage holds the fetch loop back as Faust's own stream
    buffers do. Registered with the app's flow control, which clears it when a rebalance
    starts."""

    def __init__(self, topics: set[str], max_buffered: int) -> None:
        self.topics = frozenset(topics)
        self.max_buffered = max_buffered
        self._batches: deque[Batch] = deque()
        self._count = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._batches.clear()
        self._count = 0
        self._ready.clear()
        self._room.set()

    def add(self, tp: TP, records: Sequence[Any]) -> None:
        """One partition's records of one fetch, as a batch (the bulk consumer's call)."""
        self.offer(Batch(tp, records))

    def offer(self, batch: Batch) -> None:
        self._batches.append(batch)
        self._count += len(batch.records)
        self._ready.set()
        if self._count >= self.max_buffered:
            self._room.clear()

    async def room(self) -> None:
        """Wait until the queue is below its bound."""
        await self._room.wait()

    async def take(self, max_records: int, within_s: float, idle_s: float) -> list[Batch]:
        """Batches holding up to about ``max_records`` records (whole batches: at least one).

        Waits up to ``idle_s`` for a first batch (returning ``[]`` if none came), then up to
        ``within_s`` for more while fewer than ``max_records`` are queued."""
        if not self._batches:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), idle_s)
            except TimeoutError:
                return []
        if self._count < max_records and within_s > 0:
            deadline = asyncio.get_running_loop().time() + within_s
            while self._count < max_records:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                self._ready.clear()
                try:
                    await asyncio.wait_for(self._ready.wait(), left)
                except TimeoutError:
                    break
        taken: list[Batch] = []
        count = 0
        while self._batches and (not taken or count + len(self._batches[0].records) <= max_records):
            batch = self._batches.popleft()
            taken.append(batch)
            count += len(batch.records)
        self._count -= count
        if self._count < self.max_buffered:
            self._room.set()
        return taken


def track(consumer: Any, batches: Sequence[Batch]) -> None:
    """Mark batches in flight: a rebalance or shutdown now waits for their ack. And tell
    Faust's monitor their partitions are being processed: its stall check
    (``verify_event_path``) would otherwise log, every few minutes, that a busy partition's
    stream never started."""
    internals.add_in_flight(consumer, batches)
    inbound = consumer.app.monitor.stream_inbound_time
    now = monotonic()
    for batch in batches:
        inbound[batch.tp] = now


def hold(consumer: Any, batches: Sequence[Batch]) -> None:
    """Processed batches whose ack waits for a checkpoint: no longer in flight (so a
    rebalance's ``wait_empty`` does not wait for them; the worker checkpoints before it lets a
    rebalance go on) and not acked either, so their offsets are not committed yet."""
    internals.discard_in_flight(consumer, batches)
    for batch in batches:
        batch.drop_records()
    internals.notify_ack_waiters(consumer)


def hold_messages(consumer: Any, messages: Sequence[Any]) -> None:
    """Faust messages an agent processed whose ack waits for a checkpoint, as :func:`hold`
    does for batches: one more reference each, so the stream's own ack leaves them unacked,
    and no longer in flight. :func:`release` acks them."""
    for message in messages:
        message.incref()
    internals.discard_in_flight(consumer, messages)
    internals.notify_ack_waiters(consumer)


def release(consumer: Any, messages: Sequence[Any]) -> None:
    """Ack messages held by :func:`hold_messages` (the last reference: Faust's own ack)."""
    for message in messages:
        message.ack(consumer)


def ack(consumer: Any, batch: Batch) -> None:
    """Ack every offset of a processed batch, as ``Consumer.ack`` does for one message."""
    with ack_lock:
        if batch.acked:
            return
        batch.acked = True
        internals.discard_in_flight(consumer, (batch,))
        try:
            internals.ack_offsets(consumer, batch.tp, batch.offsets)
        finally:
            internals.notify_ack_waiters(consumer)
