"""Reading topics whole, outside any consumer group: the control room's feed and the positions
feed each keep a view of every partition of some topics, on every worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from stream.worker.faust_internals import refresh_metadata


async def assign_whole(
    consumer: AIOKafkaConsumer,
    topics: Iterable[str],
    should_stop: Callable[[], bool],
    log: logging.Logger,
    what: str,
) -> list[TopicPartition] | None:
    """Start ``consumer`` (again every 2 s while the broker cannot be reached, a warning
    each time, naming ``what``), wait until every one of ``topics`` has partitions, assign all
    of them and seek to their beginnings. None when ``should_stop()`` came first (the consumer
    may then be started: the caller stops it)."""
    wanted = set(topics)
    while not should_stop():
        try:
            await consumer.start()
            break
        except KafkaError as exc:
            log.warning("%s: cannot reach the broker: %s", what, exc)
            await asyncio.sleep(2.0)
    else:
        return None
    while not should_stop():
        await refresh_metadata(consumer)
        assigned = [
            TopicPartition(topic, partition)
            for topic in sorted(wanted)
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if {tp.topic for tp in assigned} == wanted:
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            return assigned
        await asyncio.sleep(1.0)
    return None
