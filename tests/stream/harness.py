"""Helpers for integration tests: a real worker process on the embedded broker, and a real
producer and consumer talking to it over loopback."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream.kafka import PLAINTEXT, KafkaSecurity
from stream.tools.processes import WorkerProcess
from tests.stream.schemas_check import check_records

ROOT = Path(__file__).resolve().parents[2]
#: the browser of the browser tests (Debian's chromium; playwright's own download does not work here)
CHROMIUM = Path("/usr/bin/chromium")
#: "no log path given": a test worker's log goes to ``test-artifacts/``
NO_PATH = Path()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    unkeyed_partition: int | None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        for key, value in messages:
            partition = unkeyed_partition if key is None else None
            await producer.send_and_wait(topic, value=value, key=key, partition=partition)
    finally:
        await producer.stop()


def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    unkeyed_partition: int | None = None,
) -> None:
    """Send messages one by one, in order, each acknowledged before the next. Messages without
    a key go to ``unkeyed_partition`` when given (as a gateway producing to one partition)."""
    run(_produce(bootstrap, topic, messages, unkeyed_partition))


def ping_messages(pings: Sequence[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(p["unit_id"].encode(), orjson.dumps(p)) for p in pings]


async def _consume(
    bootstrap: str,
    topic: str,
    count: int,
    timeout_s: float,
    settle_s: float,
    security: KafkaSecurity,
) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **security.client_kwargs(),
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp_records in batch.values():
                records.extend(tp_records)
            if len(records) >= count:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return records
    finally:
        await consumer.stop()


def consume(
    bootstrap: str,
    topic: str,
    count: int,
    timeout_s: float = 60.0,
    settle_s: float = 1.0,
    security: KafkaSecurity = PLAINTEXT,
) -> list[Any]:
    """Records of ``topic`` from the beginning: waits for ``count`` of them, then ``settle_s``
    more to catch any that should not be there. Values of an output topic are checked against
    its JSON Schema (``stream/schemas``)."""
    records = run(_consume(bootstrap, topic, count, timeout_s, settle_s, security))
    return check_records(topic, records)


def values(records: Sequence[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def _committed(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    # a consumer of the group that never subscribes: it only asks the coordinator
    # (AIOKafkaAdminClient's OffsetFetch does not decode Tansu's answer)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        result = {}
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            offset = await consumer.committed(TopicPartition(topic, partition))
            if offset is not None:
                result[partition] = offset
        return result
    finally:
        await consumer.stop()


def committed(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets of ``topic``, by partition (the next offset the
    group will read; a worker commits only once what it produced for the records before is
    flushed)."""
    return dict(run(_committed(bootstrap, group_id, topic)))


def wait_until(predicate: Any, timeout_s: float = 60.0, interval_s: float = 0.3) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passes; returns its last answer
    (tests assert on the condition, never on how long it took)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval_s)


@dataclass
class Worker(WorkerProcess):
    """A ``hotspot worker`` subprocess for a test: a fresh app id, logging at ``info`` (the
    tests read its log), a short session timeout, its log kept in ``test-artifacts/``."""

    app_id: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    log_path: Path = NO_PATH
    session_timeout_s: float | None = 6.0
    log_level: str | None = "info"
    cwd: Path | None = ROOT

    def __post_init__(self) -> None:
        if self.log_path == NO_PATH:
            stamp = int(time.time() * 1000)
            self.log_path = ROOT / "test-artifacts" / f"worker-{self.app_id}-{stamp}.log"

    def start(self, timeout_s: float = 90.0) -> Worker:
        """Launch the worker and wait until it is ready; killed if it does not get there."""
        self.launch()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.kill()
            raise
        return self

    def units(self) -> list[dict[str, Any]]:
        """The worker's own part of the view (``/api/local``): every unit whose partition it
        owns. (``/api/units`` merges every worker's part.)"""
        with urllib.request.urlopen(f"{self.web}/api/local", timeout=5) as response:
            return list(orjson.loads(response.read())["units"])

    def feed_events(self) -> list[dict[str, Any]]:
        """The events the worker's control-room feed has read (``/api/events``)."""
        with urllib.request.urlopen(f"{self.web}/api/events?limit=1000", timeout=5) as response:
            return list(orjson.loads(response.read())["events"])

    def units_view(self) -> list[dict[str, Any]]:
        """The worker's ``/api/units``: every worker's units, merged."""
        with urllib.request.urlopen(f"{self.web}/api/units", timeout=5) as response:
            return list(orjson.loads(response.read())["units"])

    def restored_partitions(self) -> list[set[int]]:
        """Partition sets of every rebalance the worker completed, oldest first, from its log
        line ``presence: N unit states restored for partitions [...]``."""
        if not self.log_path.exists():
            return []
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            _, marker, rest = line.partition("unit states restored for partitions [")
            if marker:
                inside = rest.split("]", 1)[0]
                found.append({int(p) for p in inside.split(",") if p.strip()})
        return found
