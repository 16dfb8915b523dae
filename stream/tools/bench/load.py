"""The bench's synthetic load, seeded: hot spots (small rotated polygons around towns in
England) and units patrolling between nearby ones (dwell, walk, now and then a tracker silence),
one fix per unit every 10 s, in the order a recorded day would be replayed (by ``ts``).

The same seed always gives the same bytes, so every row of a run, and every run, measures the
same pings, and the worker's output can be compared with the reference's byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import shapely

from geofences.hotspots import HotSpotCollection, parse_hotspots
from geofences.projection import metres_per_degree
from stream.kafka import key_partition
from stream.records import Record, compact_json

T0_MS = 1_795_201_200_000  # 2026-11-20T19:00:00Z, inside the synthetic patrol windows
PING_EVERY_MS = 10_000
UNIT_TYPES = ("police", "pcso", "outreach", "security")
UNIT_TYPE_WEIGHTS = (0.6, 0.25, 0.1, 0.05)
#: the end-to-end targets' load: a replay of 1 million pings from 10,000 units
E2E_PINGS, E2E_UNITS = 1_000_000, 10_000
#: the memory target's scale: 100,000 units tracked under 300 MB RSS
MEMORY_UNITS = 100_000
#: the dispatch view's scale: every unit of a large force
DISPATCH_UNITS = 20_000

#: a ping as produced: (key, value)
Message = tuple[bytes, bytes]


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
    """``pings`` pings of ``units`` units patrolling ``hotspots`` hot spots around ``towns``
    towns; the same arguments always give the same bytes."""
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
        messages.append((names[u].encode(), compact_json(value)))  # held for the whole run
    return Load(geojson, collection, messages, lon_arr, lat_arr, units)


def partitioned(messages: Sequence[Message], partitions: int) -> list[tuple[int, Message]]:
    """Each message with the partition the default partitioner gives its key, in order."""
    cache: dict[bytes, int] = {}
    result = []
    for key, value in messages:
        p = cache.get(key)
        if p is None:
            p = cache[key] = key_partition(key, partitions)
        result.append((p, (key, value)))
    return result


def ping_batches(load: Load, partitions: int = 8, size: int = 2000) -> list[list[Record]]:
    """The load's pings as consumed records, routed to ``partitions``, in batches of ``size``."""
    routed = partitioned(load.messages, partitions)
    records = [Record("pings", p, i, k, v) for i, (p, (k, v)) in enumerate(routed)]
    return [records[i : i + size] for i in range(0, len(records), size)]
