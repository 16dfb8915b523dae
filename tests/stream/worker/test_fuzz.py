"""Generated values, valid, near-valid and garbage, through the worker's real decode paths.

Pings go through :meth:`PresenceStage.process` on Records (msgspec's fast path and the full
rules: many near-valid pings are refused by the first and judged by the second), assignments
through :meth:`CoverageStage.route_assignments`, hot spot files through ``parse_hotspots``.
Nothing may escape but the refusals the contract names; every record comes out exactly once
(processed, re-keyed or dead-lettered); an invalid value is dead-lettered with a one-line reason,
the full rules' own, and a valid one never is. A seeded generator, so a failure repeats.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
from collections.abc import Callable, Iterator
from datetime import time
from typing import Any

import orjson
import pytest
import shapely

from geofences.coverage import CoverageSettings
from geofences.errors import HotSpotFileError, InvalidAssignment, InvalidPing
from geofences.hotspots import HotSpot, HotSpotCollection, Window, parse_hotspots
from geofences.index import HotSpotIndex
from geofences.pings import MAX_PING_BYTES, _decode_usual, decode_with_orjson
from geofences.presence import PresenceSettings
from geofences.windows import parse_assignment
from stream.records import MAX_DEAD_LETTER_RAW_BYTES, Record
from stream.worker.coverage_stage import CoverageStage
from stream.worker.presence_stage import PresenceStage

SEED = 20261123
PINGS = "pings"
PING_COUNT = 12_000
ASSIGNMENT_COUNT = 3_000
FILE_COUNT = 1_200
BATCH = 400
LON0, LAT0 = -1.135, 52.634
SPOTS = ("HS-A", "HS-B")

#: field -> values that break the ping rules whatever the other fields are
BAD_PING_FIELDS: dict[str, list[Any]] = {
    "unit_id": [None, "", "x" * 65, 7, True, [], {"a": 1}, 1.5],
    "ts": [
        None,
        "2026-11-23 16:02:05",
        "2026-11-23T16:02:05",
        "2026-13-23T16:02:05Z",
        "2026-11-23T25:02:05Z",
        "",
        "yesterday",
        -1,
        1e300,
        10**30,
        -(10**20),
        True,
        [],
        {},
    ],
    "lat": [None, 95, -90.0001, 1e308, -1e308, "52.6", True, [52.6], {}, 10**30],
    "lon": [None, 180.5, -181, 1e300, "x", False, [], 2**64],
    "accuracy_m": [-1, -0.5, -1e308, "5", True, [], {}],
    "unit_type": ["", "t" * 65, 5, True, [], {}],
}
#: raw JSON texts (a field's value) that orjson refuses: NaN, infinities, numbers beyond a double
BAD_JSON_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"nan"]


def dumps(obj: Any, indent: int | None = None) -> bytes:
    """JSON text of ``obj``, as a sender might write it: unlike orjson, the standard library
    writes integers beyond 64 bits, and NaN and the infinities as bare words (not JSON)."""
    return json.dumps(obj, ensure_ascii=False, indent=indent).encode()


def rfc3339(rng: random.Random) -> str:
    seconds = rng.choice(["05", "05.250", "59.999999", "00.1"])
    zone = rng.choice(["Z", "z", "+01:00", "-05:30", "+00:00"])
    return f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:02:{seconds}{zone}"


def valid_ping(rng: random.Random) -> dict[str, Any]:
    """A valid ping, in the usual shape or in one only the full rules accept (an epoch ts, an
    integer coordinate, an extra field, explicit nulls)."""
    ping: dict[str, Any] = {
        "unit_id": rng.choice(["P-104", "U1", "x" * 64, "é", "\u00a0", "P 9"]),
        "ts": rfc3339(rng),
        "lat": LAT0 + rng.uniform(-0.002, 0.002),
        "lon": LON0 + rng.uniform(-0.002, 0.002),
    }
    shape = rng.randrange(8)
    if shape == 1:
        ping["ts"] = rng.choice([1_795_449_725, 1_795_449_725.25, 0, 253_402_300_799])
    elif shape == 2:
        ping["lat"], ping["lon"] = rng.choice([(52, -1), (90, 180), (-90, -180), (0, 0)])
    elif shape == 3:
        ping[rng.choice(["speed", "heading", "extra"])] = rng.choice([1, "x", None, [1], {}])
    elif shape == 4:
        ping["accuracy_m"] = None
        ping["unit_type"] = None
    if rng.random() < 0.4:
        ping["accuracy_m"] = rng.choice([0, 5, 5.5, 80.0, 1e300, 2**60])
    if rng.random() < 0.4:
        ping["unit_type"] = rng.choice(["police", "pcso", "outreach", "dog", "t" * 64])
    return ping


def mutated_bytes(rng: random.Random, raw: bytes) -> bytes:
    """``raw`` with a few bytes changed, inserted, removed, or cut short."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(5)
        if kind == 0 and at < len(data):
            data[at] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b'"', b",", b"}", b"\\"])
        elif kind == 2:
            del data[at : at + rng.randint(1, 4)]
        elif kind == 3:
            del data[at:]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return bytes(data)


def json_ish(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, small, sometimes deep."""
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63, -(2**63), 10**25, 0.5, -0.0, 1e308, 5e-324])
    if kind == 2:
        return rng.choice(["", "x", "\u0000", "\ud7ff", "é" * 3, "ts", "lat"])
    if kind == 3:
        return rng.choice(SPOTS)
    if kind == 4:
        return rfc3339(rng)
    if kind == 5:
        return [json_ish(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["unit_id", "ts", "lat", "lon", "accuracy_m", "unit_type", "hotspot_id", "x"]
    return {rng.choice(keys): json_ish(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def ping_value(rng: random.Random) -> tuple[bytes | None, bool | None]:
    """A value and whether it is valid (``None``: unknown, for the full rules to judge)."""
    kind = rng.randrange(20)
    if kind < 7:
        return dumps(valid_ping(rng)), True
    if kind < 11:  # one field broken
        ping = valid_ping(rng)
        field = rng.choice(list(BAD_PING_FIELDS))
        value = rng.choice(BAD_PING_FIELDS[field])
        if value is None and field in ("accuracy_m", "unit_type"):
            value = -1
        if value is None or rng.random() < 0.1:
            ping.pop(field, None)
            if field in ("accuracy_m", "unit_type"):
                ping[field] = BAD_PING_FIELDS[field][0]
        else:
            ping[field] = value
        return dumps(ping), False
    if kind < 12:  # a number orjson refuses, spliced in as text
        ping = valid_ping(rng)
        field = rng.choice(["lat", "lon", "ts", "accuracy_m"])
        ping[field] = "@@"
        raw = dumps(ping).replace(b'"@@"', rng.choice(BAD_JSON_NUMBERS))
        return raw, False
    if kind < 15:
        return mutated_bytes(rng, dumps(valid_ping(rng))), None
    if kind < 17:
        return dumps(json_ish(rng)), None
    if kind == 17:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))), None
    if kind == 18:
        special = [
            None,
            b"",
            b"null",
            b"[]",
            deep(1000),
            deep(1025),
            b'{"unit_id":' + deep(2000),
            b"\xef\xbb\xbf{}",
            b'"\\ud800"',
            b"x" * (MAX_PING_BYTES + 1),
            b'{"unit_id":"P-1","pad":"' + b"y" * MAX_PING_BYTES + b'"}',
            "é".encode() * 40_000,
            b"\xff" * 20_000,
        ]
        raw = rng.choice(special)
        return raw, (False if raw is None or raw[:1] != b"[" or raw == deep(1000) else None)
    # a valid ping written with whitespace and its fields in another order
    ping = valid_ping(rng)
    items = list(ping.items())
    rng.shuffle(items)
    return dumps(dict(items), indent=2), True


def full_rules(raw: bytes | None) -> str | None:
    """The reason the full rules (not the fast path) refuse ``raw``, or ``None`` if valid."""
    if not raw:
        return "empty value"
    if len(raw) > MAX_PING_BYTES:
        return f"value too large: {len(raw)} bytes > {MAX_PING_BYTES}"
    try:
        decode_with_orjson(raw)
    except InvalidPing as exc:
        return str(exc)
    return None


def _fast_path_refuses(raw: bytes | None) -> bool:
    try:
        _decode_usual(raw or b"")
    except ValueError:
        return True
    return False


def unit_of(raw: bytes) -> str:
    unit_id = orjson.loads(raw)["unit_id"]
    assert isinstance(unit_id, str)
    return unit_id


def batches(records: list[Record]) -> Iterator[list[Record]]:
    for start in range(0, len(records), BATCH):
        yield records[start : start + BATCH]


def check_dead_letter(letter: bytes, record: Record) -> dict[str, Any]:
    value = orjson.loads(letter)
    assert isinstance(value, dict)
    assert list(value) == [
        "error",
        "raw",
        "raw_bytes",
        "raw_truncated",
        "topic",
        "partition",
        "offset",
    ]
    error = value["error"]
    assert isinstance(error, str) and error and "\n" not in error and "\r" not in error
    raw = record.value or b""
    assert value["raw_bytes"] == len(raw)
    assert value["raw_truncated"] is (len(raw) > MAX_DEAD_LETTER_RAW_BYTES)
    kept = raw[:MAX_DEAD_LETTER_RAW_BYTES]
    text = value["raw"]
    assert kept.startswith(text.encode()) or base64.b64decode(text, validate=True) == kept
    assert (value["topic"], value["partition"], value["offset"]) == (
        record.topic,
        record.partition,
        record.offset,
    )
    return value


def square(lon: float, lat: float, d: float = 0.002) -> shapely.Polygon:
    return shapely.box(lon, lat, lon + d, lat + d)


def test_generated_pings_through_the_presence_stage() -> None:
    rng = random.Random(SEED)
    index = HotSpotIndex(
        [HotSpot(h, h, square(LON0 - 0.001 * i, LAT0), ()) for i, h in enumerate(SPOTS)]
    )
    stage = PresenceStage(index, PresenceSettings(), PINGS)
    table: dict[bytes, bytes] = {}
    records: list[Record] = []
    labels: dict[int, bool | None] = {}
    for offset in range(PING_COUNT):
        raw, valid = ping_value(rng)
        key_kind = rng.randrange(4)
        key: bytes | None = None if key_kind == 0 else b"P-104"
        if key_kind >= 2 and raw and full_rules(raw) is None:
            key = unit_of(raw).encode()
        records.append(Record(PINGS, offset % 3, offset, key, raw, 1_795_449_725_000))
        labels[offset] = valid

    by_offset = {r.offset: r for r in records}
    dead: dict[int, dict[str, Any]] = {}
    rekeyed: list[tuple[bytes | None, bytes]] = []
    processed = 0
    for batch in batches(records):
        out = stage.process(batch, table.get)
        table.update({k: v for k, (_, v) in stage.take_writes().items() if v is not None})
        for _key, letter in out.dead_letters:
            offset = orjson.loads(letter)["offset"]
            assert offset not in dead
            dead[offset] = check_dead_letter(letter, by_offset[offset])
        rekeyed += out.rekeyed
        processed += sum(out.outcomes.values()) - out.outcomes["invalid"]
        assert out.outcomes["invalid"] == len(out.dead_letters)

    assert len(records) == processed + len(dead) + len(rekeyed)
    expected_rekeyed = []
    kinds = {True: 0, False: 0, None: 0}
    for record in records:
        reason = full_rules(record.value)
        label = labels[record.offset]
        kinds[label] += 1
        if label is not None:
            assert (reason is None) is label, (record.value, reason)
        if reason is None:
            assert record.offset not in dead, (record.value, dead.get(record.offset))
            assert record.value is not None
            if record.key != unit_of(record.value).encode():
                expected_rekeyed.append((unit_of(record.value).encode(), record.value))
        else:
            assert dead[record.offset]["error"] == reason
    assert rekeyed == expected_rekeyed
    # valid pings that msgspec's fast path refuses, so the full rules had to judge them
    assert sum(_fast_path_refuses(r.value) for r in records if r.offset not in dead) > 500
    # the mix is what it is meant to be: each kind well represented
    assert min(kinds.values()) > PING_COUNT // 10, kinds
    assert PING_COUNT // 10 < len(dead) < PING_COUNT * 9 // 10


def valid_assignment(rng: random.Random) -> dict[str, Any]:
    assignment: dict[str, Any] = {
        "hotspot_id": rng.choice(SPOTS),
        "start": f"{rng.randint(0, 23):02d}:{rng.choice([0, 15, 30, 59]):02d}",
        "end": "12:07",
        "required_minutes": rng.choice([1, 15, 0.5, 1e300]),
    }
    if rng.random() < 0.5:
        assignment["days"] = rng.choice(["daily", ["mon"], ["sat", "sun"], None])
    if rng.random() < 0.3:
        assignment["min_visit_minutes"] = rng.choice([0, 5, 2.5, None])
    if rng.random() < 0.3:
        assignment["unit_types"] = rng.choice([["police"], ["a", "b"], None])
    return assignment


BAD_ASSIGNMENT_FIELDS: dict[str, list[Any]] = {
    "hotspot_id": ["HS-Z", "", " ", 5, None, [], "x" * 10_000],
    "start": ["24:00", "9:00", "", None, 900, "12:07"],
    "end": ["12:60", "noon", [], True],
    "required_minutes": [0, -1, "15", None, True, 10**30 * 10**300, [], {}],
    "days": [[], ["monday"], "weekly", 1, ["mon", 3]],
    "min_visit_minutes": [-1, "5", True, []],
    "unit_types": [[], [""], "police", [1], {}],
}


def assignment_value(rng: random.Random) -> tuple[bytes | None, bool | None]:
    kind = rng.randrange(10)
    if kind < 4:
        return dumps(valid_assignment(rng)), True
    if kind < 7:
        assignment = valid_assignment(rng)
        field = rng.choice(list(BAD_ASSIGNMENT_FIELDS))
        value = rng.choice(BAD_ASSIGNMENT_FIELDS[field])
        if field == "required_minutes" and isinstance(value, int) and value > 10**300:
            raw = dumps(assignment).replace(
                b'"required_minutes":', b'"required_minutes":1e999,"x":'
            )
            return raw, False
        assignment[field] = value
        return dumps(assignment), False
    if kind < 8:
        return mutated_bytes(rng, dumps(valid_assignment(rng))), None
    if kind < 9:
        return dumps(json_ish(rng)), None
    return rng.choice([None, b"", b"\xff", deep(1025), b"NaN", b"x" * 20_000]), False


def assignment_rules(raw: bytes | None) -> str | None:
    try:
        obj = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return "assignment: not JSON"
    try:
        parse_assignment(obj, SPOTS)
    except InvalidAssignment as exc:
        return str(exc)
    return None


def test_generated_assignments_through_the_coverage_stage() -> None:
    rng = random.Random(SEED + 1)
    window = Window(frozenset(range(7)), time(14), time(15), 10.0)
    spots = HotSpotCollection(tuple(HotSpot(h, h, None, (window,)) for h in SPOTS))
    stage = CoverageStage(spots, CoverageSettings(), 2)
    records = []
    labels = {}
    for offset in range(ASSIGNMENT_COUNT):
        raw, valid = assignment_value(rng)
        records.append(Record("assignments", 0, offset, rng.choice([None, b"k"]), raw))
        labels[offset] = valid
    by_offset = {r.offset: r for r in records}
    routed: list[tuple[bytes | None, bytes]] = []
    dead: dict[int, dict[str, Any]] = {}
    for batch in batches(records):
        ok, letters = stage.route_assignments(batch)
        routed += ok
        for _key, letter in letters:
            offset = orjson.loads(letter)["offset"]
            assert offset not in dead
            dead[offset] = check_dead_letter(letter, by_offset[offset])

    assert len(records) == len(routed) + len(dead)
    valid = []
    for record in records:
        reason = assignment_rules(record.value)
        if labels[record.offset] is not None:
            assert (reason is None) is labels[record.offset], (record.value, reason)
        if reason is None:
            assert record.offset not in dead
            valid.append(orjson.loads(record.value or b"")["hotspot_id"].encode())
        else:
            assert dead[record.offset]["error"] == reason
    assert [key for key, _ in routed] == valid
    assert ASSIGNMENT_COUNT // 5 < len(dead) < ASSIGNMENT_COUNT * 4 // 5


def ring(lon: float, lat: float, d: float = 0.002) -> list[list[float]]:
    return [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]


def valid_file(rng: random.Random) -> dict[str, Any]:
    features = []
    for i in range(rng.randint(1, 4)):
        lon = LON0 + 0.01 * i
        coordinates: Any = [ring(lon, LAT0)]
        geometry = {"type": "Polygon", "coordinates": coordinates}
        if rng.random() < 0.3:
            geometry = {
                "type": "MultiPolygon",
                "coordinates": [coordinates, [ring(lon, LAT0 + 0.01)]],
            }
        properties: dict[str, Any] = {"id": f"HS-{i}"}
        if rng.random() < 0.5:
            properties["name"] = rng.choice(["Market", "", "é"])
        if rng.random() < 0.7:
            properties["windows"] = [valid_assignment(rng) for _ in range(rng.randint(0, 3))]
            for window in properties["windows"]:
                del window["hotspot_id"]
        features.append({"type": "Feature", "properties": properties, "geometry": geometry})
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if rng.random() < 0.3:
        doc["timezone"] = rng.choice(["Europe/London", "UTC", "America/New_York", None])
    return doc


def paths(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a member or element of ``obj``."""
    yield path
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from paths(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from paths(value, (*path, i))


WILD = [
    None,
    True,
    0,
    -1,
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    10**30,
    "",
    "x",
    "24:00",
    [],
    [[]],
    {},
    [0.0, 0.0],
    [200.0, 0.0],
    [0.0, 95.0],
    [math.nan, 0.0],
    "Polygon",
    "Feature",
]


def mutated_file(rng: random.Random) -> Any:
    doc = valid_file(rng)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(paths(doc)))
        if not path:
            return copy.deepcopy(rng.choice(WILD))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice([*WILD, json_ish(rng)]))
    return doc


def test_generated_hot_spot_files() -> None:
    rng = random.Random(SEED + 2)
    refused = 0
    parse: Callable[[Any], HotSpotCollection] = parse_hotspots
    for n in range(FILE_COUNT):
        valid = n % 4 == 0
        doc = valid_file(rng) if valid else mutated_file(rng)
        try:
            collection = parse(doc)
        except HotSpotFileError as exc:
            assert not valid, exc.problems
            refused += 1
            assert exc.problems
            for problem in exc.problems:
                assert isinstance(problem, str) and problem and "\n" not in problem
            continue
        ids = [h.id for h in collection.hotspots]
        assert len(ids) == len(set(ids))
        for hotspot in collection.hotspots:
            assert shapely.is_valid(hotspot.geometry)
    assert refused > FILE_COUNT // 2


@pytest.mark.parametrize("size", [MAX_PING_BYTES + 1, 10 * 1024 * 1024])
def test_an_oversized_ping_makes_a_bounded_dead_letter(size: int) -> None:
    index = HotSpotIndex([HotSpot("HS-A", "HS-A", square(LON0, LAT0), ())])
    stage = PresenceStage(index, PresenceSettings(), PINGS)
    record = Record(PINGS, 0, 0, None, b"{" + b" " * (size - 2) + b"}")
    out = stage.process([record], {}.get)
    ((_, letter),) = out.dead_letters
    value = check_dead_letter(letter, record)
    assert value["error"] == f"value too large: {size} bytes > {MAX_PING_BYTES}"
    assert value["raw_truncated"] is True
    assert len(letter) < 2 * MAX_DEAD_LETTER_RAW_BYTES
