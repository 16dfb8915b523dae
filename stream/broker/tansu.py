"""Work-arounds for Tansu, the embedded broker, where it disagrees with Kafka.

Tansu answers ListOffsets(latest) with the last batch's base offset + 1 instead of the log end
offset (a Fetch response's high watermark is right). Faust's table recovery reads a changelog
only up to ``end_offsets``, so on Tansu it would silently drop the tail of the changelog.
:func:`true_end_offsets` fetches the last batch and takes the high watermark from the answer.

Tansu also holds a Fetch for most of its ``max_wait`` even when records arrive meanwhile;
Kafka answers as soon as there are any. So on Tansu the worker fetches with a short wait
(:data:`FETCH_WAIT_MS`), which costs an idle worker a few small requests a second. Each held,
empty Fetch costs Tansu CPU the worker shares, and a worker that is behind keeps fetching its
idle partitions (internal topics, changelogs) while the pings wait in the client's buffer.
So while the consumer is at least :data:`BEHIND_RECORDS` records behind on the pings, those
Fetches wait :data:`BEHIND_FETCH_WAIT_MS` instead (:func:`wait_by_backlog`): the records it
is behind on are already there to read, so no ping waits on the longer hold.

:func:`install` makes Faust's aiokafka consumer thread do all of this; it is applied only
when the worker talks to a Tansu broker (:func:`is_tansu`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from stream.kafka import KafkaSecurity
from stream.worker import faust_internals as internals

log = logging.getLogger(__name__)

_installed = False

#: the Fetch ``max_wait`` on Tansu, which does not answer a waiting Fetch when records arrive
FETCH_WAIT_MS = 20
#: the Fetch ``max_wait`` on Tansu while the worker is behind (see the module docstring)
BEHIND_FETCH_WAIT_MS = 100
#: records the worker's consumer is behind on the pings (fetched and not yet taken, or not yet
#: fetched) from which it counts as behind: far above what a live load leaves, far below a
#: backlog's
BEHIND_RECORDS = 5_000


def installed() -> bool:
    """Whether the worker runs with the Tansu work-arounds."""
    return _installed


def fetch_wait_ms(default: int = 500) -> int:
    """The Fetch ``max_wait`` for a consumer of this worker (see the module docstring)."""
    return FETCH_WAIT_MS if _installed else default


def records_behind(assignment: Any, topics: Collection[str]) -> int:
    """Records an aiokafka consumer's partitions of ``topics`` are behind their last known
    high watermarks."""
    behind = 0
    for tp in assignment.tps:
        if tp.topic in topics:
            state = assignment.state_value(tp)
            if state.highwater is not None and state.has_valid_position:
                behind += state.highwater - state.position
    return behind


def wait_by_backlog(consumer: Any, topics: Collection[str]) -> None:
    """Make a started aiokafka consumer choose each Fetch's ``max_wait`` by how far behind it
    is on ``topics``."""

    def wait_ms(assignment: Any) -> int:
        behind = records_behind(assignment, topics) >= BEHIND_RECORDS
        return BEHIND_FETCH_WAIT_MS if behind else FETCH_WAIT_MS

    internals.choose_fetch_wait(consumer, wait_ms)


def is_tansu(cluster_id: str | None) -> bool:
    return cluster_id is not None and "tansu" in cluster_id.lower()


async def true_end_offsets(
    bootstrap: str, reported: Mapping[TopicPartition, int], security: KafkaSecurity
) -> dict[TopicPartition, int]:
    """End offsets corrected from Fetch high watermarks; partitions reported empty stay 0."""
    result = dict(reported)
    nonempty = [tp for tp, offset in reported.items() if offset and offset > 0]
    if not nonempty:
        return result
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
        **security.client_kwargs(),
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


def install(bootstrap: str, ping_topics: Collection[str], security: KafkaSecurity) -> None:
    """Make Faust's aiokafka consumer thread see the true end offsets in table recovery, and
    its consumer fetch with a short wait, longer while behind on ``ping_topics``."""
    global _installed
    if _installed:
        return

    async def correct(reported: Mapping[TopicPartition, int]) -> Mapping[TopicPartition, int]:
        corrected = await true_end_offsets(bootstrap, reported, security)
        if corrected != dict(reported):
            log.info("tansu: corrected changelog end offsets %s -> %s", dict(reported), corrected)
        return corrected

    topics = frozenset(ping_topics)

    def prepare(consumer: AIOKafkaConsumer) -> None:
        internals.set_fetch_max_wait(consumer, FETCH_WAIT_MS)
        start = consumer.start

        async def start_waiting_by_backlog() -> None:
            await start()
            wait_by_backlog(consumer, topics)

        consumer.start = start_waiting_by_backlog  # type: ignore[method-assign]

    internals.correct_end_offsets(correct)
    internals.on_worker_consumer(prepare)
    _installed = True
