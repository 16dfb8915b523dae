"""Every worker's copy of the positions and short-windows topics, for dispatch suggestions.

Both are compacted internal topics (stream/worker/topics.py). Every worker reads them whole, all
partitions from the beginning, with a consumer of its own that is in no group and never commits,
as the control room's feed does (stream/control_room/feed.py), into its
:class:`stream.worker.dispatch_stage.DispatchDesk`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer

from geofences.errors import InvalidPosition
from geofences.positions import Fix
from stream.kafka import KafkaSecurity
from stream.worker.dispatch_stage import DispatchDesk
from stream.worker.whole_topics import assign_whole

log = logging.getLogger("hotspot.positions")

#: the Fetch ``max_wait``: a position a quarter of a second late changes no suggestion
FETCH_WAIT_MS = 250
#: the most a fetch takes of a partition: positions are small (about 120 bytes) and every
#: worker reads every partition of two topics, so what the consumer holds fetched is kept
#: small (a sixteenth of what the worker's own batches may be)
FETCH_PARTITION_BYTES = 32 * 1024


def positions_consumer(bootstrap: list[str], security: KafkaSecurity) -> AIOKafkaConsumer:
    """The consumer the positions feed reads with (no group, no commits), with the Kafka
    security settings of every client."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_WAIT_MS,
        max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
        **security.client_kwargs(),
    )


def take_record(desk: DispatchDesk, kind: str, key: bytes | None, value: bytes | None) -> None:
    """One record of either topic into ``desk``; an unusable one is skipped, with the reason
    (never its contents: positions are live locations) in a debug line."""
    if key is None:
        return
    name = key.decode("utf-8", "replace")
    try:
        obj = None if value is None else orjson.loads(value)
        if kind == "short":
            desk.take_short(name, obj if isinstance(obj, dict) else None)
        elif obj is None:
            desk.view.remove(name)
        else:
            desk.view.put(Fix.from_json_dict(obj))
    except (orjson.JSONDecodeError, InvalidPosition) as exc:
        log.debug("positions: record skipped: %s", exc)


async def read_positions(
    desk: DispatchDesk,
    bootstrap: list[str],
    positions_topic: str,
    short_topic: str,
    should_stop: Callable[[], bool],
    *,
    security: KafkaSecurity,
) -> None:
    """Fill ``desk`` from the two topics until ``should_stop()``. For ``app.task``."""
    consumer = positions_consumer(bootstrap, security)
    kinds = {positions_topic: "position", short_topic: "short"}
    try:
        if await assign_whole(consumer, kinds, should_stop, log, "positions") is None:
            return
        while not should_stop():
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                kind = kinds[tp.topic]
                for record in records:
                    take_record(desk, kind, record.key, record.value)
            if not batch:  # read up to the end once: the view is whole
                desk.caught_up = True
    finally:
        await consumer.stop()
