"""``hotspot bench``: the performance measurements of issue 3, on synthetic load it makes itself.

Everything is seeded: hot spots (small rotated polygons around towns in England), units
patrolling between nearby hot spots (dwell, walk, now and then a tracker silence), one fix per
unit every 10 s. Each measurement starts its own embedded broker and its own worker processes
(``python -m stream.cli worker``, the same as ``hotspot worker``) and prints a table of figures
and ratios. Benchmarks are not tests: nothing here asserts a time; the only hard check is that
the worker's output is identical to the one-ping-at-a-time reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import shapely

from geofences.coverage import CoverageSettings
from geofences.hotspots import HotSpotCollection, parse_hotspots
from geofences.index import HotSpotIndex
from geofences.presence import PresenceSettings
from geofences.projection import metres_per_degree
from geofences.timefmt import parse_rfc3339_ms
from stream.broker.embedded import EmbeddedBroker, free_port, start_broker, terminate
from stream.broker.tansu import FETCH_WAIT_MS
from stream.control_room.feed import FEED_FETCH_WAIT_MS
from stream.kafka import key_partition
from stream.records import Record
from stream.worker.coverage_stage import CoverageStage, clock_message, update_messages
from stream.worker.faust_internals import refresh_metadata
from stream.worker.presence_stage import PresenceStage
from stream.worker.topics import MAX_BATCH_BYTES

ROOT = Path(__file__).resolve().parents[1]
T0_MS = 1_795_201_200_000  # 2026-11-20T19:00:00Z, inside the synthetic patrol windows
PING_EVERY_MS = 10_000
UNIT_TYPES = ("police", "pcso", "outreach", "security")
UNIT_TYPE_WEIGHTS = (0.6, 0.25, 0.1, 0.05)
OUT_TOPICS = ("geofence-events", "dwell-events")
#: the end-to-end targets' load: a replay of 1 million pings from 10,000 units
E2E_PINGS, E2E_UNITS = 1_000_000, 10_000
#: the memory target's scale: 100,000 units tracked under 300 MB RSS
MEMORY_UNITS = 100_000

Message = tuple[bytes, bytes]


# -- synthetic load --------------------------------------------------------------------------


@dataclass
class Load:
    """Hot spots and pings, in the order a recorded day would be replayed (by ``ts``)."""

    geojson: bytes
    collection: HotSpotCollection
    messages: list[Message]
    lons: np.ndarray
    lats: np.ndarray
    units: int


def make_hotspots(rng: np.random.Generator, count: int, towns: int) -> dict[str, Any]:
    """``count`` micro hot spots (40-100 m rotated squares, pentagons, hexagons) around towns."""
    town_lon = rng.uniform(-3.0, 0.5, towns)
    town_lat = rng.uniform(51.0, 54.0, towns)
    features = []
    for i in range(count):
        town = int(rng.integers(towns))
        kx, ky = metres_per_degree(float(town_lat[town]))
        cx = float(town_lon[town]) + rng.normal(0, 1200) / kx
        cy = float(town_lat[town]) + rng.normal(0, 1200) / ky
        radius, sides, turn = rng.uniform(40, 100), int(rng.integers(4, 7)), rng.uniform(0, 6.3)
        angles = turn + np.arange(sides) * 2 * math.pi / sides
        ring = [[cx + radius * math.cos(a) / kx, cy + radius * math.sin(a) / ky] for a in angles]
        ring.append(ring[0])
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "id": f"HS-{i:05d}",
                    "town": town,
                    "windows": [{"start": "18:00", "end": "23:00", "required_minutes": 20}],
                },
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _unit_path(
    rng: np.random.Generator,
    count: int,
    start: int,
    centres: np.ndarray,
    radii: np.ndarray,
    neighbours: np.ndarray,
    kx: float,
    ky: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` fixes of one unit: dwell inside a hot spot, walk to a nearby one, repeat."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    done, here = 0, start
    while done < count:
        dwell = int(rng.integers(6, 60))
        r = radii[here] * 0.6 * np.sqrt(rng.uniform(0, 1, dwell))
        a = rng.uniform(0, 2 * math.pi, dwell)
        xs.append(centres[here, 0] + r * np.cos(a) / kx)
        ys.append(centres[here, 1] + r * np.sin(a) / ky)
        nxt = int(rng.choice(neighbours[here]))
        dx = (centres[nxt, 0] - centres[here, 0]) * kx
        dy = (centres[nxt, 1] - centres[here, 1]) * ky
        steps = max(2, int(math.hypot(dx, dy) / 14.0))  # 1.4 m/s, one fix per 10 s
        f = np.arange(1, steps) / steps
        xs.append(centres[here, 0] + f * (centres[nxt, 0] - centres[here, 0]))
        ys.append(centres[here, 1] + f * (centres[nxt, 1] - centres[here, 1]))
        done += dwell + steps - 1
        here = nxt
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def make_load(seed: int, hotspots: int, units: int, pings: int, towns: int = 40) -> Load:
    rng = np.random.default_rng(seed)
    document = make_hotspots(rng, hotspots, towns)
    geojson = orjson.dumps(document)
    collection = parse_hotspots(orjson.loads(geojson))
    geometries = [h.geometry for h in collection.hotspots]
    centres = shapely.get_coordinates(shapely.centroid(np.array(geometries, dtype=object)))
    town_of = np.array([f["properties"]["town"] for f in document["features"]])
    kx, ky = metres_per_degree(52.5)
    radii = np.array([math.sqrt(shapely.area(g) / math.pi) for g in geometries]) * 111_000
    # each hot spot's nearer neighbours in its town: where a patrol goes next
    neighbours = np.empty((hotspots, 4), dtype=np.intp)
    for i in range(hotspots):
        same = np.flatnonzero(town_of == town_of[i])
        d = np.hypot(
            (centres[same, 0] - centres[i, 0]) * kx, (centres[same, 1] - centres[i, 1]) * ky
        )
        near = same[np.argsort(d)][1:5]
        neighbours[i] = np.resize(near if near.size else np.array([i]), 4)

    per_unit = max(1, math.ceil(pings / units * 1.08))  # silences drop some; cut to ``pings``
    unit_ids, ts, lons, lats, accuracy, types = [], [], [], [], [], []
    type_of = rng.choice(len(UNIT_TYPES), units, p=UNIT_TYPE_WEIGHTS)
    for u in range(units):
        x, y = _unit_path(
            rng, per_unit, int(rng.integers(hotspots)), centres, radii, neighbours, kx, ky
        )
        x = x + rng.normal(0, 4, per_unit) / kx  # GPS noise
        y = y + rng.normal(0, 4, per_unit) / ky
        t = T0_MS + int(rng.integers(PING_EVERY_MS)) + np.arange(per_unit) * PING_EVERY_MS
        keep = np.ones(per_unit, dtype=bool)
        if per_unit > 80 and rng.uniform() < 0.1:  # the tracker goes indoors for 6-10 minutes
            gap = int(rng.integers(36, 60))
            first = int(rng.integers(1, per_unit - gap))
            keep[first : first + gap] = False
        acc = np.where(rng.uniform(0, 1, per_unit) < 0.02, 80.0, rng.uniform(3, 25, per_unit))
        n = int(keep.sum())
        unit_ids.append(np.full(n, u))
        ts.append(t[keep])
        lons.append(x[keep])
        lats.append(y[keep])
        accuracy.append(acc[keep])
        types.append(np.full(n, type_of[u]))
    unit_arr, ts_arr = np.concatenate(unit_ids), np.concatenate(ts)
    order = np.lexsort((unit_arr, ts_arr))[:pings]
    unit_arr, ts_arr = unit_arr[order], ts_arr[order]
    lon_arr, lat_arr = np.concatenate(lons)[order], np.concatenate(lats)[order]
    acc_arr, type_arr = np.concatenate(accuracy)[order], np.concatenate(types)[order]
    stamps = np.datetime_as_string(ts_arr.astype("datetime64[ms]"), unit="ms")
    names = [f"unit-{u:06d}" for u in range(units)]
    messages = []
    for u, stamp, lon, lat, acc, kind in zip(
        unit_arr.tolist(),
        stamps.tolist(),
        lon_arr.tolist(),
        lat_arr.tolist(),
        np.round(acc_arr, 1).tolist(),
        type_arr.tolist(),
        strict=True,
    ):
        value = {
            "unit_id": names[u],
            "ts": stamp + "Z",
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "accuracy_m": acc,
            "unit_type": UNIT_TYPES[kind],
        }
        messages.append((names[u].encode(), orjson.dumps(value)))
    return Load(geojson, collection, messages, lon_arr, lat_arr, units)


# -- the one-ping-at-a-time reference ---------------------------------------------------------


def partitioned(messages: Sequence[Message], partitions: int) -> list[tuple[int, Message]]:
    cache: dict[bytes, int] = {}
    result = []
    for key, value in messages:
        p = cache.get(key)
        if p is None:
            p = cache[key] = key_partition(key, partitions)
        result.append((p, (key, value)))
    return result


def reference_events(load: Load, partitions: int) -> dict[str, list[bytes]]:
    """Every event of the load, one ping at a time through the presence stage with the event
    clock after each (what a slow replay gives): the output the worker must reproduce."""
    stage = PresenceStage(HotSpotIndex(load.collection.hotspots), PresenceSettings(), "pings")
    table: dict[bytes, bytes] = {}
    events: dict[str, list[bytes]] = {topic: [] for topic in OUT_TOPICS}
    offsets = [0] * partitions
    waiting = set(range(partitions))
    for p, (key, value) in partitioned(load.messages, partitions):
        out = stage.process([Record("pings", p, offsets[p], key, value)], table.get)
        offsets[p] += 1
        waiting.discard(p)
        if not waiting:
            watermark = stage.watermark_ms()
            if watermark is not None:
                stage.expire(watermark, range(partitions), out)
        table.update({k: v for k, (_, v) in stage.take_writes().items()})
        events["geofence-events"] += [v for _, v in out.geofence_events]
        events["dwell-events"] += [v for _, v in out.dwell_events]
    return events


def compare(want: dict[str, list[bytes]], got: dict[str, list[bytes]]) -> str:
    """ "identical", or what differs. Same events (ids, fields, bytes) and, per unit, the same
    order; a redelivery after a rebalance may repeat an event (same id): counted apart."""
    problems = []
    for topic in OUT_TOPICS:
        distinct = list(dict.fromkeys(got[topic]))
        if sorted(distinct) != sorted(want[topic]):
            missing = len(set(want[topic]) - set(distinct))
            extra = len(set(distinct) - set(want[topic]))
            problems.append(f"{topic}: {missing} missing, {extra} unexpected")
            continue
        if _per_unit(distinct) != _per_unit(want[topic]):
            problems.append(f"{topic}: per-unit order differs")
        if len(distinct) != len(got[topic]):
            problems.append(f"{topic}: {len(got[topic]) - len(distinct)} redelivered duplicates")
    return "identical" if not problems else "; ".join(problems)


def _per_unit(payloads: Sequence[bytes]) -> dict[tuple[str, str], list[bytes]]:
    """Events by (unit, hot spot), in order: the output topics are keyed by hot spot, so a
    unit's events in different hot spots may sit in different partitions."""
    result: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for payload in payloads:
        event = orjson.loads(payload)
        result[(event["unit_id"], event["hotspot_id"])].append(payload)
    return dict(result)


async def _partitions(consumer: Any, topic: str) -> list[int]:
    for _ in range(100):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        await refresh_metadata(consumer)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no partitions for {topic}")


# -- processes --------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """One ``hotspot worker`` subprocess."""

    broker: EmbeddedBroker
    geofences: Path
    workdir: Path
    app_id: str
    clock: str = "event"
    transport: str = "kafka"
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = dict(os.environ)
        env.update(
            HOTSPOT_BROKER=f"{self.transport}://{self.broker.bootstrap}",
            HOTSPOT_APP_ID=self.app_id,
            HOTSPOT_CLOCK=self.clock,
            HOTSPOT_WEB_PORT=str(self.web_port),
            HOTSPOT_GEOFENCES=str(self.geofences),
            HOTSPOT_DATA_DIR=str(self.workdir / f"data-{self.web_port}"),
            HOTSPOT_SESSION_TIMEOUT_S="10",
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        log = (self.workdir / f"worker-{self.web_port}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        return self

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.web_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(orjson.loads(response.read()))
        except OSError:
            return None

    def pings_counted(self) -> int:
        """Pings the worker has processed (its ``hotspot_pings_total``, every outcome)."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return 0
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("hotspot_pings_total{")
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_tail()}")
            health = self.health()
            if health and health.get("ready"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready: {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.workdir / f"worker-{self.web_port}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-15:])

    def rss_mb(self, field: str = "VmRSS") -> float:
        """The worker's resident memory now, or its peak so far with ``field="VmHWM"``."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def settled_rss_mb(self, still_s: float = 3.0, most_s: float = 60.0) -> float:
        """The worker's RSS once it has stopped growing for ``still_s``: the coverage agent
        takes its records after the presence stage, and the worker's memory grows for a few
        seconds after its last ping is counted (238 -> 314 MB in one run)."""
        deadline = time.monotonic() + most_s
        highest = self.rss_mb()
        still_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - still_since < still_s:
            time.sleep(0.5)
            rss = self.rss_mb()
            if rss > highest + 1.0:
                highest, still_since = rss, time.monotonic()
        return self.rss_mb()

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 20.0)


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
            procs.append(WorkerProcess(broker, geofences, workdir, app_id, clock, transport))
            procs[-1].start()
        for proc in procs:
            proc.wait_ready()
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
            proc.stop()
        broker.stop()


def _built_batches(
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


async def _produce(
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
        bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_batch_size=MAX_BATCH_BYTES
    )
    await producer.start()
    try:
        built = _built_batches(producer, messages, partitions)

        async def send(partition: int, batches: list[Any]) -> None:
            delivered = [await producer.send_batch(b, topic, partition=partition) for b in batches]
            await asyncio.gather(*delivered)

        before_send()
        started = time.time()
        await asyncio.gather(*(send(p, batches) for p, batches in built.items()))
        return started
    finally:
        await producer.stop()


async def _collect(
    bootstrap: str, expected: int, stall_s: float = 60.0
) -> tuple[dict[str, list[bytes]], float]:
    """Read the output topics until ``expected`` events arrived (then 1 s more, for extras);
    returns the payloads per topic and the wall-clock time the last event was written out
    (the latest record timestamp: the worker's producer stamps each record as it appends it).

    Timing by the records' own stamps leaves the collector's fetch wait out of the figure, so
    it can fetch with the control room's long wait: on Tansu every Fetch costs the broker
    about a millisecond of CPU, on the cores the workers share (README: Performance)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FEED_FETCH_WAIT_MS
    )
    await consumer.start()
    got: dict[str, list[bytes]] = {topic: [] for topic in OUT_TOPICS}
    last_ms = 0
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in OUT_TOPICS
            for p in await _partitions(consumer, topic)
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


async def _ceiling(bootstrap: str, topic: str, count: int) -> float:
    """A bare aiokafka consumer that only decodes every ping with orjson: pings/s."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
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


@dataclass
class Throughput:
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

    def cpu_text(self) -> str:
        if self.worker_cpu_s is None or self.broker_cpu_s is None or self.bench_cpu_s is None:
            return ""
        return (
            f"; CPU a ping: workers {self.worker_cpu_s * 1e6:.1f} µs, "
            f"broker {self.broker_cpu_s * 1e6:.1f} µs, bench client {self.bench_cpu_s * 1e6:.1f} µs"
        )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _throughput(
    broker: EmbeddedBroker,
    load: Load,
    want: dict[str, list[bytes]],
    ceiling: bool,
    worker_pids: Sequence[int] = (),
) -> Throughput:
    expected = sum(len(v) for v in want.values())
    collector = asyncio.create_task(_collect(broker.bootstrap, expected))
    await asyncio.sleep(1.0)  # the collector is assigned and at the start of the topics
    pids = [*worker_pids, broker.process.pid]
    cpu_before: list[float | None] = []
    bench_before = 0.0

    def count_from_here() -> None:
        nonlocal bench_before
        cpu_before[:] = [cpu_seconds(pid) for pid in pids]
        bench_before = time.process_time()

    started = await _produce(broker.bootstrap, "pings", load.messages, 8, count_from_here)
    produced = time.time()
    got, last = await collector
    cpu_after = [cpu_seconds(pid) for pid in pids]
    bench_s = time.process_time() - bench_before
    seconds = last - started
    identity = compare(want, got)
    rate = await _ceiling(broker.bootstrap, "pings", len(load.messages)) if ceiling else None
    result = Throughput(len(load.messages) / seconds, seconds, identity, produced - started, rate)
    if worker_pids and None not in cpu_before and None not in cpu_after:
        used = [b - a for a, b in zip(cpu_before, cpu_after, strict=True)]  # type: ignore[operator]
        count = len(load.messages)
        result.worker_cpu_s = sum(used[:-1]) / count
        result.broker_cpu_s = used[-1] / count
        result.bench_cpu_s = bench_s / count
    return result


def run_throughput(
    load: Load,
    want: dict[str, list[bytes]],
    workers: int,
    workdir: Path,
    transport: str = "kafka",
    profile: Path | None = None,
) -> Throughput:
    with cluster(load, workers, workdir, transport=transport) as (broker, procs):
        spy = None
        py_spy = shutil.which(
            "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        )
        if profile is not None and py_spy is None:
            print("  (py-spy not found: no profile; install the bench extra)")
        if profile is not None and py_spy is not None:
            assert procs[0].process is not None
            spy = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(procs[0].process.pid),
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
        pids = [p.process.pid for p in procs if p.process is not None]
        try:
            return asyncio.run(
                _throughput(broker, load, want, ceiling=workers == 1, worker_pids=pids)
            )
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)


async def _latency(bootstrap: str, load: Load, rate: float, seconds: float) -> list[float]:
    """Pings stamped with the wall clock at ``rate`` per second; the time from each enter's
    ping being produced (its ``ts``) to the enter being consumed, in ms."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    # Tansu holds a Fetch for its whole wait when records arrive (stream/broker/tansu.py)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS
    )
    await consumer.start()
    tps = [
        TopicPartition("geofence-events", p) for p in await _partitions(consumer, "geofence-events")
    ]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    latencies: list[float] = []
    stop = asyncio.Event()

    async def read() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=20)
            now_ms = time.time() * 1000
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value)
                    if event["type"] == "enter":
                        latencies.append(now_ms - parse_rfc3339_ms(event["ts"]))

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    await producer.start()
    reader = asyncio.create_task(read())
    try:
        total = int(rate * seconds)
        tick = 0.01
        per_tick = max(1, int(rate * tick))
        started = time.perf_counter()
        for i in range(0, total, per_tick):
            now_ms = int(time.time() * 1000)
            for key, value in load.messages[i : i + per_tick]:
                ping = orjson.loads(value)
                ping["ts"] = now_ms / 1000
                await producer.send("pings", orjson.dumps(ping), key=key)
            due = started + (i + per_tick) / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await producer.flush()
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await reader
        await producer.stop()
        await consumer.stop()
    return latencies


# -- kernel and memory ------------------------------------------------------------------------


@dataclass
class Kernel:
    batch_points_per_s: float
    all_points_per_s: float
    naive_points_per_s: float
    strtree_points_per_s: float
    same_pairs: bool


def ping_batches(load: Load, partitions: int = 8, size: int = 2000) -> list[list[Record]]:
    """The load's pings as consumed records, routed to ``partitions``, in batches of ``size``."""
    routed = partitioned(load.messages, partitions)
    records = [Record("pings", p, i, k, v) for i, (p, (k, v)) in enumerate(routed)]
    return [records[i : i + size] for i in range(0, len(records), size)]


#: ``gc.get_threshold()`` of a fresh interpreter
PYTHON_GC_THRESHOLDS = (700, 10, 10)


@contextlib.contextmanager
def _gc_thresholds(thresholds: tuple[int, int, int]) -> Iterator[None]:
    """The collector's thresholds (``gc.set_threshold``) set to ``thresholds`` meanwhile."""
    import gc

    saved = gc.get_threshold()
    gc.collect()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def stage_pings_per_s(load: Load, gc_thresholds: tuple[int, int, int]) -> float:
    """The presence stage alone, in process, in batches of 2,000, with the collector's
    thresholds ``gc_thresholds`` (the worker's or Python's)."""
    stage = PresenceStage(HotSpotIndex(load.collection.hotspots), PresenceSettings(), "pings")
    table: dict[bytes, bytes] = {}
    batches = ping_batches(load)
    with _gc_thresholds(gc_thresholds):
        started = time.perf_counter()
        for batch in batches:
            stage.process(batch, table.get)
            table.update({k: v for k, (_, v) in stage.take_writes().items()})
        return len(load.messages) / (time.perf_counter() - started)


def coverage_pings_per_s(load: Load, gc_thresholds: tuple[int, int, int]) -> tuple[float, float]:
    """The coverage stage alone, in process, on the event clock: fed, batch by batch, the visit
    updates and clock records the presence stage makes of the load in batches of 2,000 (made
    beforehand, untimed). The first batch, which builds and primes every ledger (as the worker
    does before it is ready), is not timed either. Returns (pings/s, visit updates/s)."""
    partitions = 8
    presence = PresenceStage(HotSpotIndex(load.collection.hotspots), PresenceSettings(), "pings")
    coverage = CoverageStage(load.collection, CoverageSettings(), partitions)
    table: dict[bytes, bytes] = {}
    batches: list[tuple[list[Record], int, int]] = []
    for pings in ping_batches(load, partitions):
        out = presence.process(pings, table.get)
        watermark = presence.watermark_ms()
        if watermark is not None:
            presence.expire(watermark, range(partitions), out)
        table.update({k: v for k, (_, v) in presence.take_writes().items()})
        clock = clock_message(presence.watermark_parts(), presence.first_ts)
        messages = update_messages(out.visit_updates, coverage.partition_of)
        messages += [(p, clock) for p in range(partitions)]
        records = [Record("visits", p, 0, None, value) for p, value in messages]
        batches.append((records, len(pings), len(out.visit_updates)))
    store: dict[bytes, bytes] = {}

    def run(records: list[Record]) -> None:
        coverage.process(records, store, None, range(partitions))
        for key, (_, value) in coverage.take_writes().items():
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value

    run(batches[0][0])
    with _gc_thresholds(gc_thresholds):
        started = time.perf_counter()
        for records, _, _ in batches[1:]:
            run(records)
        elapsed = time.perf_counter() - started
    return (
        sum(n for _, n, _ in batches[1:]) / elapsed,
        sum(n for _, _, n in batches[1:]) / elapsed,
    )


def run_kernel(load: Load, sample: int) -> Kernel:
    """The grid index on batches of 2,000 points and on all at once, against a per-point loop
    over every (prepared) shapely polygon and a vectorised STRtree, one core, same run."""
    index = HotSpotIndex(load.collection.hotspots)
    lons, lats = load.lons, load.lats
    index.match(lons[:2000], lats[:2000])  # warm-up

    def best(fn: Any, repeat: int = 3) -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    def batched() -> None:
        for i in range(0, len(lons), 2000):
            index.match(lons[i : i + 2000], lats[i : i + 2000])

    batch_rate = len(lons) / best(batched)
    all_rate = len(lons) / best(lambda: index.match(lons, lats))

    polygons = [h.geometry for h in load.collection.hotspots]
    for polygon in polygons:
        shapely.prepare(polygon)
    chosen = np.random.default_rng(1).choice(len(lons), sample, replace=False)
    naive: list[tuple[int, int]] = []
    started = time.perf_counter()
    for i in chosen.tolist():
        point = shapely.Point(lons[i], lats[i])
        naive.extend((i, j) for j, polygon in enumerate(polygons) if polygon.intersects(point))
    naive_rate = sample / (time.perf_counter() - started)

    tree = shapely.STRtree(polygons)

    def strtree() -> None:
        tree.query(shapely.points(lons, lats), predicate="intersects")

    strtree_rate = len(lons) / best(strtree, 1)
    point_idx, hotspot_idx = index.match(lons[chosen], lats[chosen])
    mine = sorted((int(chosen[p]), int(h)) for p, h in zip(point_idx, hotspot_idx, strict=True))
    return Kernel(batch_rate, all_rate, naive_rate, strtree_rate, mine == sorted(naive))


def state_bytes_per_unit(load: Load) -> tuple[float, float]:
    """In the stage: Python heap per tracked unit (states, caches, the table's bytes), and
    the changelog value size per unit."""
    stage = PresenceStage(HotSpotIndex(load.collection.hotspots), PresenceSettings(), "pings")
    table: dict[bytes, bytes] = {}
    batches = ping_batches(load)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for batch in batches:
        stage.process(batch, table.get)
        table.update({k: v for k, (_, v) in stage.take_writes().items()})
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    units = len(stage.states)
    return used / units, sum(len(v) for v in table.values()) / len(table)


# -- the command ------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    figure: str
    target: str = ""
    verdict: str = ""


def _fmt(rate: float) -> str:
    return f"{rate:,.0f}"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import aiokafka
    import faust

    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"faust-streaming {faust.__version__}, aiokafka {aiokafka.__version__}, "
        f"shapely {shapely.__version__}; broker: embedded Tansu (memory)"
    )


def _verdict(ok: bool, smaller: bool = False) -> str:
    """``smaller``: measured on a smaller load than the target names (``--quick``), so the
    verdict only says how the run compared; the full size decides."""
    return ("met" if ok else "MISSED") + (" (smaller load)" if smaller else "")


def run_bench(args: argparse.Namespace) -> int:
    quick = args.quick
    pings = args.pings or (200_000 if quick else E2E_PINGS)
    units = args.units or (2_000 if quick else E2E_UNITS)
    mem_units = args.memory_units or (20_000 if quick else MEMORY_UNITS)
    skip = set(args.skip or [])
    smaller = (pings, units) != (E2E_PINGS, E2E_UNITS)
    rows: list[Row] = []
    print(f"hotspot bench: {machine()}", flush=True)

    def note(row: Row) -> None:
        rows.append(row)
        print(f"  {row.what}: {row.figure} {row.verdict}", flush=True)

    started = time.perf_counter()
    load = make_load(args.seed, args.hotspots, units, pings)
    print(
        f"  load: {len(load.messages):,} pings, {units:,} units, {args.hotspots:,} hot spots "
        f"(seed {args.seed}), made in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    if "kernel" not in skip:
        k = run_kernel(load, 100 if quick else 300)
        ratio = k.batch_points_per_s / k.naive_points_per_s
        note(
            Row(
                "matching kernel, batches of 2,000 vs 2,000 hot spots, one core",
                f"{_fmt(k.batch_points_per_s)} points/s (all at once: {_fmt(k.all_points_per_s)})",
                "≥ 3,000,000 points/s",
                _verdict(k.batch_points_per_s >= 3e6),
            )
        )
        note(
            Row(
                "  vs a per-point loop over shapely polygons (same run)",
                f"{_fmt(k.naive_points_per_s)} points/s: {ratio:,.0f}× "
                f"(vectorised STRtree: {_fmt(k.strtree_points_per_s)}/s); same pairs: {k.same_pairs}",
                "≥ 1,000×",
                _verdict(ratio >= 1000 and k.same_pairs),
            )
        )

    if "stage" not in skip:
        from stream.worker.gc_tuning import GC_THRESHOLDS

        tuned = stage_pings_per_s(load, GC_THRESHOLDS)
        default = stage_pings_per_s(load, PYTHON_GC_THRESHOLDS)
        note(
            Row(
                "presence stage alone, in process, batches of 2,000",
                f"{_fmt(tuned)} pings/s; with Python's default GC thresholds "
                f"{_fmt(default)}: {tuned / default:.2f}×",
                "(where the worker's time goes)",
                "",
            )
        )
        pings_rate, updates_rate = coverage_pings_per_s(load, GC_THRESHOLDS)
        note(
            Row(
                "coverage stage alone, in process, fed the presence stage's visit updates",
                f"{_fmt(pings_rate)} pings/s ({_fmt(updates_rate)} visit updates/s)",
                "(where the worker's time goes)",
                "",
            )
        )

    workdir = Path(tempfile.mkdtemp(prefix="hotspot-bench-"))
    try:
        want: dict[str, list[bytes]] | None = None
        if not {"e2e", "scale"} <= skip:
            started = time.perf_counter()
            want = reference_events(load, 8)
            print(
                f"  reference (one ping at a time): {sum(map(len, want.values())):,} events "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        one: Throughput | None = None
        if "e2e" not in skip:
            assert want is not None
            one = run_throughput(
                load, want, 1, workdir, args.transport, Path(args.profile) if args.profile else None
            )
            note(
                Row(
                    f"end to end, one worker, {len(load.messages):,} pings / {units:,} units",
                    f"{_fmt(one.pings_per_s)} pings/s ({one.seconds:.1f} s; producing took "
                    f"{one.produce_s:.1f} s); output {one.identity}{one.cpu_text()}",
                    "≥ 36,000 pings/s, identical",
                    _verdict(one.pings_per_s >= 36_000 and one.identity == "identical", smaller),
                )
            )
            if one.ceiling:
                ratio = one.pings_per_s / one.ceiling
                note(
                    Row(
                        "  vs a bare aiokafka consumer decoding the pings (same run)",
                        f"{_fmt(one.ceiling)} pings/s: ratio {ratio:.2f}",
                        "moonshot ≥ 0.30",
                        _verdict(ratio >= 0.30, smaller),
                    )
                )
        if "scale" not in skip:
            assert want is not None
            two = run_throughput(load, want, 2, workdir, args.transport)
            ratio = two.pings_per_s / one.pings_per_s if one else float("nan")
            note(
                Row(
                    "scale-out: 2 workers on 8 partitions",
                    f"{_fmt(two.pings_per_s)} pings/s, {ratio:.2f}× one worker; "
                    f"output {two.identity}{two.cpu_text()}",
                    "≥ 1.7×, identical",
                    _verdict(ratio >= 1.7 and two.identity.startswith("identical"), smaller),
                )
            )
        if "latency" not in skip:
            seconds = 6.0 if quick else 30.0
            with cluster(load, 1, workdir, clock="live", transport=args.transport) as (
                broker,
                _,
            ):
                latencies = asyncio.run(_latency(broker.bootstrap, load, 2000.0, seconds))
            if latencies:
                p50, p99 = np.percentile(latencies, [50, 99])
                note(
                    Row(
                        "latency, live mode at 2,000 pings/s, ping produced → enter consumed",
                        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(latencies)} enters)",
                        "p99 ≤ 250 ms",
                        _verdict(p99 <= 250),
                    )
                )
        if "memory" not in skip:
            mem_load = make_load(args.seed + 1, args.hotspots, mem_units, 2 * mem_units)
            heap, value = state_bytes_per_unit(mem_load)
            note(
                Row(
                    "state per tracked unit (stage heap incl. table; changelog value)",
                    f"{heap:,.0f} B in memory; {value:,.0f} B per changelog value",
                    "≤ 1 KiB",
                    _verdict(heap <= 1024),
                )
            )
            with cluster(mem_load, 1, workdir) as (broker, procs):
                idle = procs[0].rss_mb()
                asyncio.run(_produce(broker.bootstrap, "pings", mem_load.messages, 8))
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    if procs[0].pings_counted() >= len(mem_load.messages):
                        break
                    time.sleep(1.0)
                rss = procs[0].settled_rss_mb()
                peak = procs[0].rss_mb("VmHWM")
                tracked = (procs[0].health() or {}).get("units", 0)
            note(
                Row(
                    f"worker RSS with {tracked:,} units tracked, settled after the replay",
                    f"{rss:,.0f} MB (peak {peak:,.0f} MB; idle worker: {idle:,.0f} MB)",
                    f"< 300 MB at {MEMORY_UNITS:,} units",
                    _verdict(rss < 300 and tracked >= mem_units, mem_units < MEMORY_UNITS),
                )
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("| measurement | figure | target | |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.what.strip()} | {row.figure} | {row.target} | {row.verdict} |")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a short version: smaller loads (about 2 minutes here)"
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--pings", type=int, default=None, help=f"default {E2E_PINGS:,} (quick 200,000)"
    )
    parser.add_argument(
        "--units", type=int, default=None, help=f"default {E2E_UNITS:,} (quick 2,000)"
    )
    parser.add_argument("--hotspots", type=int, default=2000)
    parser.add_argument(
        "--memory-units",
        type=int,
        default=None,
        help=f"units tracked in the memory rows, default {MEMORY_UNITS:,} (quick 20,000)",
    )
    parser.add_argument(
        "--transport", choices=("kafka", "confluent"), default="kafka", help="Faust transport"
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        choices=("kernel", "stage", "e2e", "scale", "latency", "memory"),
        help="measurements to leave out",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="py-spy raw profile (GIL holder only) of the one-worker run to this file",
    )
