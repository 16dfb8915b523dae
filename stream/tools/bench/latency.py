"""The latency curve: one worker on the live clock, fed pings stamped with the wall clock as
they are produced, at a few steady rates, each a share of the backlog throughput the same run
measured; per rate, the time from a ping being produced to its ``enter`` being read back from
``geofence-events`` (p50 and p99).

A worker that keeps up answers a ping within its batch window and a fetch or two; as the rate
nears what it can do, its batches grow and so does the wait. The aim says how much headroom
the live clock needs: p99 within 250 ms up to 40 % of the backlog throughput.

The bench's producer shares the machine with the broker and the worker, so the rates are capped
by what it can send here, measured first into a topic no worker reads: a rate it cannot reach
would be measured at whatever it reaches instead. Between rates the worker catches up on all
that was sent, so each rate starts from an idle worker. Before the first, each unit pings about
once, unmeasured: a unit's first ping makes the worker create its state, and usually enters a
hot spot (the synthetic patrols start inside one): not the steady state the curve is about.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from geofences.timefmt import parse_rfc3339_ms
from stream.broker.tansu import FETCH_WAIT_MS
from stream.kafka import KafkaSecurity, ensure_topic, key_partition
from stream.tools.bench.cluster import BENCH_BROKER, cluster, partitions_of
from stream.tools.bench.load import Load, Message

#: the shares of the backlog throughput the curve is measured at
CURVE_SHARES = (0.10, 0.20, 0.40, 0.60)
#: the aim: p99 within AIM_P99_MS at every rate up to AIM_UP_TO_SHARE of the backlog throughput
AIM_P99_MS = 250.0
AIM_UP_TO_SHARE = 0.40
#: the one rate measured when the run has no backlog figure (its one-worker row left out)
FALLBACK_RATE = 2_000.0
#: the topic the producer's own ceiling is measured into: no worker reads it
PRODUCER_TOPIC = "bench-producer"
PARTITIONS = 8
#: pings are stamped and sent in ticks of this many seconds
TICK_S = 0.01
#: the shortest warm-up, in seconds (it lasts as long as every unit takes to ping once)
WARM_UP_MIN_S = 1.0
#: how long the worker may take to catch up on what was sent before the next rate
CATCH_UP_S = 120.0

#: (the ping's ``ts``, ms since the epoch; ms from then to its ``enter`` being read)
Sample = tuple[int, float]


@dataclass(frozen=True)
class Rate:
    """A rate of the curve: pings/s asked for, the share of the backlog throughput it stands
    for (None without a backlog figure), and whether the producer's ceiling set it instead."""

    pings_per_s: float
    share: float | None
    capped: bool = False


def curve_rates(
    backlog: float | None, producer_max: float, shares: Sequence[float] = CURVE_SHARES
) -> list[Rate]:
    """The rates to measure: each share of ``backlog`` pings/s, capped at ``producer_max``;
    once one is capped the higher shares would repeat it and are left out. Without a backlog
    figure, :data:`FALLBACK_RATE` alone (capped too)."""
    if backlog is None or not backlog > 0:
        return [Rate(min(FALLBACK_RATE, producer_max), None, producer_max < FALLBACK_RATE)]
    rates: list[Rate] = []
    for share in sorted(shares):
        wanted = share * backlog
        if wanted <= producer_max:
            rates.append(Rate(wanted, share))
        elif not (rates and rates[-1].capped):
            rates.append(Rate(producer_max, share, True))
    return rates


def percentiles(latencies_ms: Sequence[float]) -> tuple[float, float] | None:
    """(p50, p99) of the latencies, linear interpolation between samples; None if there are
    none."""
    if not latencies_ms:
        return None
    p50, p99 = np.percentile(np.asarray(latencies_ms, dtype=float), [50, 99])
    return float(p50), float(p99)


def by_window(samples: Sequence[Sample], windows: Sequence[tuple[int, int]]) -> list[list[float]]:
    """The latencies of the samples whose ping was stamped in each ``[start, end]`` window (ms),
    in the order read; a sample in none of them is dropped."""
    result: list[list[float]] = [[] for _ in windows]
    for ts_ms, latency in samples:
        for i, (start, end) in enumerate(windows):
            if start <= ts_ms <= end:
                result[i].append(latency)
                break
    return result


@dataclass
class Point:
    """One rate of the curve as measured: pings/s actually sent, and the latencies."""

    rate: Rate
    sent_per_s: float
    latencies_ms: list[float]

    @property
    def within_aim(self) -> bool:
        """Whether the aim covers this rate (every rate, without a backlog figure)."""
        return self.rate.share is None or self.rate.share <= AIM_UP_TO_SHARE + 1e-9


@dataclass
class Curve:
    """The backlog throughput the rates came from (None: none in this run), the producer's
    ceiling here, and a point per rate, lowest first."""

    backlog: float | None
    producer_max: float
    points: list[Point]

    def aim_met(self) -> bool | None:
        """Whether p99 stays within :data:`AIM_P99_MS` at every rate the aim covers; None when
        one of them has no figure (no enters read)."""
        figures = [percentiles(p.latencies_ms) for p in self.points if p.within_aim]
        if not figures or any(f is None for f in figures):
            return None
        return all(f[1] <= AIM_P99_MS for f in figures if f is not None)

    def aim_capped(self) -> bool:
        """Whether the producer's ceiling, not the share, set a rate the aim covers: the aim
        was then checked only up to that ceiling."""
        return any(p.rate.capped for p in self.points if p.within_aim)


def routed_forever(messages: Sequence[Message], partitions: int) -> Iterator[tuple[int, Message]]:
    """The messages with their partitions (as :func:`~stream.tools.bench.load.partitioned`),
    from the first again after the last, without end."""
    cache: dict[bytes, int] = {}
    while True:
        for key, value in messages:
            partition = cache.get(key)
            if partition is None:
                partition = cache[key] = key_partition(key, partitions)
            yield partition, (key, value)


async def send_at_rate(
    producer: Any,
    topic: str,
    source: Iterator[tuple[int, Message]],
    rate: float | None,
    seconds: float,
    on_sent: Callable[[int], object] = lambda count: None,
) -> tuple[int, float]:
    """Send pings from ``source`` to ``topic``, ``rate`` a second (as fast as the client can
    when None) for ``seconds``, in ticks of :data:`TICK_S`: every ping of a tick is stamped
    with the wall clock as the tick starts and goes out in one record batch per partition;
    ``on_sent`` is told each tick's count. Returns the pings sent and the seconds until the
    broker had them all."""
    per_tick = max(1, round(rate * TICK_S)) if rate is not None else 1000
    total = round(rate * seconds) if rate is not None else math.inf
    started = time.perf_counter()
    delivered: list[Any] = []
    sent = 0
    while sent < total and (rate is not None or time.perf_counter() - started < seconds):
        count = int(min(per_tick, total - sent))
        now_s = time.time_ns() // 1_000_000 / 1000
        batches: dict[int, Any] = {}
        for partition, (key, value) in itertools.islice(source, count):
            ping = orjson.loads(value)
            ping["ts"] = now_s
            payload = orjson.dumps(ping)
            batch = batches.get(partition)
            if batch is None or batch.append(key=key, value=payload, timestamp=None) is None:
                if batch is not None:
                    delivered.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=payload, timestamp=None)
        for partition, batch in batches.items():
            delivered.append(await producer.send_batch(batch, topic, partition=partition))
        sent += count
        on_sent(count)
        if len(delivered) > 4096:  # a long run: keep only what the broker has not acked yet
            for future in delivered:
                if future.done():
                    future.result()  # a failed delivery is raised here, not dropped
            delivered = [future for future in delivered if not future.done()]
        if rate is not None:
            due = started + sent / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        else:
            await asyncio.sleep(0)
    await asyncio.gather(*delivered)
    return sent, time.perf_counter() - started


async def enter_consumer(bootstrap: str, topic: str, security: KafkaSecurity = BENCH_BROKER) -> Any:
    """A started consumer assigned every partition of the geofence events ``topic``, from its
    end: what :func:`read_enters` reads."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    # Tansu holds a Fetch for its whole wait when records arrive (stream/broker/tansu.py)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_WAIT_MS,
        **security.client_kwargs(),
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    return consumer


async def read_enters(consumer: Any, samples: list[Sample], stop: asyncio.Event) -> None:
    """Until ``stop`` is set, append a sample to ``samples`` for each ``enter`` read: its
    ping's ``ts`` (stamped as the ping was produced) and the ms from then to now."""
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=20)
        now_ms = time.time() * 1000
        for records in batch.values():
            for record in records:
                event = orjson.loads(record.value)
                if event["type"] == "enter":
                    ts_ms = parse_rfc3339_ms(event["ts"])
                    samples.append((ts_ms, now_ms - ts_ms))


async def _curve(
    bootstrap: str,
    load: Load,
    backlog: float | None,
    seconds: float,
    calibrate_s: float,
    counted: Callable[[], int],
) -> Curve:
    from aiokafka import AIOKafkaProducer

    await ensure_topic(f"kafka://{bootstrap}", PRODUCER_TOPIC, PARTITIONS, security=BENCH_BROKER)
    consumer = await enter_consumer(bootstrap, "geofence-events")
    samples: list[Sample] = []
    stop = asyncio.Event()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=1, acks=1, **BENCH_BROKER.client_kwargs()
    )
    await producer.start()
    reader = asyncio.create_task(read_enters(consumer, samples, stop))
    source = routed_forever(load.messages, PARTITIONS)
    try:
        sent, elapsed = await send_at_rate(producer, PRODUCER_TOPIC, source, None, calibrate_s)
        producer_max = sent / elapsed
        rates = curve_rates(backlog, producer_max)
        total = 0

        async def send_and_catch_up(rate: float, seconds: float) -> tuple[int, int, float]:
            """Send at ``rate`` for ``seconds``, then wait for the worker to count all that
            was sent; returns the window the pings were stamped in, and the rate reached."""
            nonlocal total
            start_ms = time.time_ns() // 1_000_000
            sent, elapsed = await send_at_rate(producer, "pings", source, rate, seconds)
            end_ms = time.time_ns() // 1_000_000
            total += sent
            deadline = time.monotonic() + CATCH_UP_S
            while await asyncio.to_thread(counted) < total and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # the last enters read back
            return start_ms, end_ms, sent / elapsed

        lowest = rates[0].pings_per_s
        await send_and_catch_up(lowest, max(WARM_UP_MIN_S, load.units / lowest))
        windows: list[tuple[int, int]] = []
        sent_per_s: list[float] = []
        for rate in rates:
            start_ms, end_ms, reached = await send_and_catch_up(rate.pings_per_s, seconds)
            windows.append((start_ms, end_ms))
            sent_per_s.append(reached)
    finally:
        stop.set()
        await reader
        await producer.stop()
        await consumer.stop()
    latencies = by_window(samples, windows)
    points = [Point(r, s, ms) for r, s, ms in zip(rates, sent_per_s, latencies, strict=True)]
    return Curve(backlog, producer_max, points)


def run_latency_curve(
    load: Load,
    workdir: Path,
    backlog: float | None,
    seconds: float,
    transport: str = "kafka",
    calibrate_s: float = 2.0,
) -> Curve:
    """The curve on a fresh broker and one fresh live-clock worker: ``seconds`` at each rate
    of :func:`curve_rates` (from ``backlog`` pings/s), after ``calibrate_s`` measuring the
    producer's ceiling."""
    with cluster(load, 1, workdir, clock="live", transport=transport) as (broker, procs):
        return asyncio.run(
            _curve(broker.bootstrap, load, backlog, seconds, calibrate_s, procs[0].pings_counted)
        )
