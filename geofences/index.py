"""Which hot spots contain which points (docs/interface.md, Semantics: inside and enter), and how
far a point is from one."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from geofences.hotspots import HotSpot
from geofences.projection import LocalProjection

IntArray = npt.NDArray[np.intp]

_MAX_CELLS = 1 << 21
#: batches of at most this many points are matched point by point (``_match_few``): about where
#: numpy's overhead for each of the batch path's steps stops costing more than the points
FEW_POINTS = 8
_CELL_FACTOR = 2.0


class HotSpotIndex:
    """A uniform lon/lat grid over the hot spots' bounding boxes, then exact GEOS tests.

    Each grid cell lists the hot spots whose bounding box touches it (sorted by index). A batch of
    points is matched with numpy alone down to (point, candidate) pairs inside the candidate's
    bounding box, and only those pairs go to ``shapely.intersects_xy`` on prepared copies of the
    polygons: a point on an edge, on a vertex or on a hole's boundary is inside; in a hole, outside.
    Cells are about twice the median hot spot's bounding box, at most 2**21 of them.

    Why a dense grid: finding a point's candidates is arithmetic and one table lookup, done for a
    whole batch in a few numpy passes, with no shapely point objects to build and no tree to
    walk; an ``STRtree`` query or a sparse grid (sorted cells and ``np.searchsorted``) gives the
    same pairs several times slower (docs/performance.md). The cell limit bounds the table.
    """

    def __init__(self, hotspots: Sequence[HotSpot]) -> None:
        self.ids: tuple[str, ...] = tuple(h.id for h in hotspots)
        self._position = {hotspot_id: i for i, hotspot_id in enumerate(self.ids)}
        if len(self._position) != len(self.ids):
            raise ValueError("hot spot ids are not unique")
        geometries = np.array([h.geometry for h in hotspots], dtype=object)
        self._geometries = shapely.transform(geometries, lambda c: c)
        shapely.prepare(self._geometries)
        self._projections = [LocalProjection.centred_on(g) for g in geometries]
        self._projected = [
            p.project_geometry(g) for p, g in zip(self._projections, geometries, strict=True)
        ]
        shapely.prepare(self._projected)
        self._segments = [_segments(g) for g in self._projected]
        bounds = shapely.bounds(geometries).reshape(-1, 4)
        self._xmin, self._ymin, self._xmax, self._ymax = (bounds[:, j].copy() for j in range(4))
        self._bounds: list[list[float]] = bounds.tolist()
        self._build_grid()

    def _build_grid(self) -> None:
        n = len(self.ids)
        if n == 0:
            self._nx = self._ny = 0
            self._x0 = self._y0 = self._kx = self._ky = 0.0
            self._starts = np.zeros(1, dtype=np.int32)
            self._candidates = np.zeros(0, dtype=np.intp)
            return
        self._x0, self._y0 = float(self._xmin.min()), float(self._ymin.min())
        width = float(self._xmax.max()) - self._x0
        height = float(self._ymax.max()) - self._y0
        cell_x = max(_CELL_FACTOR * float(np.median(self._xmax - self._xmin)), 1e-9)
        cell_y = max(_CELL_FACTOR * float(np.median(self._ymax - self._ymin)), 1e-9)
        cells = (width / cell_x + 1) * (height / cell_y + 1)
        if cells > _MAX_CELLS:
            grow = math.sqrt(cells / _MAX_CELLS) * 1.01
            cell_x, cell_y = cell_x * grow, cell_y * grow
        while True:
            self._kx, self._ky = 1.0 / cell_x, 1.0 / cell_y
            ix0 = self._cells(self._xmin, self._x0, self._kx)
            ix1 = self._cells(self._xmax, self._x0, self._kx)
            iy0 = self._cells(self._ymin, self._y0, self._ky)
            iy1 = self._cells(self._ymax, self._y0, self._ky)
            counts = (ix1 - ix0 + 1) * (iy1 - iy0 + 1)
            if int(counts.sum()) <= 8 * n + _MAX_CELLS:
                break
            cell_x, cell_y = cell_x * 2.0, cell_y * 2.0
        self._nx, self._ny = int(ix1.max()) + 1, int(iy1.max()) + 1
        owner = np.repeat(np.arange(n), counts)
        local = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = (iy1 - iy0 + 1)[owner]
        keys = (ix0[owner] + local // rows) * self._ny + iy0[owner] + local % rows
        order = np.lexsort((owner, keys))
        self._candidates = owner[order].astype(np.intp)
        per_cell = np.bincount(keys, minlength=self._nx * self._ny)
        self._starts = np.concatenate(([0], np.cumsum(per_cell))).astype(np.int32)

    @staticmethod
    def _cells(values: npt.NDArray[np.float64], origin: float, per_cell: float) -> IntArray:
        """Cell numbers along one axis; monotone in ``values``, shared by build and query."""
        return ((values - origin) * per_cell).astype(np.intp)

    def match(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> tuple[IntArray, IntArray]:
        """Every (point, hot spot) pair with the point inside the hot spot or on its boundary.

        Takes 1-D arrays of lon and lat in degrees. Returns ``(point_idx, hotspot_idx)``, sorted
        by point, then hot spot; ``hotspot_idx`` indexes ``ids``.
        """
        x = np.asarray(lons, dtype=np.float64)
        y = np.asarray(lats, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError("lons and lats must be 1-D arrays of the same length")
        empty = np.zeros(0, dtype=np.intp)
        if self._nx == 0:
            return empty, empty.copy()
        if x.size <= FEW_POINTS:
            return self._match_few(x, y)
        return self._match_batch(x, y)

    def _match_batch(
        self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
    ) -> tuple[IntArray, IntArray]:
        """``match`` with numpy over the whole batch, down to the GEOS tests."""
        gx = (x - self._x0) * self._kx
        gy = (y - self._y0) * self._ky
        points = np.flatnonzero((gx >= 0) & (gx < self._nx) & (gy >= 0) & (gy < self._ny))
        cell = gx[points].astype(np.intp) * self._ny + gy[points].astype(np.intp)
        first = self._starts[cell]
        counts = self._starts[cell + 1] - first
        hits = counts > 0
        points, first, counts = points[hits], first[hits], counts[hits]
        point_idx = np.repeat(points, counts)
        offsets = np.repeat(first - (np.cumsum(counts) - counts), counts)
        hotspot_idx = self._candidates[offsets + np.arange(point_idx.size)]
        px, py = x[point_idx], y[point_idx]
        in_box = (
            (px >= self._xmin[hotspot_idx])
            & (px <= self._xmax[hotspot_idx])
            & (py >= self._ymin[hotspot_idx])
            & (py <= self._ymax[hotspot_idx])
        )
        point_idx, hotspot_idx = point_idx[in_box], hotspot_idx[in_box]
        inside = shapely.intersects_xy(self._geometries[hotspot_idx], px[in_box], py[in_box])
        return point_idx[inside], hotspot_idx[inside]

    def _match_few(
        self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
    ) -> tuple[IntArray, IntArray]:
        """``match`` point by point: for a few points, numpy's overhead for each of the batch
        path's steps costs more than the points (a one-record batch, a quiet live feed)."""
        point_idx: list[int] = []
        hotspot_idx: list[int] = []
        for p, (lon, lat) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
            for i in self._containing_idx(lon, lat):
                point_idx.append(p)
                hotspot_idx.append(i)
        return np.array(point_idx, dtype=np.intp), np.array(hotspot_idx, dtype=np.intp)

    def _containing_idx(self, lon: float, lat: float) -> list[int]:
        """Indexes of the hot spots containing the point, ascending: the grid cell's candidates,
        then their bounding boxes, then GEOS, with the batch path's arithmetic."""
        gx = (lon - self._x0) * self._kx
        gy = (lat - self._y0) * self._ky
        if not (0 <= gx < self._nx and 0 <= gy < self._ny):
            return []
        cell = int(gx) * self._ny + int(gy)
        found = []
        for i in self._candidates[self._starts[cell] : self._starts[cell + 1]].tolist():
            xmin, ymin, xmax, ymax = self._bounds[i]
            if (
                xmin <= lon <= xmax
                and ymin <= lat <= ymax
                and shapely.intersects_xy(self._geometries[i], lon, lat)
            ):
                found.append(i)
        return found

    def containing(self, lon: float, lat: float) -> frozenset[str]:
        """Ids of the hot spots the point is inside or on the boundary of; ``match`` for one
        point, without numpy's per-call overhead."""
        ids = self.ids
        return frozenset(ids[i] for i in self._containing_idx(lon, lat))

    def distance_m(self, lon: float, lat: float, hotspot_id: str) -> float:
        """Metres from the point to the hot spot (0 when inside or on its boundary), for the exit
        buffer (docs/interface.md, Semantics: exit: left); measured in a local projection
        centred on that hot spot."""
        if shapely.intersects_xy(self._geometries[self._position[hotspot_id]], lon, lat):
            return 0.0
        return self.distance_outside_m(lon, lat, hotspot_id)

    def distance_outside_m(self, lon: float, lat: float, hotspot_id: str) -> float:
        """``distance_m`` of a point ``match`` or ``containing`` found outside the hot spot
        (the presence stage asks only for those): the same, without testing it again."""
        i = self._position[hotspot_id]
        x, y = self._projections[i].point_to_metres(lon, lat)
        segments = self._segments[i]
        if segments is None:
            return float(shapely.distance(self._projected[i], shapely.Point(x, y)))
        return distance_to_segments(x, y, segments)


Segment = tuple[float, float, float, float]

#: hot spots with more edges than this have their distances from GEOS (see ``_segments``)
_MAX_SEGMENTS = 32


def _segments(projected: Any) -> tuple[Segment, ...] | None:
    """A projected hot spot's edges, every ring's, as ``(ax, ay, bx, by)``, if it has few.

    A micro hot spot has four to a dozen edges. For those, the distance of a point outside is
    computed here (``distance_to_segments``, the same floats as GEOS without building a shapely
    point to ask it); a larger polygon goes to GEOS."""
    segments: list[Segment] = []
    for polygon in shapely.get_parts(projected):
        for ring in (polygon.exterior, *polygon.interiors):
            coords = ring.coords
            segments += [(ax, ay, bx, by) for (ax, ay), (bx, by) in itertools.pairwise(coords)]
    return tuple(segments) if len(segments) <= _MAX_SEGMENTS else None


def distance_to_segments(x: float, y: float, segments: Sequence[Segment]) -> float:
    """The least distance from ``(x, y)`` to the segments: for a point outside a polygon, its
    distance to the polygon. Each segment's is GEOS's ``Distance::pointToSegment`` step for step,
    so the result is the float ``shapely.distance`` gives (``tests/geofences/test_index.py``)."""
    sqrt = math.sqrt
    best = math.inf
    for ax, ay, bx, by in segments:
        dx = bx - ax
        dy = by - ay
        if dx == 0.0 and dy == 0.0:
            d = sqrt((x - ax) * (x - ax) + (y - ay) * (y - ay))
        else:
            len2 = dx * dx + dy * dy
            r = ((x - ax) * dx + (y - ay) * dy) / len2
            if r <= 0.0:
                d = sqrt((x - ax) * (x - ax) + (y - ay) * (y - ay))
            elif r >= 1.0:
                d = sqrt((x - bx) * (x - bx) + (y - by) * (y - by))
            else:
                d = abs(((ay - y) * dx - (ax - x) * dy) / len2) * sqrt(len2)
        if d < best:
            best = d
    return best
