"""The dispatch ranking (docs/interface.md, Messages: DispatchSuggestion) on hand-made cases and
against a brute-force ranking; the position view and the publish rule."""

from __future__ import annotations

import math
from typing import Any

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.coverage import CoverageSettings, HotspotCoverage
from geofences.dispatch import (
    DispatchSettings,
    Suggestion,
    is_busy,
    nearest_text,
    rank,
    short_until_ms,
    suggestion_id,
)
from geofences.errors import InvalidPosition
from geofences.hotspots import Window
from geofences.positions import Fix, PositionView, PublishRule, distance_m, publish_due
from geofences.projection import LocalProjection

LON0, LAT0 = -1.13, 52.63
PROJ = LocalProjection(LON0, LAT0)
NOW = 1_760_000_000_000
TIMEOUT = 120_000
SETTINGS = DispatchSettings()


def lonlat(x: float, y: float) -> tuple[float, float]:
    """Projected metres to lon/lat (the inverse of ``PROJ``)."""
    return LON0 + x / PROJ.kx, LAT0 + y / PROJ.ky


def fix(unit: str, x: float, y: float, unit_type: str = "police", age_s: float = 0, inside=()):
    lon, lat = lonlat(x, y)
    return Fix(unit, unit_type, lon, lat, NOW - round(age_s * 1000), tuple(inside))


def view_of(*fixes: Fix) -> PositionView:
    view = PositionView(PROJ)
    for f in fixes:
        view.put(f)
    return view


#: a 100 m square at the origin, in projected metres
SQUARE = shapely.box(0, 0, 100, 100)


def ranked(view: PositionView, polygon: Any = SQUARE, types=None, busy=lambda f: False):
    return rank(view, polygon, types, NOW, TIMEOUT, busy, SETTINGS)


def ids(units) -> list[str]:
    return [u.unit_id for u in units]


def test_a_unit_of_the_wrong_type_is_not_offered() -> None:
    view = view_of(fix("pcso-1", 110, 50, "pcso"), fix("police-1", 400, 50, "police"))
    assert ids(ranked(view, types=frozenset({"police"}))) == ["police-1"]
    assert ids(ranked(view, types=None)) == ["pcso-1", "police-1"]


def test_a_stale_fix_is_not_offered() -> None:
    view = view_of(fix("near", 110, 50, age_s=121), fix("far", 600, 50, age_s=119))
    units = ranked(view)
    assert ids(units) == ["far"]
    assert units[0].fix_age_s == 119.0


def test_a_busy_unit_nearer_than_a_free_one_comes_after_it() -> None:
    view = view_of(fix("busy-near", 120, 50, inside=("HS-2",)), fix("free-far", 900, 50))
    units = ranked(view, busy=lambda f: is_busy(f, "HS-1", {"HS-2": NOW + 60_000}, NOW))
    assert [(u.unit_id, u.busy) for u in units] == [("free-far", False), ("busy-near", True)]


def test_a_unit_inside_a_hot_spot_whose_window_is_not_short_is_free() -> None:
    f = fix("u", 120, 50, inside=("HS-2", "HS-1"))
    assert not is_busy(f, "HS-1", {"HS-2": NOW}, NOW)  # its window has ended
    assert not is_busy(f, "HS-1", {"HS-1": NOW + 1}, NOW)  # the hot spot at risk itself
    assert not is_busy(f, "HS-1", {}, NOW)
    assert is_busy(f, "HS-1", {"HS-2": NOW + 1}, NOW)


def test_the_distance_is_to_the_polygon_with_its_holes_not_its_centroid() -> None:
    donut = shapely.Polygon(
        [(0, 0), (1000, 0), (1000, 1000), (0, 1000)],
        [[(200, 200), (800, 200), (800, 800), (200, 800)]],
    )
    # the centroid (500, 500) is in the hole: 300 m from the polygon
    view = view_of(fix("in-hole", 500, 500), fix("on-ring", 100, 500), fix("outside", 1100, 500))
    units = {u.unit_id: u for u in ranked(view, donut)}
    assert units["in-hole"].distance_m == pytest.approx(300, abs=0.01)
    assert units["on-ring"].distance_m == 0
    assert units["outside"].distance_m == pytest.approx(100, abs=0.01)
    assert ids(ranked(view, donut)) == ["on-ring", "outside", "in-hole"]


def test_a_tie_is_broken_by_unit_id() -> None:
    view = view_of(fix("b", 150, 50), fix("a", -50, 50), fix("c", 50, 150), fix("d", 50, -50))
    assert ids(ranked(view)) == ["a", "b", "c"]


def test_eta_walks_the_distance_at_the_walking_speed() -> None:
    units = ranked(view_of(fix("police-04", 520, 50)))
    assert units[0].distance_m == pytest.approx(420, abs=0.01)
    assert units[0].eta_minutes == pytest.approx(420 / 1.4 / 60)
    assert nearest_text([units[0].to_json_dict()]) == "nearest: police-04, 420 m (~5 min)"
    assert nearest_text([]) == "nearest: no eligible unit"


def test_an_empty_view_suggests_nobody() -> None:
    assert ranked(PositionView(PROJ)) == ()


def test_a_far_unit_is_found_when_no_near_one_is_eligible() -> None:
    view = view_of(*(fix(f"p{i}", 120 + i, 50, "pcso") for i in range(5)), fix("x", 40_000, 0))
    assert ids(ranked(view, types=frozenset({"police"}))) == ["x"]


def brute_force(fixes: list[Fix], polygon: Any, busy_units: set[str]) -> list[tuple[str, bool]]:
    entries = []
    for f in fixes:
        if NOW - f.ts_ms > TIMEOUT or f.unit_type != "police":
            continue
        x, y = PROJ.point_to_metres(f.lon, f.lat)
        d = round(shapely.distance(polygon, shapely.Point(x, y)), 1)
        entries.append((f.unit_id in busy_units, d, f.unit_id))
    entries.sort()
    return [(u, b) for b, _, u in entries[:3]]


points = st.tuples(st.floats(-3000, 3000, allow_nan=False), st.floats(-3000, 3000, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(points, st.sampled_from(["police", "pcso"]), st.integers(0, 200), st.booleans()),
        max_size=40,
    ),
    st.tuples(points, st.floats(5, 800), st.floats(5, 800)),
)
def test_rank_matches_brute_force(units: list[Any], box: Any) -> None:
    (x0, y0), w, h = box
    polygon = shapely.box(x0, y0, x0 + w, y0 + h)
    fixes = [
        fix(f"u{i:02d}", x, y, t, age, ("HS-2",) if b else ())
        for i, ((x, y), t, age, b) in enumerate(units)
    ]
    busy_units = {f.unit_id for f in fixes if f.inside}
    got = rank(
        view_of(*fixes),
        polygon,
        frozenset({"police"}),
        NOW,
        TIMEOUT,
        lambda f: bool(f.inside),
        SETTINGS,
    )
    assert [(u.unit_id, u.busy) for u in got] == brute_force(fixes, polygon, busy_units)


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(6))), st.lists(points, min_size=6, max_size=6))
def test_the_view_keeps_the_newest_fix_whatever_the_order(order: list[int], where: Any) -> None:
    fixes = [fix("u", x, y, age_s=10 * i) for i, (x, y) in enumerate(where)]
    view = view_of(*(fixes[i] for i in order))
    assert view.fixes["u"] == fixes[0]
    assert view.put(fixes[0]) is False  # the same again is not newer
    assert len(view) == 1
    assert list(view.fixes) == ["u"]


def test_a_removed_unit_is_not_found() -> None:
    view = view_of(fix("a", 0, 0), fix("b", 10, 10))
    view.remove("a")
    assert ids(ranked(view)) == ["b"]
    assert "a" not in view.fixes


def test_publish_every_30_s_or_after_50_m() -> None:
    rule = PublishRule()
    first = fix("u", 0, 0, age_s=100)
    assert publish_due(None, first, rule)
    assert not publish_due(first, fix("u", 30, 0, age_s=80), rule)  # 20 s, 30 m
    assert publish_due(first, fix("u", 51, 0, age_s=95), rule)  # moved more than 50 m
    assert publish_due(first, fix("u", 0, 0, age_s=70), rule)  # 30 s
    assert not publish_due(first, fix("u", 500, 0, age_s=100), rule)  # not newer
    assert publish_due(first, fix("u", 0, 0, age_s=99, inside=("HS-1",)), rule)
    assert publish_due(first, fix("u", 0, 0, "pcso", age_s=99), rule)


@given(points, points)
def test_distance_m_is_the_projected_distance(a: Any, b: Any) -> None:
    fa, fb = fix("u", *a), fix("u", *b)
    expected = math.dist(a, b)
    assert distance_m(fa, fb) == pytest.approx(expected, rel=2e-3, abs=0.05)


def test_a_fix_round_trips_and_bad_records_name_the_field() -> None:
    f = fix("u", 10, 20, inside=("HS-1",))
    assert Fix.from_json_dict(f.to_json_dict()) == f
    for bad, field in (
        ([], "not an object"),
        ({**f.to_json_dict(), "unit_id": ""}, "unit_id"),
        ({**f.to_json_dict(), "lat": 91}, "lat"),
        ({**f.to_json_dict(), "lon": True}, "lon"),
        ({**f.to_json_dict(), "ts": 1.5}, "ts"),
        ({**f.to_json_dict(), "inside": "HS-1"}, "inside"),
    ):
        with pytest.raises(InvalidPosition, match=field):
            Fix.from_json_dict(bad)


def test_a_suggestion_id_follows_the_ranking() -> None:
    units = ranked(view_of(fix("a", 150, 50), fix("b", 300, 50)))
    s = Suggestion("alert-1", "HS-1", NOW, units)
    assert s.suggestion_id == suggestion_id("alert-1", units)
    assert s.suggestion_id != suggestion_id("alert-1", units[:1])
    assert s.to_json_dict()["units"][0] == {
        "unit_id": "a",
        "unit_type": "police",
        "distance_m": 50.0,
        "eta_minutes": 0.6,
        "fix_age_s": 0.0,
        "busy": False,
    }


def test_short_until_is_the_open_window_end_until_met() -> None:
    from datetime import time

    window = Window(frozenset(range(7)), time(0, 0), time(23, 59), 30.0, 0.0, None)
    ledger = HotspotCoverage("HS-1", (window,), "UTC", CoverageSettings())
    start = NOW - NOW % 86_400_000
    ledger.advance(start + 60_000)
    until = short_until_ms(ledger, start + 60_000)
    assert until == start + (23 * 60 + 59) * 60_000
    ledger.visit_started("u", "police", start + 60_000)
    ledger.visit_progress("u", start + 32 * 60_000)
    ledger.advance(start + 32 * 60_000)
    assert short_until_ms(ledger, start + 32 * 60_000) is None


@settings(max_examples=200, deadline=None)
@given(
    points,
    points,
    st.integers(-60, 60),
    st.sampled_from([(), ("HS-1",), ("HS-1", "HS-2"), ("HS-2",)]),
    st.sampled_from([(), ("HS-1",), ("HS-2",)]),
    st.sampled_from(["police", "pcso"]),
)
def test_state_due_is_publish_due_of_the_states_fix(
    a: Any, b: Any, dt_s: int, inside_a: Any, inside_b: Any, unit_type: str
) -> None:
    from geofences.positions import fix_of, state_due
    from geofences.presence import UnitState, Visit

    last = fix("u", *a, inside=inside_a)
    now = fix("u", *b, unit_type=unit_type, age_s=-dt_s, inside=inside_b)
    visits = tuple(Visit(h, now.ts_ms, unit_type, now.ts_ms) for h in inside_b)
    state = UnitState(unit_type, now.ts_ms, now.lat, now.lon, visits)
    assert fix_of("u", state) == now
    rule = PublishRule()
    assert state_due(last, state, rule) == publish_due(last, now, rule)
    assert state_due(None, state, rule)
    assert not state_due(None, UnitState(), rule)


@settings(max_examples=100, deadline=None)
@given(
    points,
    points,
    st.integers(-60, 60),
    st.sampled_from([(), ("HS-1",), ("HS-1", "HS-2")]),
    st.sampled_from([(), ("HS-1",), ("HS-2",)]),
    st.sampled_from(["police", "pcso"]),
)
def test_published_fixes_are_due_as_state_due_says(
    a: Any, b: Any, dt_s: int, inside_a: Any, inside_b: Any, unit_type: str
) -> None:
    from geofences.positions import PublishedFixes, state_due
    from geofences.presence import UnitState, Visit

    last = fix("u", *a, inside=inside_a)
    now = fix("u", *b, unit_type=unit_type, age_s=-dt_s, inside=inside_b)
    state = UnitState(
        unit_type,
        now.ts_ms,
        now.lat,
        now.lon,
        tuple(Visit(h, now.ts_ms, unit_type, now.ts_ms) for h in inside_b),
    )
    published, rule = PublishedFixes(), PublishRule()
    assert published.due("u", state, rule) and published.get("u") is None
    published.put(last)
    assert published.get("u") == last
    assert published.due("u", state, rule) == state_due(last, state, rule)
    published.discard("u")
    assert len(published) == 0


def test_a_removed_units_slot_is_reused_and_types_filter_the_offer() -> None:
    view = view_of(fix("a", 0, 0), fix("b", 10, 10, "pcso"), fix("c", 20, 20, age_s=1000))
    view.remove("a")
    view.put(fix("d", 300, 0, "pcso", inside=("HS-2",)))
    assert set(view.fixes) == {"b", "c", "d"}
    assert view.fixes["d"] == fix("d", 300, 0, "pcso", inside=("HS-2",))
    assert ids(ranked(view, types=frozenset({"pcso"}))) == ["b", "d"]
    assert ids(ranked(view, types=frozenset({"van"}))) == []
    assert ids(ranked(view)) == ["b", "d"]  # c's fix is too old
    assert view.xy("b") == pytest.approx((10, 10))


@pytest.mark.parametrize(
    ("field", "value"),
    [("lon", math.nan), ("lat", math.inf), ("lon", -181), ("ts", 2**63), ("inside", [1])],
)
def test_a_position_out_of_range_is_rejected(field: str, value: Any) -> None:
    with pytest.raises(InvalidPosition, match=field):
        Fix.from_json_dict({**fix("u", 0, 0).to_json_dict(), field: value})
