"""The dispatch view at scale: the records a second the presence stage publishes to the positions
topic under its rule (docs/architecture.md, Dispatch), the memory every worker's position view
needs, and what a ranking costs, for a load of many units pinging every 10 s.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
import orjson

from geofences.dispatch import DispatchSettings, is_busy, rank
from geofences.index import HotSpotIndex
from geofences.positions import Fix
from geofences.presence import PresenceSettings
from stream.tools.bench.load import Load, ping_batches
from stream.worker.dispatch_stage import DispatchDesk
from stream.worker.presence_stage import PresenceStage

#: event time the stage runs before the rate is counted: every unit's first fix is published
#: at once, which is a start-up burst, not the steady rate
WARM_UP_MS = 60_000


@dataclass
class DispatchFigures:
    units: int
    pings_per_s: float
    records_per_s: float
    value_bytes: float
    view_bytes: int
    rank_ms_median: float
    rank_ms_max: float

    @property
    def view_bytes_per_unit(self) -> float:
        return self.view_bytes / max(1, self.units)


def measure_dispatch(load: Load, rankings: int = 200) -> DispatchFigures:
    """Run the load's pings through a presence stage (its positions rule on), counting the
    positions it publishes after :data:`WARM_UP_MS` of event time against the pings over the
    same time; fill a view with every position published, measuring its heap; then rank the
    units for ``rankings`` hot spots."""
    stage = PresenceStage(HotSpotIndex(load.collection.hotspots), PresenceSettings(), "pings")
    table: dict[bytes, bytes] = {}
    positions: list[bytes] = []
    counted_pings = counted_positions = 0
    from_ms: int | None = None
    to_ms = 0
    for batch in ping_batches(load):
        out = stage.process(batch, table.get)
        positions.extend(value for _, value in out.positions)
        now_ms = max(stage.partition_max_ts.values())
        first = stage.first_ts or now_ms
        if now_ms - first >= WARM_UP_MS:
            if from_ms is None:
                from_ms = now_ms
            else:
                counted_pings += len(batch)
                counted_positions += len(out.positions)
                to_ms = now_ms
    span_s = max(1e-3, (to_ms - (from_ms or to_ms)) / 1000)

    desk = DispatchDesk(load.collection, DispatchSettings(), 300_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for value in positions:  # as a worker reads the topic: the view keeps the latest per unit
        desk.view.put(Fix.from_json_dict(orjson.loads(value)))
    view_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    now_ms = to_ms
    rng = np.random.default_rng(7)
    hotspot_ids = [h.id for h in load.collection.hotspots]
    timings = []
    for i in rng.choice(len(hotspot_ids), min(rankings, len(hotspot_ids)), replace=False):
        hotspot_id = hotspot_ids[int(i)]
        started = time.perf_counter()
        rank(
            desk.view,
            desk.polygons[hotspot_id],
            frozenset({"police", "pcso"}),
            now_ms,
            300_000,
            lambda fix, h=hotspot_id: is_busy(fix, h, {}, now_ms),
            DispatchSettings(),
        )
        timings.append((time.perf_counter() - started) * 1000)
    return DispatchFigures(
        units=len(desk.view),
        pings_per_s=counted_pings / span_s,
        records_per_s=counted_positions / span_s,
        value_bytes=sum(map(len, positions)) / max(1, len(positions)),
        view_bytes=view_bytes,
        rank_ms_median=statistics.median(timings) if timings else 0.0,
        rank_ms_max=max(timings) if timings else 0.0,
    )
