"""The broker and workers of a run, and the bench's own Kafka clients.

Each measurement that needs a broker starts a fresh embedded broker and its own ``hotspot
worker`` subprocesses (:class:`~stream.tools.processes.WorkerProcess`, the same command an
operator runs), so no row inherits another's topics, offsets or state. The producer builds its
record batches before the clock starts and the collector times by the records' own stamps, so
the bench's client work stays out of the figures as far as it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stream.broker.embedded import EmbeddedBroker, start_broker
from stream.control_room.feed import FEED_FETCH_WAIT_MS
from stream.kafka import PLAINTEXT
from stream.tools.bench.load import Load, Message, partitioned
from stream.tools.bench.reference import OUT_TOPICS
from stream.tools.processes import WorkerProcess, free_port
from stream.worker.faust_internals import refresh_metadata
from stream.worker.topics import MAX_BATCH_BYTES

#: the bench's clients and workers reach only the embedded broker each run starts: plain TCP
#: on loopback, whatever the caller's ``HOTSPOT_KAFKA_*`` settings
BENCH_BROKER = PLAINTEXT

#: how long a bench worker may take to be ready, and to stop after SIGTERM
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


def bench_worker(
    broker: EmbeddedBroker,
    geofences: Path,
    workdir: Path,
    app_id: str,
    clock: str = "event",
    transport: str = "kafka",
) -> WorkerProcess:
    """A worker of app ``app_id`` on ``broker`` (by ``transport``), its data and log in
    ``workdir``; not launched yet."""
    port = free_port()
    return WorkerProcess(
        f"{transport}://{broker.bootstrap}",
        app_id,
        log_path=workdir / f"worker-{port}.log",
        clock=clock,
        geofences=geofences,
        data_dir=workdir / f"data-{port}",
        session_timeout_s=10,
        web_port=port,
        cwd=workdir,
    )


@contextlib.contextmanager
def cluster(
    load: Load,
    workers: int,
    workdir: Path,
    clock: str = "event",
    transport: str = "kafka",
) -> Iterator[tuple[EmbeddedBroker, list[WorkerProcess]]]:
    """A fresh embedded broker and ``workers`` workers of one app, ready and settled."""
    broker = start_broker()
    geofences = workdir / "hotspots.geojson"
    geofences.write_bytes(load.geojson)
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    procs: list[WorkerProcess] = []
    try:
        for _ in range(workers):  # started together: they join the group in one round
            procs.append(bench_worker(broker, geofences, workdir, app_id, clock, transport))
            procs[-1].launch()
        for proc in procs:
            proc.wait_ready(READY_TIMEOUT_S)
        if workers > 1:  # every member ready at once, for a few seconds: the group settled
            settled = 0
            deadline = time.monotonic() + 120
            while settled < 6 and time.monotonic() < deadline:
                time.sleep(0.5)
                ready = all((p.health() or {}).get("ready") for p in procs)
                settled = settled + 1 if ready else 0
        yield broker, procs
    finally:
        for proc in procs:
            proc.stop(STOP_TIMEOUT_S)
        broker.stop()


def settled_rss_mb(worker: WorkerProcess, still_s: float = 3.0, most_s: float = 60.0) -> float:
    """The worker's RSS once it has stopped growing for ``still_s``: the coverage agent
    takes its records after the presence stage, so the worker's memory still grows for a few
    seconds after its last ping is counted."""
    deadline = time.monotonic() + most_s
    highest = worker.rss_mb()
    still_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - still_since < still_s:
        time.sleep(0.5)
        rss = worker.rss_mb()
        if rss > highest + 1.0:
            highest, still_since = rss, time.monotonic()
    return worker.rss_mb()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def partitions_of(consumer: Any, topic: str) -> list[int]:
    """The partitions of ``topic``, once the consumer's metadata has them."""
    for _ in range(100):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        await refresh_metadata(consumer)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no partitions for {topic}")


def built_batches(
    producer: Any, messages: Sequence[Message], partitions: int
) -> dict[int, list[Any]]:
    """The pings as record batches per partition, in order: what the trackers' gateway hands
    the broker. Built before the clock starts, so the bench's CPU in the timed span is the
    sending, not aiokafka encoding a million records in Python on the workers' cores."""
    batches: dict[int, list[Any]] = {}
    for p, (key, value) in partitioned(messages, partitions):
        built = batches.setdefault(p, [producer.create_batch()])
        if built[-1].append(key=key, value=value, timestamp=None) is None:
            built.append(producer.create_batch())
            built[-1].append(key=key, value=value, timestamp=None)
    return batches


async def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[Message],
    partitions: int,
    before_send: Callable[[], object] = lambda: None,
) -> float:
    """Send everything as fast as the client can, in order per partition, in record batches
    of up to :data:`MAX_BATCH_BYTES` built beforehand (``before_send`` is called once they
    are); returns the wall-clock time the first one was handed to the client."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=5,
        max_batch_size=MAX_BATCH_BYTES,
        **BENCH_BROKER.client_kwargs(),
    )
    await producer.start()
    try:
        built = built_batches(producer, messages, partitions)

        async def send(partition: int, batches: list[Any]) -> None:
            delivered = [await producer.send_batch(b, topic, partition=partition) for b in batches]
            await asyncio.gather(*delivered)

        before_send()
        started = time.time()
        await asyncio.gather(*(send(p, batches) for p, batches in built.items()))
        return started
    finally:
        await producer.stop()


async def collect(
    bootstrap: str, expected: int, stall_s: float = 60.0
) -> tuple[dict[str, list[bytes]], float]:
    """Read the output topics until ``expected`` events arrived (then 1 s more, for extras);
    returns the payloads per topic and the wall-clock time the last event was written out
    (the latest record timestamp: the worker's producer stamps each record as it appends it).

    Timing by the records' own stamps leaves the collector's fetch wait out of the figure, so
    it can fetch with the control room's long wait: on Tansu every Fetch costs the broker CPU,
    on the cores the workers share."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=FEED_FETCH_WAIT_MS,
        **BENCH_BROKER.client_kwargs(),
    )
    await consumer.start()
    got: dict[str, list[bytes]] = {topic: [] for topic in OUT_TOPICS}
    last_ms = 0
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in OUT_TOPICS
            for p in await partitions_of(consumer, topic)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count, settle = 0, None
        arrived = time.perf_counter()
        while True:
            batch = await consumer.getmany(timeout_ms=50, max_records=50_000)
            now = time.perf_counter()
            for tp, records in batch.items():
                got[tp.topic] += [r.value for r in records]
                last_ms = max(last_ms, max(r.timestamp for r in records))
                count += len(records)
                arrived = now
            if count >= expected:
                settle = settle or now + 1.0
                if now >= settle:
                    break
            elif now - arrived > stall_s:
                break
        return got, last_ms / 1000
    finally:
        await consumer.stop()
