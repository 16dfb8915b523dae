"""HotSpotIndex against brute-force shapely (docs/interface.md, Semantics: inside and enter), and
distances in metres."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofences.hotspots import HotSpot, demo_hotspots_path, load_hotspots
from geofences.index import FEW_POINTS, HotSpotIndex
from geofences.projection import LocalProjection, metres_per_degree

LON0, LAT0 = -1.125, 52.625
U = 1 / 1024


def at(x: float, y: float) -> tuple[float, float]:
    """Grid units to lon/lat; every value used here is exact in binary, so midpoints of edges lie
    exactly on them."""
    return LON0 + x * U, LAT0 + y * U


def poly(shell: Sequence[tuple[float, float]], *holes: Sequence[tuple[float, float]]) -> Any:
    return shapely.Polygon([at(*p) for p in shell], [[at(*p) for p in h] for h in holes])


def square(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


SHAPES = {
    "A": poly(square(0, 0, 2, 2)),
    "B-overlaps-A": poly(square(1, 1, 3, 3)),
    "C-holed": poly(square(4, 0, 8, 4), square(5, 1, 7, 3)),
    "D-multi": shapely.MultiPolygon([poly([(0, 4), (2, 4), (1, 6)]), poly(square(3, 5, 4, 6))]),
    "E-pentagon": poly([(5, 5), (7, 5), (8, 6.5), (6, 8), (4, 6.5)]),
    "F-island-in-hole": poly(square(5.5, 1.5, 6.5, 2.5)),
    "G-touches-A-corner": poly(square(2, -1, 3, 0)),
}


def hotspots(geometries: Sequence[Any]) -> list[HotSpot]:
    return [HotSpot(f"H{i}", f"H{i}", g, ()) for i, g in enumerate(geometries)]


def brute_force(geometries: Sequence[Any], lons: Any, lats: Any) -> list[tuple[int, int]]:
    pairs = []
    for i, (lon, lat) in enumerate(zip(lons, lats, strict=True)):
        point = shapely.Point(lon, lat)
        for j, geometry in enumerate(geometries):
            if shapely.intersects(geometry, point):
                pairs.append((i, j))
    return pairs


def boundary_points(geometry: Any, steps: int = 8) -> np.ndarray:
    """Every vertex of every ring, and points at k/steps along every edge (exactly on the edge
    when ``steps`` is a power of two and the coordinates are dyadic)."""
    out = []
    for line in shapely.get_parts(shapely.boundary(geometry)):
        coords = shapely.get_coordinates(line)
        for p, q in itertools.pairwise(coords):
            for k in range(steps):
                out.append(p + (q - p) * (k / steps))
    return np.array(out)


def check(geometries: Sequence[Any], lons: Any, lats: Any) -> tuple[np.ndarray, np.ndarray]:
    index = HotSpotIndex(hotspots(geometries))
    point_idx, hotspot_idx = index.match(lons, lats)
    got = list(zip(point_idx.tolist(), hotspot_idx.tolist(), strict=True))
    assert got == sorted(got)
    assert got == brute_force(geometries, lons, lats)
    one_by_one = [
        (i, j)
        for i, (lon, lat) in enumerate(zip(lons, lats, strict=True))
        for j in sorted(int(hotspot_id[1:]) for hotspot_id in index.containing(lon, lat))
    ]
    assert one_by_one == got
    x, y = np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)
    for path in (index._match_batch, index._match_few):  # whatever the batch's size
        pairs = path(x, y)
        assert list(zip(*(a.tolist() for a in pairs), strict=True)) == got
    few = [
        (start + i, j)
        for start in range(0, len(x), FEW_POINTS)
        for i, j in zip(
            *(
                a.tolist()
                for a in index.match(x[start : start + FEW_POINTS], y[start : start + FEW_POINTS])
            ),
            strict=True,
        )
    ]
    assert few == got
    return point_idx, hotspot_idx


def test_matches_brute_force_on_random_points_edges_vertices_and_holes() -> None:
    geometries = list(SHAPES.values())
    rng = np.random.default_rng(7)
    edges = np.concatenate([boundary_points(g) for g in geometries])
    x = np.concatenate([rng.uniform(-1.0, 9.0, 3000), (edges[:, 0] - LON0) / U])
    y = np.concatenate([rng.uniform(-2.0, 9.0, 3000), (edges[:, 1] - LAT0) / U])
    lons, lats = LON0 + x * U, LAT0 + y * U
    point_idx, hotspot_idx = check(geometries, lons, lats)
    for j, geometry in enumerate(geometries):
        on_boundary = boundary_points(geometry)
        inside = HotSpotIndex(hotspots([geometry])).match(on_boundary[:, 0], on_boundary[:, 1])
        assert inside[0].tolist() == list(range(len(on_boundary))), f"boundary of {j}"
    assert len(set(hotspot_idx.tolist())) == len(geometries)
    assert len(point_idx) > 1000


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (0.5, 0.5, {"A"}),
        (1.5, 1.5, {"A", "B-overlaps-A"}),
        (1, 1, {"A", "B-overlaps-A"}),
        (2, 2, {"A", "B-overlaps-A"}),
        (2, 1.5, {"A", "B-overlaps-A"}),
        (0, 0, {"A"}),
        (1, 0, {"A"}),
        (2, 0, {"A", "G-touches-A-corner"}),
        (2.5, 0, {"G-touches-A-corner"}),
        (2.5, 0.5, set()),
        (4.5, 0.5, {"C-holed"}),
        (5.2, 1.2, set()),
        (5, 2, {"C-holed"}),
        (5, 1, {"C-holed"}),
        (6, 3, {"C-holed"}),
        (6, 2, {"F-island-in-hole"}),
        (5.5, 2, {"F-island-in-hole"}),
        (1, 5, {"D-multi"}),
        (1.5, 5, {"D-multi"}),
        (1, 6, {"D-multi"}),
        (3.5, 5.5, {"D-multi"}),
        (4, 6, {"D-multi"}),
        (2.5, 5.5, set()),
        (6, 6, {"E-pentagon"}),
        (7.5, 5.75, {"E-pentagon"}),
        (5, 7.25, {"E-pentagon"}),
        (8, 6.5, {"E-pentagon"}),
        (8.001, 6.5, set()),
        (-0.001, 1, set()),
        (100, 100, set()),
    ],
)
def test_containing(x: float, y: float, expected: set[str]) -> None:
    index = HotSpotIndex([HotSpot(k, k, g, ()) for k, g in SHAPES.items()])
    assert index.containing(*at(x, y)) == expected
    assert index.ids == tuple(SHAPES)


def test_world_wide_tiny_and_huge_polygons() -> None:
    rng = np.random.default_rng(3)
    geometries = [
        shapely.box(lon, lat, lon + 1e-4, lat + 1e-4)
        for lon, lat in zip(rng.uniform(-179, 179, 40), rng.uniform(-80, 80, 40), strict=True)
    ]
    geometries += [shapely.box(-180, -90, 180, 90), shapely.box(-10, -10, 30, 50)] * 3
    edges = np.concatenate([boundary_points(g, 2) for g in geometries])
    lons = np.concatenate([rng.uniform(-180, 180, 1000), edges[:, 0], [np.nan, 200.0]])
    lats = np.concatenate([rng.uniform(-90, 90, 1000), edges[:, 1], [0.0, 0.0]])
    check(geometries, lons, lats)


def test_many_large_overlapping_polygons_with_a_small_median() -> None:
    rng = np.random.default_rng(5)
    small = [shapely.box(x, 50, x + 1e-5, 50 + 1e-5) for x in rng.uniform(-5, 1, 30)]
    large = [shapely.box(-5 + i * 0.01, 49, 1 + i * 0.01, 55) for i in range(20)]
    lons, lats = rng.uniform(-6, 2, 2000), rng.uniform(48, 56, 2000)
    check(small + large, lons, lats)


DYADIC = st.integers(-64, 64).map(lambda k: k / 8)


@st.composite
def polygons(draw: st.DrawFn) -> Any:
    cx, cy = draw(DYADIC), draw(DYADIC)
    n = draw(st.integers(3, 7))
    radius = draw(st.integers(1, 40)) / 8
    turn = draw(st.floats(0, 2 * math.pi))
    shell = [
        (
            round((cx + radius * math.cos(turn + 2 * math.pi * k / n)) * 16) / 16,
            round((cy + radius * math.sin(turn + 2 * math.pi * k / n)) * 16) / 16,
        )
        for k in range(n)
    ]
    holes = []
    if draw(st.booleans()):
        r = radius / 3
        holes.append(square(cx - r, cy - r, cx + r, cy + r))
    geometry = poly(shell, *holes)
    return geometry if geometry.is_valid and geometry.area > 0 else poly(square(0, 0, 1, 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    geometries=st.lists(polygons(), min_size=1, max_size=6),
    free=st.lists(st.tuples(DYADIC, DYADIC), max_size=30),
    steps=st.sampled_from([1, 2, 4, 8]),
)
def test_property_matches_brute_force(
    geometries: list[Any], free: list[tuple[float, float]], steps: int
) -> None:
    edges = np.concatenate([boundary_points(g, steps) for g in geometries])
    free_lonlat = np.array([at(x, y) for x, y in free]).reshape(-1, 2)
    points = np.concatenate([edges, free_lonlat])
    point_idx, _ = check(geometries, points[:, 0], points[:, 1])
    assert set(range(len(edges))) <= set(point_idx.tolist())


def test_empty_index_and_empty_batch() -> None:
    empty = HotSpotIndex([])
    point_idx, hotspot_idx = empty.match(np.array([LON0]), np.array([LAT0]))
    assert point_idx.size == hotspot_idx.size == 0
    assert empty.containing(LON0, LAT0) == frozenset()
    index = HotSpotIndex(hotspots(list(SHAPES.values())))
    point_idx, hotspot_idx = index.match(np.array([]), np.array([]))
    assert point_idx.size == hotspot_idx.size == 0
    with pytest.raises(ValueError):
        index.match(np.array([1.0, 2.0]), np.array([1.0]))


def test_rejects_duplicate_ids() -> None:
    a = HotSpot("X", "X", SHAPES["A"], ())
    with pytest.raises(ValueError):
        HotSpotIndex([a, a])


def test_demo_file_index() -> None:
    collection = load_hotspots(demo_hotspots_path())
    index = HotSpotIndex(collection.hotspots)
    assert index.containing(-1.1337, 52.6366) == {"HS-01"}


def m_per_deg_lat(lat: float) -> float:
    phi = math.radians(lat)
    return 111132.954 - 559.822 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)


def m_per_deg_lon(lat: float) -> float:
    phi = math.radians(lat)
    return 111412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi) + 0.118 * math.cos(5 * phi)


def test_distance_m() -> None:
    lon0, lat0, d = -1.13, 52.6, 0.002
    box = shapely.box(lon0, lat0, lon0 + d, lat0 + d)
    index = HotSpotIndex([HotSpot("S", "S", box, ())])
    mid = lat0 + d / 2
    east = lon0 + d + 30 / m_per_deg_lon(mid)
    assert index.distance_m(east, mid, "S") == pytest.approx(30, abs=0.5)
    north = lat0 + d + 30 / m_per_deg_lat(lat0 + d)
    assert index.distance_m(lon0 + d / 2, north, "S") == pytest.approx(30, abs=0.5)
    corner_x = lon0 - 30 / m_per_deg_lon(lat0)
    corner_y = lat0 - 40 / m_per_deg_lat(lat0)
    assert index.distance_m(corner_x, corner_y, "S") == pytest.approx(50, abs=0.5)
    assert index.distance_m(lon0 + d / 3, mid, "S") == 0.0
    assert index.distance_m(lon0, mid, "S") == 0.0
    assert index.distance_m(lon0 + d, lat0 + d, "S") == 0.0
    with pytest.raises(KeyError):
        index.distance_m(lon0, lat0, "nope")


@settings(max_examples=200, deadline=None)
@given(st.floats(-0.003, 0.005), st.floats(-0.003, 0.005))
def test_distance_outside_is_distance_for_points_found_outside(dx: float, dy: float) -> None:
    lon0, lat0, d = -1.13, 52.6, 0.002
    shell = [(lon0, lat0), (lon0 + d, lat0), (lon0 + d / 2, lat0 + d), (lon0, lat0 + d / 3)]
    index = HotSpotIndex([HotSpot("S", "S", shapely.Polygon(shell), ())])
    lon, lat = lon0 + dx, lat0 + dy
    if "S" not in index.containing(lon, lat):
        assert index.distance_outside_m(lon, lat, "S") == index.distance_m(lon, lat, "S")


@st.composite
def star_polygons(draw: Any) -> Any:
    """A star-shaped polygon of 3 to 40 vertices around (-1.13, 52.6), up to ~300 m across, and
    sometimes a square hole at its centre."""
    n = draw(st.integers(3, 40))
    radii = draw(st.lists(st.floats(0.5, 1.0), min_size=n, max_size=n))
    size = draw(st.floats(0.0002, 0.002))
    lon0, lat0 = -1.13, 52.6
    shell = [
        (
            lon0 + size * r * math.cos(2 * math.pi * k / n),
            lat0 + size * r * math.sin(2 * math.pi * k / n),
        )
        for k, r in enumerate(radii)
    ]
    holes = []
    if draw(st.booleans()):
        h = size / 5
        holes.append(
            [(lon0 - h, lat0 - h), (lon0 + h, lat0 - h), (lon0 + h, lat0 + h), (lon0 - h, lat0 + h)]
        )
    return shapely.Polygon(shell, holes)


@settings(max_examples=300, deadline=None)
@given(star_polygons(), st.floats(-2.5, 2.5), st.floats(-2.5, 2.5))
def test_distance_outside_is_geos_distance_to_the_float(polygon: Any, fx: float, fy: float) -> None:
    """Computed from the edges in Python for small hot spots (GEOS's own point-to-segment
    arithmetic) and by GEOS for large ones: either way the float GEOS gives."""
    index = HotSpotIndex([HotSpot("S", "S", polygon, ())])
    xmin, ymin, xmax, ymax = polygon.bounds
    lon = (xmin + xmax) / 2 + fx * (xmax - xmin)
    lat = (ymin + ymax) / 2 + fy * (ymax - ymin)
    if "S" in index.containing(lon, lat):
        return
    projection = LocalProjection.centred_on(polygon)
    projected = projection.project_geometry(polygon)
    expected = shapely.distance(projected, shapely.Point(*projection.point_to_metres(lon, lat)))
    assert index.distance_outside_m(lon, lat, "S") == float(expected)


def test_projection() -> None:
    kx, ky = metres_per_degree(0.0)
    assert kx == pytest.approx(111_319.49, abs=0.01)
    assert ky == pytest.approx(110_574.3, abs=0.1)
    kx, ky = metres_per_degree(52.6)
    assert kx == pytest.approx(m_per_deg_lon(52.6), rel=1e-5)
    assert kx == pytest.approx(111_320 * math.cos(math.radians(52.6)), rel=3e-3)
    assert ky == pytest.approx(m_per_deg_lat(52.6), rel=1e-5)
    projection = LocalProjection(-1.13, 52.6)
    x, y = projection.to_metres(np.array([-1.13, -1.12]), np.array([52.6, 52.61]))
    assert x.tolist() == [0.0, pytest.approx(kx * 0.01)]
    assert y.tolist() == [0.0, pytest.approx(ky * 0.01)]
    assert projection.point_to_metres(-1.12, 52.61) == (x[1], y[1])
    square_m = projection.project_geometry(shapely.box(-1.13, 52.6, -1.13 + 0.001, 52.601))
    assert square_m.area == pytest.approx(kx * ky * 1e-6, rel=1e-9)


@given(st.floats(-180, 180), st.floats(-85, 85), st.floats(-0.05, 0.05), st.floats(-0.05, 0.05))
def test_one_point_projects_to_the_same_floats_as_arrays(
    lon0: float, lat0: float, dx: float, dy: float
) -> None:
    projection = LocalProjection(lon0, lat0)
    x, y = projection.to_metres(np.array([lon0 + dx]), np.array([lat0 + dy]))
    assert projection.point_to_metres(lon0 + dx, lat0 + dy) == (x[0], y[0])
