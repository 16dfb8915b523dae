"""The measurements made in the bench's own process, without a broker: the matching kernel
against the obvious alternatives, and each stage of the worker alone. They say where a
worker's time goes; the end-to-end rows say what it adds up to.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from geofences.coverage import CoverageSettings
from geofences.index import HotSpotIndex
from geofences.presence import PresenceSettings
from stream.records import Record
from stream.tools.bench.load import Load, ping_batches
from stream.worker.coverage_stage import CoverageStage, clock_message, update_messages
from stream.worker.presence_stage import PresenceStage


@dataclass
class Kernel:
    """Points matched per second each way, and whether the grid index found the same
    (point, hot spot) pairs as the per-point loop on its sample."""

    batch_points_per_s: float
    all_points_per_s: float
    naive_points_per_s: float
    strtree_points_per_s: float
    same_pairs: bool


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
