"""Memory: the state a tracked unit costs in the presence stage, and a worker's resident memory
once it tracks many units.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from geofences.index import HotSpotIndex
from geofences.presence import PresenceSettings
from stream.tools.bench.cluster import cluster, produce, settled_rss_mb
from stream.tools.bench.load import Load, ping_batches
from stream.worker.presence_stage import PresenceStage


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


@dataclass
class WorkerMemory:
    """A worker's RSS in MB: idle before the load, settled after it, and its peak; and the
    units it tracked (its ``/healthz``)."""

    idle_mb: float
    settled_mb: float
    peak_mb: float
    units: int


def worker_memory(load: Load, workdir: Path, replay_timeout_s: float = 300.0) -> WorkerMemory:
    """One fresh event-clock worker fed the whole load as a backlog; its memory once every
    ping is counted and its RSS has stopped growing."""
    with cluster(load, 1, workdir) as (broker, procs):
        worker = procs[0]
        idle = worker.rss_mb()
        asyncio.run(produce(broker.bootstrap, "pings", load.messages, 8))
        deadline = time.monotonic() + replay_timeout_s
        while time.monotonic() < deadline:
            if worker.pings_counted() >= len(load.messages):
                break
            time.sleep(1.0)
        rss = settled_rss_mb(worker)
        peak = worker.rss_mb("VmHWM")
        tracked = (worker.health() or {}).get("units", 0)
    return WorkerMemory(idle, rss, peak, int(tracked))
