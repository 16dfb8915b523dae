"""Sending a batch's output as record batches, on the aiokafka producer Faust already runs.

``await topic.send(...)`` costs Faust about 15-30 µs of Python per message (a FutureMessage,
sensors, a producer buffer, a debug log line, then aiokafka's own ``send``). A batch of pings
produces hundreds of events, visit updates and changelog writes, so the worker builds one
record batch per topic partition instead (``create_batch``/``send_batch``, well under a
microsecond per message) and hands each to the same producer. Keyed messages go where Kafka's
default partitioner (murmur2) puts them, as ``topic.send`` would; order within a partition is
the order given.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from typing import Any

from stream.kafka import key_partition
from stream.records import Outgoing
from stream.worker.faust_internals import kafka_producer

log = logging.getLogger("hotspot")


class Outbox:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._partitions: dict[str, int] = {}
        self._by_key: dict[tuple[int, bytes], int] = {}
        self._next = 0

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
        acknowledged, as ``topic.send``). A delivery error is logged."""
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

    @staticmethod
    async def _submit(producer: Any, builder: Any, tp: tuple[str, int]) -> None:
        # Closed, the batch goes out with the sender's next request instead of lingering.
        builder.close()
        delivered = await producer.send_batch(builder, tp[0], partition=tp[1])
        delivered.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("sending a record batch failed: %r", future.exception())


_outboxes: weakref.WeakKeyDictionary[Any, Outbox] = weakref.WeakKeyDictionary()


def outbox_of(app: Any) -> Outbox:
    """The app's outbox (one per app, made on first use)."""
    outbox = _outboxes.get(app)
    if outbox is None:
        outbox = _outboxes[app] = Outbox(app)
    return outbox
