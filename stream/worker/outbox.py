"""Sending a batch's output as record batches, on the aiokafka producer Faust already runs.

``await topic.send(...)`` costs Faust a FutureMessage, sensors, a producer buffer and a log
call per message. A batch of pings produces hundreds of events, visit updates and changelog
writes, so the worker builds one record batch per topic partition instead
(``create_batch``/``send_batch``) and hands each to the same producer. Keyed messages go where
Kafka's default partitioner (murmur2) puts them, as ``topic.send`` would; order within a
partition is the order given.

Every record batch's delivery is kept until a checkpoint takes it
(:meth:`Outbox.take_deliveries`): the records that produced it are committed only once the
broker has acknowledged it (stream/worker/checkpoint.py).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import Any

from stream.kafka import key_partition
from stream.records import Outgoing
from stream.worker.faust_internals import kafka_producer


class Outbox:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._partitions: dict[str, int] = {}
        self._by_key: dict[tuple[int, bytes], int] = {}
        self._next = 0
        #: deliveries not yet taken by a checkpoint, less those already acknowledged
        self._deliveries: set[asyncio.Future[Any]] = set()

    async def _partition(self, producer: Any, topic: str, key: bytes | None) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = len(await producer.partitions_for(topic))
        if key is None:
            self._next += 1
            return self._next % count
        partition = self._by_key.get((count, key))
        if partition is None:
            partition = self._by_key[(count, key)] = key_partition(key, count)
        return partition

    async def send(self, messages: Iterable[Outgoing]) -> None:
        """Queue every message for sending; returns once all are with the producer (not yet
        acknowledged: a checkpoint waits for that)."""
        producer = kafka_producer(self.app)
        builders: dict[tuple[str, int], Any] = {}
        for topic, key, value, partition in messages:
            if partition is None:
                partition = await self._partition(producer, topic, key)
            tp = (topic, partition)
            builder = builders.get(tp)
            if builder is None:
                builder = builders[tp] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:
                await self._submit(producer, builder, tp)
                builder = builders[tp] = producer.create_batch()
                builder.append(key=key, value=value, timestamp=None)
        await asyncio.gather(*(self._submit(producer, b, tp) for tp, b in builders.items()))

    async def _submit(self, producer: Any, builder: Any, tp: tuple[str, int]) -> None:
        # Closed, the batch goes out with the sender's next request instead of lingering.
        builder.close()
        delivery = await producer.send_batch(builder, tp[0], partition=tp[1])
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._acknowledged)

    def _acknowledged(self, delivery: asyncio.Future[Any]) -> None:
        # an acknowledged delivery need not be kept; a failed one is, for the checkpoint
        if not delivery.cancelled() and delivery.exception() is None:
            self._deliveries.discard(delivery)

    def take_deliveries(self) -> list[asyncio.Future[Any]]:
        """The deliveries of every record batch sent since the last call that the broker
        has not acknowledged yet (failed ones included)."""
        deliveries = list(self._deliveries)
        self._deliveries.clear()
        return deliveries


_outboxes: weakref.WeakKeyDictionary[Any, Outbox] = weakref.WeakKeyDictionary()


def outbox_of(app: Any) -> Outbox:
    """The app's outbox (one per app, made on first use)."""
    outbox = _outboxes.get(app)
    if outbox is None:
        outbox = _outboxes[app] = Outbox(app)
    return outbox
