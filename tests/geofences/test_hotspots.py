"""The hot spot file (docs/interface.md, The hot spot file): refusals name the feature and the
problem; valid loads."""

from __future__ import annotations

import math
from datetime import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import shapely

from geofences.errors import HotSpotFileError
from geofences.hotspots import (
    MAX_HOTSPOT_FILE_BYTES,
    MAX_HOTSPOTS,
    MAX_POSITIONS,
    MAX_POSITIONS_PER_HOTSPOT,
    MAX_WINDOWS_PER_HOTSPOT,
    WEEKDAYS,
    HotSpotCollection,
    Window,
    demo_hotspots_path,
    load_hotspots,
    parse_hotspots,
    parse_window,
)

DELETE = object()


def ring(lon: float, lat: float, d: float = 0.002) -> list[list[float]]:
    return [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]


def feature(hotspot_id: str, geometry: Any, **properties: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"id": hotspot_id, **properties},
        "geometry": geometry,
    }


def valid_doc() -> dict[str, Any]:
    window = {"start": "10:00", "end": "11:00", "required_minutes": 15}
    return {
        "type": "FeatureCollection",
        "features": [
            feature("HS-A", {"type": "Polygon", "coordinates": [ring(-1.14, 52.63)]}),
            feature(
                "HS-B",
                {"type": "Polygon", "coordinates": [ring(-1.13, 52.63)]},
                name="B",
                windows=[window],
            ),
        ],
    }


def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any] | Any:
    doc: Any = valid_doc()
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


F1 = ("features", 1)
P = (*F1, "properties")
W = (*P, "windows", 0)
G = (*F1, "geometry")
C = (*G, "coordinates")
B = 'feature 1 (id "HS-B"): '
P2 = B + "geometry: ring 0 position"
NAN, INF = math.nan, math.inf
BOWTIE = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
MULTI = "MultiPolygon"
# over the limits: shared lists, so they cost little to build
LONG_RING = [[-1.13, 52.63]] * (MAX_POSITIONS_PER_HOTSPOT + 1)
FULL_RING = [[-1.13, 52.63]] * MAX_POSITIONS_PER_HOTSPOT
FULL = feature("HS", {"type": "Polygon", "coordinates": [FULL_RING]})
WINDOW = {"start": "10:00", "end": "11:00", "required_minutes": 15}

REFUSALS = [
    # the collection
    ((), [], "not a GeoJSON FeatureCollection"),
    ((), "text", "not a GeoJSON FeatureCollection"),
    (("type",), "Feature", "not a GeoJSON FeatureCollection"),
    (("type",), DELETE, "not a GeoJSON FeatureCollection"),
    (("features",), {}, '"features" is not a list'),
    (("features",), DELETE, '"features" is not a list'),
    (("timezone",), "Mars/Base", 'unknown timezone "Mars/Base"'),
    (("timezone",), "", 'unknown timezone ""'),
    (("timezone",), "../../etc/passwd", "unknown timezone"),
    (("timezone",), "Europe", 'unknown timezone "Europe"'),
    (("timezone",), "x" * 300, "unknown timezone"),
    (("timezone",), 5, "timezone 5 is not a string"),
    # the limits
    (("features",), [None] * (MAX_HOTSPOTS + 1), f'"features" has {MAX_HOTSPOTS + 1} hot spots,'),
    (
        ("features",),
        [FULL] * (MAX_POSITIONS // MAX_POSITIONS_PER_HOTSPOT + 1),
        f"the hot spots have {MAX_POSITIONS + MAX_POSITIONS_PER_HOTSPOT} positions in all, more",
    ),
    (C, [LONG_RING], B + f"geometry: {MAX_POSITIONS_PER_HOTSPOT + 1} positions, more than"),
    (G, {"type": MULTI, "coordinates": [[FULL_RING], [ring(0, 0)]]}, B + "geometry: 10005 pos"),
    (
        (*P, "windows"),
        [WINDOW] * (MAX_WINDOWS_PER_HOTSPOT + 1),
        B + f'"windows" has {MAX_WINDOWS_PER_HOTSPOT + 1} windows, more than',
    ),
    # the feature and its id
    (F1, "HS-B", "feature 1: not a GeoJSON Feature"),
    (F1, None, "feature 1: not a GeoJSON Feature"),
    ((*F1, "type"), "Polygon", "feature 1: not a GeoJSON Feature"),
    ((*P, "id"), DELETE, 'feature 1: missing "id"'),
    ((*P, "id"), None, 'feature 1: missing "id"'),
    (P, None, 'feature 1: missing "id"'),
    (P, DELETE, 'feature 1: missing "id"'),
    (P, ["HS-B"], "feature 1: properties: not an object"),
    ((*P, "id"), "", 'feature 1: "id" "" is not a non-empty string'),
    ((*P, "id"), "  ", 'feature 1: "id" "  " is not a non-empty string'),
    ((*P, "id"), 7, 'feature 1: "id" 7 is not a non-empty string'),
    ((*P, "id"), ["HS-B"], 'feature 1: "id" ["HS-B"] is not a non-empty string'),
    (
        (*P, "id"),
        "HS-A",
        'feature 1 (id "HS-A"): duplicate id "HS-A" (first used by feature 0)',
    ),
    ((*P, "name"), 5, B + '"name" 5 is not a string'),
    # the geometry
    (G, DELETE, B + "geometry: missing"),
    (G, None, B + "geometry: missing"),
    (G, "POLYGON", B + "geometry: not an object"),
    ((*G, "type"), "Point", B + 'geometry: type "Point" is not Polygon or MultiPolygon'),
    ((*G, "type"), "LineString", B + 'geometry: type "LineString" is not Polygon'),
    ((*G, "type"), DELETE, B + "geometry: type null is not Polygon or MultiPolygon"),
    (C, [], B + "geometry: coordinates are not a non-empty list of rings"),
    (C, DELETE, B + "geometry: coordinates are not a non-empty list of rings"),
    ((*C, 0), "ring", B + "geometry: ring 0 is not a list of positions"),
    ((*C, 0), [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], B + "geometry: ring 0 has 3 positions"),
    ((*C, 0), [], B + "geometry: ring 0 has 0 positions, fewer than 4"),
    ((*C, 0, 4), [-1.13, 52.6301], B + "geometry: ring 0 is not closed"),
    ((*C, 0, 2), [1.0], P2 + " 2: [1.0] is not 2 or 3 numbers"),
    ((*C, 0, 2), [1, 2, 3, 4], P2 + " 2: [1, 2, 3, 4] is not 2 or 3"),
    ((*C, 0, 2), "x", P2 + ' 2: "x" is not 2 or 3 numbers'),
    ((*C, 0, 2), [True, 52.6], P2 + " 2: [true, 52.6] is not 2 or 3 finite"),
    ((*C, 0, 2), ["1", 52.6], P2 + ' 2: ["1", 52.6] is not 2 or 3 finite'),
    ((*C, 0, 2), [-1.1, 52.6, NAN], P2 + " 2: [-1.1, 52.6, NaN] is not 2 or 3 finite"),
    ((*C, 0, 2), [NAN, 52.6], P2 + " 2: [NaN, 52.6] is not 2 or 3 finite"),
    ((*C, 0, 2), [-1.1, INF], P2 + " 2: [-1.1, Infinity] is not 2 or 3 finite"),
    ((*C, 0, 2), [181, 52.6], P2 + " 2: lon 181 is outside -180..180"),
    ((*C, 0, 2), [-180.5, 52.6], P2 + " 2: lon -180.5 is outside -180..180"),
    ((*C, 0, 2), [-1.1, 90.5], P2 + " 2: lat 90.5 is outside -90..90"),
    ((*C, 0, 2), [-1.1, -91], P2 + " 2: lat -91 is outside -90..90"),
    ((*C, 0), BOWTIE, B + "geometry: not a valid polygon: Self-intersection[0.5 0.5]"),
    (
        C,
        [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], ring(5.0, 5.0)],
        B + "geometry: not a valid polygon: Hole lies outside shell",
    ),
    (
        C,
        [[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]],
        B + "geometry: not a valid polygon: Too few points",
    ),
    (G, {"type": MULTI, "coordinates": []}, B + "geometry: coordinates are not a non-empty"),
    (G, {"type": MULTI, "coordinates": [[]]}, B + "geometry: polygon 0 coordinates are not"),
    (
        G,
        {"type": MULTI, "coordinates": [[ring(0, 0)], [[*ring(1, 1)[:4], [1, 1.5]]]]},
        B + "geometry: polygon 1 ring 0 is not closed",
    ),
    (
        G,
        {"type": MULTI, "coordinates": [[ring(0, 0, 2)], [ring(1, 1, 2)]]},
        B + "geometry: not a valid polygon: Self-intersection",
    ),
    # the windows
    ((*P, "windows"), "daily", B + '"windows" "daily" is not a list'),
    ((*P, "windows"), {"start": "10:00"}, B + '"windows" {"start": "10:00"} is not a list'),
    (W, "10:00-11:00", B + "windows[0]: not an object"),
    (W, None, B + "windows[0]: not an object"),
    ((*W, "days"), "weekly", B + 'windows[0].days: "weekly" is not "daily" or a non-empty list'),
    ((*W, "days"), [], B + 'windows[0].days: [] is not "daily" or a non-empty list of mon..sun'),
    ((*W, "days"), ["monday"], B + 'windows[0].days: ["monday"] is not "daily" or'),
    ((*W, "days"), ["mon", 1], B + 'windows[0].days: ["mon", 1] is not "daily" or'),
    ((*W, "days"), 5, B + 'windows[0].days: 5 is not "daily" or a non-empty list of mon..sun'),
    ((*W, "start"), "25:00", B + 'windows[0].start: "25:00" is not HH:MM'),
    ((*W, "start"), "9:00", B + 'windows[0].start: "9:00" is not HH:MM'),
    ((*W, "start"), "09:60", B + 'windows[0].start: "09:60" is not HH:MM'),
    ((*W, "start"), "09:00:00", B + 'windows[0].start: "09:00:00" is not HH:MM'),
    ((*W, "start"), 930, B + "windows[0].start: 930 is not HH:MM"),
    ((*W, "end"), "24:00", B + 'windows[0].end: "24:00" is not HH:MM (00:00 to 23:59)'),
    ((*W, "start"), DELETE, B + 'windows[0]: missing "start"'),
    ((*W, "end"), DELETE, B + 'windows[0]: missing "end"'),
    ((*W, "end"), "10:00", B + 'windows[0]: start and end are both "10:00"'),
    ((*W, "required_minutes"), DELETE, B + 'windows[0]: missing "required_minutes"'),
    ((*W, "required_minutes"), 0, B + "windows[0].required_minutes: 0 is not a number > 0"),
    ((*W, "required_minutes"), -5, B + "windows[0].required_minutes: -5 is not a number > 0"),
    ((*W, "required_minutes"), "15", B + 'windows[0].required_minutes: "15" is not a number'),
    ((*W, "required_minutes"), True, B + "windows[0].required_minutes: true is not a number"),
    ((*W, "required_minutes"), None, B + "windows[0].required_minutes: null is not a number"),
    ((*W, "required_minutes"), NAN, B + "windows[0].required_minutes: NaN is not a number"),
    ((*W, "required_minutes"), INF, B + "windows[0].required_minutes: Infinity is not a"),
    ((*W, "min_visit_minutes"), -1, B + "windows[0].min_visit_minutes: -1 is not a number >= 0"),
    ((*W, "min_visit_minutes"), "5", B + 'windows[0].min_visit_minutes: "5" is not a number'),
    ((*W, "min_visit_minutes"), False, B + "windows[0].min_visit_minutes: false is not a"),
    ((*W, "min_visit_minutes"), NAN, B + "windows[0].min_visit_minutes: NaN is not a number"),
    ((*W, "unit_types"), "police", B + 'windows[0].unit_types: "police" is not a non-empty list'),
    ((*W, "unit_types"), [], B + "windows[0].unit_types: [] is not a non-empty list"),
    ((*W, "unit_types"), [""], B + 'windows[0].unit_types: [""] is not a non-empty list of non-'),
    ((*W, "unit_types"), [3], B + "windows[0].unit_types: [3] is not a non-empty list of non-"),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    REFUSALS,
    ids=[
        f"{'.'.join(map(str, p)) or 'doc'}={'<deleted>' if v is DELETE else repr(v)}"[:60]
        for p, v, _ in REFUSALS
    ],
)
def test_refusal_names_the_feature_and_the_problem(
    path: tuple[Any, ...], value: Any, expected: str
) -> None:
    with pytest.raises(HotSpotFileError) as caught:
        parse_hotspots(changed(path, value))
    problems = caught.value.problems
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert problems[0].startswith(expected.split(":")[0])
    assert "\n" not in problems[0]


def test_every_problem_is_listed_one_line_each() -> None:
    doc = valid_doc()
    doc["timezone"] = "Mars/Base"
    doc["features"][0]["geometry"]["coordinates"][0][4] = [0.0, 0.0]
    doc["features"][1]["properties"]["windows"] = [
        {"start": "25:00", "end": "10:00", "required_minutes": 0, "unit_types": []},
        "x",
    ]
    doc["features"].append(feature("HS-A", None))
    doc["features"].append({"type": "Feature", "properties": {}, "geometry": None})
    with pytest.raises(HotSpotFileError) as caught:
        parse_hotspots(doc)
    assert caught.value.problems == [
        'unknown timezone "Mars/Base"',
        'feature 0 (id "HS-A"): geometry: ring 0 is not closed (first and last positions differ)',
        'feature 1 (id "HS-B"): windows[0].start: "25:00" is not HH:MM (00:00 to 23:59)',
        'feature 1 (id "HS-B"): windows[0].required_minutes: 0 is not a number > 0',
        'feature 1 (id "HS-B"): windows[0].unit_types: [] is not a non-empty list of non-empty'
        " strings",
        'feature 1 (id "HS-B"): windows[1]: not an object',
        'feature 2 (id "HS-A"): duplicate id "HS-A" (first used by feature 0)',
        'feature 2 (id "HS-A"): geometry: missing',
        'feature 3: missing "id"',
        "feature 3: geometry: missing",
    ]
    assert str(caught.value) == "; ".join(caught.value.problems)


def test_many_bad_positions_in_a_ring_make_one_line() -> None:
    coordinates = [[[200.0, 0.0], [200.0, 1.0], [201.0, 1.0], [201.0, 0.0], [200.0, 0.0]]]
    with pytest.raises(HotSpotFileError) as caught:
        parse_hotspots(changed(C, coordinates))
    assert caught.value.problems == [
        P2 + " 0: lon 200.0 is outside -180..180 (and 4 more bad positions)"
    ]


def test_defaults() -> None:
    doc = valid_doc()
    doc["features"][1]["properties"]["windows"][0]["end"] = "10:30"
    hotspots = parse_hotspots(doc)
    assert hotspots.timezone == "Europe/London"
    a, b = hotspots.hotspots
    assert (a.id, a.name, a.windows) == ("HS-A", "HS-A", ())
    assert (b.id, b.name) == ("HS-B", "B")
    assert b.windows == (Window(frozenset(range(7)), time(10), time(10, 30), 15.0, 0.0, None),)
    assert isinstance(b.windows[0].required_minutes, float)
    assert hotspots.by_id()["HS-B"] is b
    assert a.geometry.geom_type == "Polygon"
    assert list(a.geometry.exterior.coords) == [tuple(p) for p in ring(-1.14, 52.63)]


def test_nulls_mean_defaults() -> None:
    doc = valid_doc()
    doc["timezone"] = None
    doc["features"][0]["properties"].update(name=None, windows=None)
    doc["features"][1]["properties"]["windows"][0].update(
        days=None, min_visit_minutes=None, unit_types=None
    )
    hotspots = parse_hotspots(doc)
    assert hotspots.timezone == "Europe/London"
    assert hotspots.hotspots[0].name == "HS-A"
    assert hotspots.hotspots[1].windows[0] == Window(frozenset(range(7)), time(10), time(11), 15.0)


def test_all_window_fields() -> None:
    window = parse_window(
        {
            "days": ["fri", "sat", "fri"],
            "start": "23:30",
            "end": "00:30",
            "required_minutes": 15,
            "min_visit_minutes": 2.5,
            "unit_types": ["police", "pcso"],
            "hotspot_id": "HS-01",
        },
        "assignment",
    )
    assert window == Window(
        frozenset({4, 5}), time(23, 30), time(0, 30), 15.0, 2.5, frozenset({"police", "pcso"})
    )
    assert window.end <= window.start
    assert WEEKDAYS.index("sun") == 6


def test_parse_window_raises_value_error_naming_where() -> None:
    with pytest.raises(ValueError) as caught:
        parse_window({"start": "25:00", "end": "10:00"}, "assignment")
    assert str(caught.value) == (
        'assignment.start: "25:00" is not HH:MM (00:00 to 23:59); '
        'assignment: missing "required_minutes"'
    )
    with pytest.raises(ValueError, match=r"^assignment: not an object$"):
        parse_window([], "assignment")


def test_timezone_multipolygon_hole_and_3d_positions() -> None:
    outer = ring(-1.14, 52.63, 0.004)
    hole = ring(-1.139, 52.631, 0.001)[::-1]
    doc = {
        "type": "FeatureCollection",
        "timezone": "America/New_York",
        "features": [
            feature("multi", {"type": MULTI, "coordinates": [[ring(0, 0)], [ring(1, 1)]]}),
            feature("holed", {"type": "Polygon", "coordinates": [outer, hole]}),
            feature("3d", {"type": "Polygon", "coordinates": [[[*p, 12.5] for p in ring(2, 2)]]}),
        ],
    }
    hotspots = parse_hotspots(doc)
    assert hotspots.timezone == "America/New_York"
    multi, holed, three_d = hotspots.hotspots
    assert multi.geometry.geom_type == "MultiPolygon"
    assert len(multi.geometry.geoms) == 2
    assert len(holed.geometry.interiors) == 1
    assert not holed.geometry.contains(shapely.Point(-1.1385, 52.6315))
    assert not three_d.geometry.has_z


def test_collection_refuses_duplicate_ids_when_built_directly() -> None:
    hotspots = parse_hotspots(valid_doc()).hotspots
    with pytest.raises(ValueError):
        HotSpotCollection((hotspots[0], hotspots[0]))


OUTREACH = Window(frozenset(range(7)), time(14), time(20), 40.0, 0.0, frozenset({"outreach"}))


def test_demo_file() -> None:
    hotspots = load_hotspots(demo_hotspots_path())
    assert [h.id for h in hotspots.hotspots] == [f"HS-0{i}" for i in range(1, 8)]
    assert hotspots.timezone == "Europe/London"
    for hotspot in hotspots.hotspots:
        assert hotspot.name != hotspot.id
        assert OUTREACH in hotspot.windows
        assert any(w.unit_types == frozenset({"police", "pcso"}) for w in hotspot.windows)
        minx, miny, maxx, maxy = hotspot.geometry.bounds
        assert -1.15 < minx < maxx < -1.12 and 52.62 < miny < maxy < 52.65
    assert any(w.end < w.start for h in hotspots.hotspots for w in h.windows)
    geometries = [h.geometry for h in hotspots.hotspots]
    for i, g in enumerate(geometries):
        assert not any(g.intersects(other) for other in geometries[i + 1 :])


def test_load_refuses_unreadable_and_invalid_json(tmp_path: Path) -> None:
    missing = tmp_path / "missing.geojson"
    with pytest.raises(HotSpotFileError) as caught:
        load_hotspots(missing)
    assert caught.value.problems == [f"cannot read {missing}: No such file or directory"]

    for text in ('{"type": "FeatureCollection", ', '{"a": NaN}', "\xff"):
        bad = tmp_path / "bad.geojson"
        bad.write_bytes(text.encode("latin-1"))
        with pytest.raises(HotSpotFileError) as caught:
            load_hotspots(str(bad))
        (problem,) = caught.value.problems
        assert problem.startswith(f"{bad} is not valid JSON: ")
        assert "\n" not in problem


def test_limits_are_inclusive() -> None:
    doc = valid_doc()
    doc["features"][1]["properties"]["windows"] *= MAX_WINDOWS_PER_HOTSPOT
    square = ring(-1.13, 52.63)
    # a square with a corner split into collinear points, exactly at the limit
    edge = [[-1.13 + 0.002 * i / 9995, 52.63] for i in range(9996)]
    doc["features"][0]["geometry"]["coordinates"] = [[*edge, *square[1:]]]
    assert len(doc["features"][0]["geometry"]["coordinates"][0]) == MAX_POSITIONS_PER_HOTSPOT
    assert [h.id for h in parse_hotspots(doc).hotspots] == ["HS-A", "HS-B"]


def test_load_refuses_a_file_too_large_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.geojson"
    with big.open("wb") as file:
        file.truncate(MAX_HOTSPOT_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(HotSpotFileError) as caught:
        load_hotspots(big)
    assert caught.value.problems == [
        f"{big} is too large: {MAX_HOTSPOT_FILE_BYTES + 1} bytes, more than {MAX_HOTSPOT_FILE_BYTES}"
    ]


def test_load_parses(tmp_path: Path) -> None:
    path = tmp_path / "ok.geojson"
    path.write_bytes(orjson.dumps(valid_doc()))
    assert [h.id for h in load_hotspots(path).hotspots] == ["HS-A", "HS-B"]
