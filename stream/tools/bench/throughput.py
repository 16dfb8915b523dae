"""End-to-end throughput: the whole load replayed as a backlog into one worker, or two on the
same 8 partitions, timed from the first ping handed to the broker to the last event written
out, with the output compared with the reference.

Beside the rate, each run reports the CPU a ping costs the workers, the broker and the bench's
own clients over the same span (steadier than the rate on a shared machine), and the one-worker
run the rate of a bare aiokafka consumer that only decodes the pings: the ceiling the worker's
consumer is measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from stream.broker.embedded import EmbeddedBroker
from stream.tools.bench.cluster import (
    BENCH_BROKER,
    cluster,
    collect,
    cpu_seconds,
    partitions_of,
    produce,
)
from stream.tools.bench.load import Load
from stream.tools.bench.reference import compare


@dataclass
class Throughput:
    """One end-to-end run: pings/s, how long it took, how the output compared with the
    reference, and how long producing the backlog took."""

    pings_per_s: float
    seconds: float
    identity: str
    produce_s: float
    ceiling: float | None = None
    #: CPU seconds per ping (user + system) of the workers together and of the broker, over
    #: the run: steadier than the rate on a shared machine
    worker_cpu_s: float | None = None
    broker_cpu_s: float | None = None
    #: the bench's own producer and collector, in the same span
    bench_cpu_s: float | None = None


async def bare_consumer_rate(bootstrap: str, topic: str, count: int) -> float:
    """A bare aiokafka consumer that only decodes every ping with orjson: pings/s."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **BENCH_BROKER.client_kwargs()
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started, seen = time.perf_counter(), 0
        loads = orjson.loads
        while seen < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
            for records in batch.values():
                for record in records:
                    loads(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def _throughput(
    broker: EmbeddedBroker,
    load: Load,
    want: dict[str, list[bytes]],
    ceiling: bool,
    worker_pids: Sequence[int] = (),
) -> Throughput:
    expected = sum(len(v) for v in want.values())
    collector = asyncio.create_task(collect(broker.bootstrap, expected))
    await asyncio.sleep(1.0)  # the collector is assigned and at the start of the topics
    pids = [*worker_pids, broker.process.pid]
    cpu_before: list[float | None] = []
    bench_before = 0.0

    def count_from_here() -> None:
        nonlocal bench_before
        cpu_before[:] = [cpu_seconds(pid) for pid in pids]
        bench_before = time.process_time()

    started = await produce(broker.bootstrap, "pings", load.messages, 8, count_from_here)
    produced = time.time()
    got, last = await collector
    cpu_after = [cpu_seconds(pid) for pid in pids]
    bench_s = time.process_time() - bench_before
    seconds = last - started
    identity = compare(want, got)
    rate = (
        await bare_consumer_rate(broker.bootstrap, "pings", len(load.messages)) if ceiling else None
    )
    result = Throughput(len(load.messages) / seconds, seconds, identity, produced - started, rate)
    if worker_pids and None not in cpu_before and None not in cpu_after:
        used = [b - a for a, b in zip(cpu_before, cpu_after, strict=True)]  # type: ignore[operator]
        count = len(load.messages)
        result.worker_cpu_s = sum(used[:-1]) / count
        result.broker_cpu_s = used[-1] / count
        result.bench_cpu_s = bench_s / count
    return result


@contextlib.contextmanager
def profiled(pid: int, profile: Path | None) -> Iterator[None]:
    """A py-spy raw profile of process ``pid`` into ``profile`` meanwhile (nothing when
    ``profile`` is None, or when py-spy is not installed: the bench extra)."""
    py_spy = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if profile is not None and py_spy is None:
        print("  (py-spy not found: no profile; install the bench extra)")
    if profile is None or py_spy is None:
        yield
        return
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            # only the thread holding the GIL: the worker's consumer thread waiting
            # for it would otherwise count as busy
            "--gil",
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(profile),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def run_throughput(
    load: Load,
    want: dict[str, list[bytes]],
    workers: int,
    workdir: Path,
    transport: str = "kafka",
    profile: Path | None = None,
) -> Throughput:
    """The load as a backlog into ``workers`` fresh workers (the first profiled when
    ``profile`` is given); the bare consumer's rate too when there is one worker."""
    with cluster(load, workers, workdir, transport=transport) as (broker, procs):
        pids = [p.pid for p in procs]
        with profiled(pids[0], profile):
            return asyncio.run(
                _throughput(broker, load, want, ceiling=workers == 1, worker_pids=pids)
            )
