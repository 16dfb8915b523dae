"""A small evaluation worked out by hand (the expected figures are in the tests).

Europe/London, Saturday 24 to Monday 26 October 2026: the clocks go back at 02:00 BST on the
25th, a 25-hour day. Three square hot spots: A (a police window 14:00-16:00, 20 minutes owed,
visits of 5 minutes or more), B (overlapping A's east half, no window) and C (a window
22:00-02:00 across midnight, 30 minutes owed, any unit).
"""

from __future__ import annotations

from geofences.hotspots import parse_hotspots


def _square(hotspot_id: str, lon: float, windows: list[dict[str, object]]) -> dict[str, object]:
    ring = [[lon, 51.0], [lon + 0.001, 51.0], [lon + 0.001, 51.001], [lon, 51.001], [lon, 51.0]]
    return {
        "type": "Feature",
        "properties": {"id": hotspot_id, "windows": windows},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


HOTSPOT_FILE = {
    "type": "FeatureCollection",
    "timezone": "Europe/London",
    "features": [
        _square("A", 0.0, [{"start": "14:00", "end": "16:00", "required_minutes": 20, "min_visit_minutes": 5, "unit_types": ["police"]}]),
        _square("B", 0.0005, []),
        _square("C", 0.01, [{"start": "22:00", "end": "02:00", "required_minutes": 30}]),
    ],
}  # fmt: skip
COLLECTION = parse_hotspots(HOTSPOT_FILE)


def _visit(event_id: str, hotspot: str, unit: str, kind: str, enter: str, exit_: str) -> str:
    return (
        f'{{"event_id":"{event_id}","hotspot_id":"{hotspot}","unit_id":"{unit}",'
        f'"unit_type":"{kind}","enter_ts":"{enter}","exit_ts":"{exit_}","exit_reason":"left"}}'
    )


LEDGER = "\n".join(
    [
        # A, Sat: 30 min of police (14:00-14:30 BST): met
        _visit("a1", "A", "P1", "police", "2026-10-24T13:00:00.000Z", "2026-10-24T13:30:00.000Z"),
        _visit("a1", "A", "P1", "police", "2026-10-24T13:00:00.000Z", "2026-10-24T13:30:00.000Z"),
        # A, Sun (GMT now): 40 min of outreach (not eligible), 4 min of police (too short)
        _visit("a2", "A", "O1", "outreach", "2026-10-25T14:00:00.000Z", "2026-10-25T14:40:00.000Z"),
        _visit("a3", "A", "P1", "police", "2026-10-25T14:10:00.000Z", "2026-10-25T14:14:00.000Z"),
        # A, Mon: 20 min of police (met), 10 min of security (no cost)
        _visit("a4", "A", "P2", "police", "2026-10-26T14:00:00.000Z", "2026-10-26T14:20:00.000Z"),
        _visit("a5", "A", "S1", "security", "2026-10-26T15:00:00.000Z", "2026-10-26T15:10:00.000Z"),
        # B: a pcso from 23:50 BST Sat to 00:20 BST Sun: 10 min on Sat, 20 on Sun
        _visit("b1", "B", "C1", "pcso", "2026-10-24T22:50:00.000Z", "2026-10-24T23:20:00.000Z"),
        # C: 40 min in the early hours of Sun (01:30-02:10 BST... 00:30Z-01:10Z), in Sat's window
        _visit("c1", "C", "O2", "outreach", "2026-10-25T00:30:00.000Z", "2026-10-25T01:10:00.000Z"),
        # a hot spot the file does not hold
        _visit(
            "x1", "HS-X", "P1", "police", "2026-10-24T10:00:00.000Z", "2026-10-24T10:10:00.000Z"
        ),
    ]
)

CRIMES = """occurred_at,lat,lon,crime_type,harm
2026-10-24T15:00:00+01:00,51.0005,0.0,violence,
2026-10-25T01:30:00,51.0005,0.00075,robbery,
2026-10-26T12:00:00Z,51.0005,0.0105,theft,5
2026-10-26T10:00:00Z,51.0005,0.0012,graffiti,
2026-10-24T12:00:00Z,51.0005,0.02,violence,
2026-10-23T12:00:00Z,51.0005,0.0002,violence,
"""

HARM_WEIGHTS = "crime_type,harm\nviolence,120\nrobbery,365\ntheft,7\n"
COSTS = "unit_type,gbp_per_minute\npolice,3.38\noutreach,2.28\npcso,2.5\n"
