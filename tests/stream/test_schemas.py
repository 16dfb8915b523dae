"""The shipped JSON Schemas and AsyncAPI document (``stream/schemas``) against the code that
reads and writes the messages, docs/interface.md, and ``hotspot schema``.

The input schemas must accept what the decoders accept and refuse what they refuse, as far as
a JSON Schema can say it: generated values are given to both, and where they disagree the value
must be one of the few documented cases (the schemas' descriptions name them). The output
schemas must accept every message the domain code builds, and refuse a message with a field too
many or of the wrong shape.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import tomllib
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from geofences.coverage import Alert, CoverageSettings, HotspotCoverage
from geofences.errors import InvalidAssignment, InvalidPing
from geofences.hotspots import WEEKDAYS, Window
from geofences.pings import MAX_PING_BYTES, Ping, decode_ping
from geofences.presence import (
    DwellEvent,
    Event,
    GeofenceEvent,
    PresenceSettings,
    UnitState,
    expire,
    observe,
    remove_hotspots,
)
from geofences.windows import parse_assignment, window_to_obj
from stream import cli, schemas
from stream.records import MAX_DEAD_LETTER_RAW_BYTES, Record, compact_json, dead_letter
from stream.worker.settings import TopicNames
from tests.stream.schemas_check import (
    OUTPUT_TOPICS,
    TOPIC_SCHEMAS,
    check,
    check_records,
    errors,
    validator,
)

ROOT = Path(__file__).resolve().parents[2]
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
OUTPUTS = ("geofence-event", "dwell-event", "coverage-alert", "dead-letter")


def on_the_wire(value: dict[str, Any]) -> Any:
    """A message as a consumer reads it: encoded as the processor encodes it, decoded again."""
    return orjson.loads(compact_json(value))


# -- the schemas themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(schemas.MESSAGES))
def test_every_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = schemas.schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT_2020_12
    assert schema["$id"] == f"urn:hotspot:schema:{name}"
    assert schema["title"] == schemas.MESSAGES[name]
    assert schema["description"]
    assert set(schema["required"]) <= set(schema["properties"])


@pytest.mark.parametrize("name", list(schemas.MESSAGES))
def test_every_schema_example_is_valid(name: str) -> None:
    examples = schemas.schema(name)["examples"]
    assert examples
    for example in examples:
        check(name, example)


@pytest.mark.parametrize("name", OUTPUTS)
def test_output_schemas_allow_no_other_field(name: str) -> None:
    schema = schemas.schema(name)
    assert schema["additionalProperties"] is False
    value = schema["examples"][0]
    assert errors(name, {**value, "extra": 1})


def test_input_schemas_allow_other_fields() -> None:
    for name in ("ping", "assignment"):
        value = schemas.schema(name)["examples"][0]
        check(name, {**value, "extra": {"any": ["thing"]}})


def test_the_output_schemas_share_their_definitions() -> None:
    """Each schema file stands alone, so the shared definitions are copies: kept equal here."""
    defs = [schemas.schema(name)["$defs"] for name in OUTPUTS if name != "dead-letter"]
    for key in ("uuid5", "timestamp", "hotspotId", "unitId", "unitType"):
        assert all(d[key] == defs[0][key] for d in defs), key


# -- output messages built by the domain code ---------------------------------------------------

T0 = 1_795_449_725_000  # 2026-11-23T16:02:05.000Z
HOTSPOT = "HS-03"
INSIDE_BELOW_LAT = 52.635  # the test's hot spot: everything south of this latitude


def containing(ping: Ping) -> set[str]:
    return {HOTSPOT} if ping.lat < INSIDE_BELOW_LAT else set()


def far_away(ping: Ping, hotspot_id: str) -> float:
    return 500.0


def ping(unit_id: str, ts_ms: int, lat: float, unit_type: str | None = "police") -> Ping:
    """A ping as the decoder makes it of its JSON value (so only valid ones)."""
    value: dict[str, Any] = {"unit_id": unit_id, "ts": ts_ms / 1000, "lat": lat, "lon": -1.135}
    if unit_type is not None:
        value["unit_type"] = unit_type
    return decode_ping(orjson.dumps(value))


def presence_events() -> list[Event]:
    """Enter and exit for every exit reason, with their dwells, by the presence rules."""
    settings_ = PresenceSettings()
    events: list[Event] = []
    states: dict[str, UnitState] = {}

    def feed(p: Ping) -> None:
        result = observe(states.get(p.unit_id), p, containing(p), far_away, settings_)
        states[p.unit_id] = result.state
        events.extend(result.events)

    # left: in at T0, still in a minute later, out and far away 75.25 s after the enter
    feed(ping("P-104", T0, 52.63421))
    feed(ping("P-104", T0 + 60_000, 52.63422))
    feed(ping("P-104", T0 + 75_250, 52.6400))
    # signal lost, noticed by the clock: only the enter ping, so a dwell of 0 s
    feed(ping("O-21", T0 + 5, 52.6330, "outreach"))
    _, expired = expire("O-21", states["O-21"], T0 + 400_000, settings_)
    events.extend(expired)
    # hot spot removed; a unit that never gave its type
    feed(ping("X-1", T0 + 7, 52.6331, None))
    _, removed = remove_hotspots("X-1", states["X-1"], known=set())
    events.extend(removed)
    return events


def test_presence_events_are_valid() -> None:
    events = presence_events()
    seen: set[tuple[str, str | None]] = set()
    for item in events:
        value = on_the_wire(item.to_json_dict())
        if isinstance(item, GeofenceEvent):
            check("geofence-event", value)
            seen.add((value["type"], value["reason"]))
        else:
            assert isinstance(item, DwellEvent)
            check("dwell-event", value)
            seen.add(("dwell", value["exit_reason"]))
    assert seen == {
        ("enter", None),
        ("exit", "left"),
        ("exit", "signal_lost"),
        ("exit", "hotspot_removed"),
        ("dwell", "left"),
        ("dwell", "signal_lost"),
        ("dwell", "hotspot_removed"),
    }
    durations = {e.duration_s for e in events if isinstance(e, DwellEvent)}
    assert durations == {75.25, 0.0}


MIN = 60_000
DAY = date(2026, 11, 23)  # a Monday in winter: London time is UTC


def at(hhmm: str) -> int:
    return int(datetime.combine(DAY, time.fromisoformat(hhmm), tzinfo=UTC).timestamp()) * 1000


def coverage_alerts() -> list[Alert]:
    """met, at_risk, gap and co_patrol by the coverage rules, over one day of one hot spot."""
    daily = frozenset(range(7))
    windows = [
        Window(daily, time(14), time(15), 15.0),
        Window(daily, time(16), time(20), 40.0, unit_types=frozenset({"outreach"})),
    ]
    ledger = HotspotCoverage(HOTSPOT, windows, "Europe/London", CoverageSettings())
    alerts = ledger.advance(at("13:00"))

    def visit(unit: str, unit_type: str, enter: int, exit_: int) -> None:
        ledger.visit_started(unit, unit_type, enter)
        for t in range(enter + 10_000, exit_, 10_000):
            ledger.visit_progress(unit, t)
        ledger.visit_ended(unit, exit_)

    visit("P-104", "police", at("14:00"), at("14:20"))  # met
    visit("P-7", "police", at("16:00"), at("16:30"))  # co_patrol with O-21
    visit("O-21", "outreach", at("16:05"), at("16:30"))  # 25 of 40 minutes: at_risk, gap
    now = at("13:00")
    while now < at("20:05"):
        now += MIN
        alerts.extend(ledger.advance(now))
    return alerts


def test_coverage_alerts_are_valid() -> None:
    alerts = coverage_alerts()
    for alert in alerts:
        check("coverage-alert", on_the_wire(alert.to_json_dict()))
    assert sorted(a.type for a in alerts) == ["at_risk", "co_patrol", "gap", "met"]


def test_a_co_patrol_alert_and_a_window_alert_are_each_checked_whole() -> None:
    by_type = {a.type: a.to_json_dict() for a in coverage_alerts()}
    co_patrol, met = by_type["co_patrol"], by_type["met"]
    broken = [
        {k: v for k, v in co_patrol.items() if k != "unit_ids"},
        {**co_patrol, "window_start": met["window_start"]},
        {**co_patrol, "covered_minutes": 0.0},
        {**co_patrol, "unit_ids": ["O-21"]},
        {**co_patrol, "unit_ids": ["O-21", "O-21"]},
        {**met, "unit_ids": co_patrol["unit_ids"]},
        {**met, "unit_types": co_patrol["unit_types"]},
        {**met, "window_end": None},
        {**met, "required_minutes": None},
        {**met, "required_minutes": 0},
        {**met, "type": "late"},
        {k: v for k, v in met.items() if k != "covered_minutes"},
    ]
    for value in broken:
        assert errors("coverage-alert", value), value


def test_enter_has_no_reason_and_exit_has_one() -> None:
    enter, exit_ = (e.to_json_dict() for e in presence_events()[:3] if isinstance(e, GeofenceEvent))
    assert errors("geofence-event", {**enter, "reason": "left"})
    assert errors("geofence-event", {**exit_, "reason": None})
    assert errors("geofence-event", {**exit_, "reason": "bored"})


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("ts", "2026-11-23T16:02:05Z"),  # the processor always writes milliseconds
        ("ts", "2026-11-23T16:02:05.000+00:00"),
        ("ts", "2026-11-23T16:02:05.000Z\n"),
        ("event_id", "464AD358-532A-5931-A5BF-2A7C565EFBC8"),  # upper case
        ("event_id", "464ad358-532a-4931-a5bf-2a7c565efbc8"),  # version 4
        ("event_id", "464ad358532a5931a5bf2a7c565efbc8"),
        ("hotspot_id", " "),
        ("unit_id", ""),
        ("lat", 90.5),
        ("lat", True),
    ],
)
def test_output_fields_are_checked_exactly(field: str, bad: Any) -> None:
    enter = presence_events()[0].to_json_dict()
    check("geofence-event", enter)
    assert errors("geofence-event", {**enter, field: bad})


# -- dead letters -------------------------------------------------------------------------------


def refusal(raw: bytes | None) -> str:
    try:
        decode_ping(raw)
    except InvalidPing as exc:
        return str(exc)
    raise AssertionError(f"accepted: {raw!r}")


def assignment_refusal(obj: Any) -> str:
    try:
        parse_assignment(obj, known_hotspots={HOTSPOT})
    except InvalidAssignment as exc:
        return str(exc)
    raise AssertionError(f"accepted: {obj!r}")


DEAD = [
    ("pings", b'{"unit_id":"P-104","ts":"2026-11-23 16:02:05","lat":52.6,"lon":-1.1}'),
    ("pings", b'{"unit_id":"P-104","ts":1795449725,"lat":95,"lon":-1.1}'),
    ("pings", b"\xff\xfe not text"),
    ("pings", b"[1, 2]"),
    ("pings", b'{"unit_id":"P-\\n104"'),
    ("pings", None),
]


@pytest.mark.parametrize(("topic", "raw"), DEAD)
def test_dead_letters_of_pings_are_valid(topic: str, raw: bytes | None) -> None:
    record = Record(topic, 3, 18231, b"P-104", raw)
    check("dead-letter", orjson.loads(dead_letter(record, refusal(raw))))


@pytest.mark.parametrize(
    "obj",
    [
        "not an object",
        {"hotspot_id": "HS\n99", "start": "22:00", "end": "02:00", "required_minutes": 30},
        {"hotspot_id": HOTSPOT, "start": "2\n2:00", "end": "22:00", "required_minutes": 0},
        {"hotspot_id": HOTSPOT, "days": [], "start": "22:00", "required_minutes": "30"},
    ],
)
def test_dead_letters_of_assignments_are_valid(obj: Any) -> None:
    record = Record("assignments", 0, 7, None, orjson.dumps(obj))
    check("dead-letter", orjson.loads(dead_letter(record, assignment_refusal(obj))))


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (b"x" * MAX_DEAD_LETTER_RAW_BYTES, "x" * MAX_DEAD_LETTER_RAW_BYTES),
        (b"x" * 10_000_000, "x" * MAX_DEAD_LETTER_RAW_BYTES),
        # a character that the cut falls inside of is left out, not turned into base64
        (b"x" * (MAX_DEAD_LETTER_RAW_BYTES - 1) + "\u00e9".encode() * 9, "x" * 16383),
        (b"x" * (MAX_DEAD_LETTER_RAW_BYTES - 2) + "\U0001f600".encode(), "x" * 16382),
        (
            b"\xff" * (MAX_DEAD_LETTER_RAW_BYTES + 5),
            base64.b64encode(b"\xff" * MAX_DEAD_LETTER_RAW_BYTES).decode(),
        ),
    ],
    ids=["at-limit", "10MB", "cut-in-2-byte-char", "cut-in-4-byte-char", "not-utf8"],
)
def test_a_dead_letter_keeps_a_prefix_of_an_oversized_value(raw: bytes, kept: str) -> None:
    letter = dead_letter(Record("pings", 0, 5, None, raw), "value too large")
    value = orjson.loads(letter)
    check("dead-letter", value)
    assert value["raw"] == kept
    assert value["raw_bytes"] == len(raw)
    assert value["raw_truncated"] is (len(raw) > MAX_DEAD_LETTER_RAW_BYTES)
    assert len(letter) < 3 * MAX_DEAD_LETTER_RAW_BYTES


def test_a_dead_letter_error_is_one_line() -> None:
    value = {
        "error": "two\nlines",
        "raw": "",
        "raw_bytes": 0,
        "raw_truncated": False,
        "topic": "pings",
        "partition": 0,
        "offset": 0,
    }
    assert errors("dead-letter", value)
    assert not errors("dead-letter", {**value, "error": "one line"})


# -- input messages: the schema agrees with the decoder -----------------------------------------


def decoder_accepts_ping(value: Any) -> bool:
    try:
        decode_ping(orjson.dumps(value))
    except InvalidPing:
        return False
    return True


def decoder_accepts_assignment(value: Any) -> bool:
    try:
        parse_assignment(orjson.loads(orjson.dumps(value)))
    except InvalidAssignment:
        return False
    return True


GOOD_PING = {"unit_id": "P-104", "ts": "2026-11-23T16:02:05.000Z", "lat": 52.6, "lon": -1.1}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ts": "2026-11-23T17:02:05.250+01:00"},
        {"ts": "2026-11-23t16:02:05z"},
        {"ts": "2026-11-23 16:02:05Z"},
        {"ts": "2026-11-23T16:02:05.123456789-00:00"},
        {"ts": 1795449725},
        {"ts": 1795449725.25},
        {"lat": -90, "lon": 180},
        {"accuracy_m": 0},
        {"accuracy_m": None, "unit_type": None},
        {"unit_type": "x" * 64, "unit_id": "é" * 64},
        {"battery": 0.5, "note": None},
    ],
)
def test_pings_the_decoder_accepts_are_valid(changes: dict[str, Any]) -> None:
    value = {**GOOD_PING, **changes}
    assert decoder_accepts_ping(value)
    check("ping", value)


@pytest.mark.parametrize(
    "changes",
    [
        {"lat": 91},
        {"lat": -90.0001},
        {"lon": 180.5},
        {"lat": True},
        {"lat": "52.6"},
        {"lat": None},
        {"unit_id": ""},
        {"unit_id": "x" * 65},
        {"unit_id": 104},
        {"ts": "2026-11-23T16:02:05"},
        {"ts": "2026-11-23T16:02:05+24:00"},
        {"ts": "2026-11-23T23:59:60Z"},
        {"ts": "2026-02-30T16:02:05Z"},
        {"ts": "1969-12-31T23:59:59Z"},
        {"ts": "2026-11-23T16:02:05Z\n"},
        {"ts": -1},
        {"ts": 253402300800},
        {"ts": False},
        {"accuracy_m": -1},
        {"accuracy_m": "8"},
        {"unit_type": ""},
        {"unit_type": 3},
    ],
)
def test_pings_the_decoder_refuses_are_invalid(changes: dict[str, Any]) -> None:
    value = {**GOOD_PING, **changes}
    assert not decoder_accepts_ping(value)
    assert errors("ping", value)


def test_a_ping_without_a_required_field_is_invalid() -> None:
    for field in ("unit_id", "ts", "lat", "lon"):
        value = {k: v for k, v in GOOD_PING.items() if k != field}
        assert not decoder_accepts_ping(value)
        assert errors("ping", value)


def test_the_size_limit_is_left_to_the_decoder() -> None:
    """A JSON Schema cannot limit a value's bytes: the limit is in the schema's description."""
    value = {**GOOD_PING, "padding": "x" * MAX_PING_BYTES}
    assert not decoder_accepts_ping(value)
    check("ping", value)
    assert f"{MAX_PING_BYTES} bytes" in schemas.schema("ping")["description"]


_MAX_TS_S = 253_402_300_799.999
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=70)
_missing = st.just(...)
_ints = st.integers(-(2**63), 2**63 - 1)  # what JSON from orjson holds


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """An RFC 3339 time inside the range, in any of the forms the decoder reads."""
    day = draw(st.dates(date(1970, 1, 2), date(9999, 12, 30)))
    moment = draw(st.times())
    day_text = f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    clock = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    fraction = draw(st.sampled_from(["", "."]))
    if fraction:
        fraction += draw(st.text("0123456789", min_size=1, max_size=12))
    zone = draw(st.sampled_from(["Z", "z", "+", "-"]))
    if zone in "+-":
        zone += f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}"
    return f"{day_text}{draw(st.sampled_from('Tt '))}{clock}{fraction}{zone}"


#: ways to spoil a good timestamp (and the identity)
_SPOILERS = [
    lambda s: s,
    lambda s: s[:19],  # no zone
    lambda s: s.replace(":", "", 1),
    lambda s: s.replace("-", "/", 1),
    lambda s: s + "\n",
    lambda s: s[:10] + "_" + s[11:],
    lambda s: s[:17] + "60" + s[19:],  # a leap second
    lambda s: s[:19] + "," + s[20:] if s[19:20] == "." else s,
    lambda s: s[:19] + ".Z",
    lambda s: s[:19] + "+01",
    lambda s: s[:19] + "+0100",
    lambda s: s[:19] + "+24:00",
    lambda s: "0" + s,
]
_loose_rfc3339 = st.from_regex(
    r"\A[12][0-9]{3}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9]"
    r"(\.[0-9]{1,4})?([Zz]|[+-][0-2][0-9]:[0-6][0-9])\Z"
)
_numbers = st.one_of(
    _ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-200, 200),
    st.integers(-200, 200),
)
_ts = st.one_of(
    st.builds(lambda s, spoil: spoil(s), rfc3339(), st.sampled_from(_SPOILERS)),
    _loose_rfc3339,
    st.floats(-1, 2 * _MAX_TS_S, allow_nan=False),
    st.floats(_MAX_TS_S - 0.01, _MAX_TS_S + 0.01),
    st.floats(-0.01, 0.01),
    _numbers,
    _text,
    st.booleans(),
    st.none(),
)
_extra = st.dictionaries(
    _text.filter(lambda k: k not in GOOD_PING and k not in ("accuracy_m", "unit_type")),
    st.one_of(st.none(), st.integers(-9, 9), st.text(max_size=8)),
    max_size=2,
)


def spoiled(draw: st.DrawFn, good: dict[str, Any], anything: dict[str, Any]) -> Any:
    """A value made of good fields, with up to two of them replaced by anything (which may be
    missing, or good again), plus other fields; now and then not an object at all."""
    fields = {name: draw(strategy) for name, strategy in good.items()}
    for name in draw(st.sets(st.sampled_from(sorted(anything)), max_size=2)):
        fields[name] = draw(anything[name])
    value = {k: v for k, v in fields.items() if v is not ...}
    value.update(draw(_extra))
    return value if draw(st.integers(0, 9)) else draw(st.lists(_ints, max_size=2))


_GOOD_PING_FIELDS = {
    "unit_id": st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=64),
    "ts": st.one_of(rfc3339(), st.floats(0, _MAX_TS_S), st.integers(0, int(_MAX_TS_S))),
    "lat": st.one_of(st.floats(-90, 90), st.integers(-90, 90)),
    "lon": st.one_of(st.floats(-180, 180), st.integers(-180, 180)),
    "accuracy_m": st.one_of(_missing, st.none(), st.floats(0, 1e9), st.integers(0, 10**9)),
    "unit_type": st.one_of(
        _missing,
        st.none(),
        st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=64),
    ),
}
_ANY_PING_FIELDS = {
    "unit_id": st.one_of(_text, _ints, st.none(), _missing),
    "ts": st.one_of(_ts, _missing),
    "lat": st.one_of(_numbers, st.booleans(), st.none(), _text, _missing),
    "lon": st.one_of(_numbers, st.booleans(), st.none(), _text, _missing),
    "accuracy_m": st.one_of(_missing, st.none(), _numbers, st.booleans(), _text),
    "unit_type": st.one_of(_missing, st.none(), _text, _ints),
}


@st.composite
def ping_values(draw: st.DrawFn) -> Any:
    return spoiled(draw, _GOOD_PING_FIELDS, _ANY_PING_FIELDS)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


#: RFC 3339's date-time (section 5.6, with its note's t, z and space), by shape only
_RFC3339_SHAPE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def documented_ts_gap(ts: Any, by_decoder: bool) -> bool:
    """Whether the Ping schema's descriptions name this ``ts`` as one where the schema and the
    decoder differ: a string not of RFC 3339's shape that the decoder reads anyway (it reads
    more ISO 8601 forms than the interface promises), February 29 of a year that is not a leap
    year (refused by the decoder alone), and a range bound crossed by a zone offset or by less
    than half a millisecond."""
    if isinstance(ts, str):
        if not _RFC3339_SHAPE.fullmatch(ts):
            return by_decoder
        if ts[:10] in ("1970-01-01", "9999-12-31"):
            return True
        return ts[4:10] == "-02-29" and not _is_leap(int(ts[:4])) and not by_decoder
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return (-0.0006 < ts < 0 or _MAX_TS_S < ts < _MAX_TS_S + 0.0006) and by_decoder
    return False


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ping_values())
def test_the_ping_schema_accepts_what_the_decoder_accepts(value: Any) -> None:
    raw = orjson.dumps(value)
    assert len(raw) <= MAX_PING_BYTES
    by_decoder = decoder_accepts_ping(value)
    by_schema = validator("ping").is_valid(orjson.loads(raw))
    event(f"decoder accepts: {by_decoder}")
    if by_decoder != by_schema:
        assert documented_ts_gap(value["ts"], by_decoder), (by_decoder, errors("ping", value))
        # ... and the ts alone: with a plain one, both accept the rest
        plain = {**value, "ts": GOOD_PING["ts"]}
        assert decoder_accepts_ping(plain) and validator("ping").is_valid(plain)
        event(f"documented difference, decoder accepts: {by_decoder}")


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-23T16:02:05+0100",
        "2026-11-23T16:02:05+01",
        "2026-11-23T16:02+01:00",
        "2026-11-23T16:02:05,5Z",
        "2026-11-23T16:02:05.Z",
        "2026-11-23T160205+01:00",
        "2026-W48-1T16:02:05Z",
    ],
)
def test_iso_8601_forms_beyond_rfc_3339_are_read_but_not_promised(ts: str) -> None:
    value = {**GOOD_PING, "ts": ts}
    assert decoder_accepts_ping(value)
    assert errors("ping", value)


@settings(max_examples=400, deadline=None)
@given(rfc3339())
def test_every_valid_time_form_is_valid(ts: str) -> None:
    value = {**GOOD_PING, "ts": ts}
    assert decoder_accepts_ping(value)
    check("ping", value)


GOOD_ASSIGNMENT = schemas.schema("assignment")["examples"][0]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"days": "daily"},
        {"days": None, "min_visit_minutes": None, "unit_types": None},
        {"days": ["mon", "mon"], "required_minutes": 0.5},
        {"start": "00:00", "end": "23:59"},
        {"note": "from the planning tool"},
    ],
)
def test_assignments_the_decoder_accepts_are_valid(changes: dict[str, Any]) -> None:
    value = {**GOOD_ASSIGNMENT, **changes}
    assert decoder_accepts_assignment(value)
    check("assignment", value)


def test_a_window_as_the_processor_writes_it_is_a_valid_assignment() -> None:
    hotspot_id, window = parse_assignment(GOOD_ASSIGNMENT)
    check("assignment", {"hotspot_id": hotspot_id, **window_to_obj(window)})


@pytest.mark.parametrize(
    "changes",
    [
        {"hotspot_id": ""},
        {"hotspot_id": " \t"},
        {"hotspot_id": None},
        {"days": []},
        {"days": "weekly"},
        {"days": ["Mon"]},
        {"start": "24:00"},
        {"start": "7:00"},
        {"end": None},
        {"required_minutes": 0},
        {"required_minutes": True},
        {"required_minutes": None},
        {"min_visit_minutes": -1},
        {"unit_types": []},
        {"unit_types": [""]},
        {"unit_types": "police"},
    ],
)
def test_assignments_the_decoder_refuses_are_invalid(changes: dict[str, Any]) -> None:
    value = {**GOOD_ASSIGNMENT, **changes}
    assert not decoder_accepts_assignment(value)
    assert errors("assignment", value)


_good_hhmm = st.from_regex(r"\A([01][0-9]|2[0-3]):[0-5][0-9]\Z")
_hhmm = st.one_of(
    st.from_regex(r"\A[0-2][0-9]:[0-6][0-9]\Z"), _text, st.integers(0, 2400), st.none(), _missing
)
_minutes = st.one_of(
    _numbers, st.floats(-1, 100), st.just(0), st.booleans(), st.none(), st.text(max_size=3)
)
_GOOD_ASSIGNMENT_FIELDS = {
    "hotspot_id": _text.filter(str.strip),
    "days": st.one_of(
        _missing, st.none(), st.just("daily"), st.lists(st.sampled_from(WEEKDAYS), min_size=1)
    ),
    "start": _good_hhmm,
    "end": _good_hhmm,
    "required_minutes": st.one_of(st.floats(0, 1e6, exclude_min=True), st.integers(1, 10**6)),
    "min_visit_minutes": st.one_of(_missing, st.none(), st.floats(0, 1e6), st.integers(0, 99)),
    "unit_types": st.one_of(_missing, st.none(), st.lists(st.text(min_size=1), min_size=1)),
}
_ANY_ASSIGNMENT_FIELDS = {
    "hotspot_id": st.one_of(
        _text, st.sampled_from([" ", "\u2003", "\x1c", "\ufeff"]), st.none(), _ints, _missing
    ),
    "days": st.one_of(
        _missing,
        st.none(),
        st.sampled_from(["daily", "weekly", "Daily"]),
        st.lists(st.one_of(st.sampled_from(WEEKDAYS), st.text(max_size=4)), max_size=3),
        _ints,
    ),
    "start": _hhmm,
    "end": _hhmm,
    "required_minutes": st.one_of(_minutes, _missing),
    "min_visit_minutes": st.one_of(_minutes, _missing),
    "unit_types": st.one_of(
        _missing, st.none(), st.lists(st.one_of(st.text(max_size=3), _ints), max_size=3), _text
    ),
}


@st.composite
def assignment_values(draw: st.DrawFn) -> Any:
    return spoiled(draw, _GOOD_ASSIGNMENT_FIELDS, _ANY_ASSIGNMENT_FIELDS)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assignment_values())
def test_the_assignment_schema_accepts_what_the_decoder_accepts(value: Any) -> None:
    by_decoder = decoder_accepts_assignment(value)
    by_schema = validator("assignment").is_valid(value)
    event(f"decoder accepts: {by_decoder}")
    # documented: start equal to end is refused by the processor alone
    same_times = (
        isinstance(value, dict) and "start" in value and value.get("start") == value.get("end")
    )
    assert by_decoder == by_schema or (same_times and by_schema), (
        by_decoder,
        errors("assignment", value),
    )


# -- docs/interface.md --------------------------------------------------------------------------

#: the message headings of docs/interface.md section 5 -> the schema of their examples
DOC_SECTIONS = {
    "Ping": "ping",
    "Assignment": "assignment",
    "GeofenceEvent": "geofence-event",
    "DwellEvent": "dwell-event",
    "CoverageAlert": "coverage-alert",
    "DeadLetter": "dead-letter",
    "DispatchSuggestion": "dispatch-suggestion",
}
INTERFACE = ROOT / "docs" / "interface.md"


def doc_examples() -> dict[str, list[Any]]:
    """The JSON values of the fenced json blocks under each message heading (``### 5.N Name``),
    one per line."""
    found: dict[str, list[Any]] = {}
    heading: str | None = None
    block: list[str] | None = None
    for line in INTERFACE.read_text(encoding="utf-8").splitlines():
        if block is not None:
            if line.startswith("```"):
                if heading is not None:
                    found[heading].extend(json.loads(text) for text in block if text.strip())
                block = None
            else:
                block.append(line)
            continue
        if line.startswith("#"):
            match = re.match(r"### 5\.\d+ (\w+)", line)
            heading = match[1] if match else None
            if heading is not None:
                found.setdefault(heading, [])
        elif line.startswith("```json"):
            block = []
    return found


def test_every_message_heading_has_a_schema_and_examples() -> None:
    examples = doc_examples()
    assert set(examples) == set(DOC_SECTIONS)
    assert all(examples.values())


@pytest.mark.parametrize("heading", list(DOC_SECTIONS))
def test_every_example_in_the_docs_is_valid(heading: str) -> None:
    for value in doc_examples()[heading]:
        check(DOC_SECTIONS[heading], value)


def test_the_docs_link_every_schema_and_name_the_command() -> None:
    text = INTERFACE.read_text(encoding="utf-8")
    for name in schemas.NAMES:
        assert f"(../stream/schemas/{schemas.filename(name)})" in text, name
    assert "hotspot schema" in text


# -- the AsyncAPI document ----------------------------------------------------------------------


def asyncapi() -> dict[str, Any]:
    return dict(yaml.safe_load(schemas.text(schemas.ASYNCAPI)))


def pointer(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_asyncapi_document_is_asyncapi_3() -> None:
    document = asyncapi()
    assert document["asyncapi"] == "3.0.0"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert document["info"]["version"] == pyproject["project"]["version"]
    assert document["defaultContentType"] == "application/json"
    assert set(document) <= {
        "asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations",
        "components",
    }  # fmt: skip


def test_every_reference_resolves() -> None:
    document = asyncapi()
    found = refs(document)
    assert found
    for ref in found:
        if ref.startswith("#/"):
            pointer(document, ref)
        else:
            assert ref in {f"./{schemas.filename(n)}" for n in schemas.MESSAGES}, ref


def test_every_public_topic_is_a_channel_with_its_message_key_and_retention() -> None:
    document = asyncapi()
    channels = document["channels"]
    assert {c["address"] for c in channels.values()} == set(TOPIC_SCHEMAS)
    allowed_config = {
        "cleanup.policy", "retention.ms", "retention.bytes", "delete.retention.ms",
        "max.message.bytes",
    }  # fmt: skip
    for channel in channels.values():
        (message_ref,) = [m["$ref"] for m in channel["messages"].values()]
        message = pointer(document, message_ref)
        payload = message["payload"]
        assert payload["schemaFormat"] == "application/schema+json;version=draft-2020-12"
        schema_name = TOPIC_SCHEMAS[channel["address"]]
        assert payload["schema"]["$ref"] == f"./{schemas.filename(schema_name)}"
        assert message["name"] == schemas.MESSAGES[schema_name]
        assert message["bindings"]["kafka"]["key"]["description"]
        kafka = channel["bindings"]["kafka"]
        config = kafka["topicConfiguration"]
        assert set(config) <= allowed_config
        assert config["cleanup.policy"] == ["delete"]
        assert isinstance(config["retention.ms"], int) and config["retention.ms"] >= -1
        assert kafka["bindingVersion"] == "0.4.0"
        for word in ("Key:", "Retention:"):
            assert word in channel["description"], (channel["address"], word)


def test_retention_follows_what_each_topic_is_for() -> None:
    retention = {
        c["address"]: c["bindings"]["kafka"]["topicConfiguration"]["retention.ms"]
        for c in asyncapi()["channels"].values()
    }
    forever = float("inf")
    days = {t: forever if ms == -1 else ms / 86_400_000 for t, ms in retention.items()}
    assert days["pings"] < days["pings-dlq"] < days["geofence-events"] < days["dwell-events"]
    assert days["assignments"] == forever
    assert days["pings-dlq"] == days["assignments-dlq"]


def test_operations_use_the_messages_of_their_channel() -> None:
    document = asyncapi()
    operations = document["operations"]
    assert {op["action"] for op in operations.values()} == {"send", "receive"}
    for operation in operations.values():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/")
    written = {
        pointer(document, op["channel"]["$ref"])["address"]
        for op in operations.values()
        if op["action"] == "send"
    }
    assert written == OUTPUT_TOPICS


def test_internal_topics_are_named_as_left_out() -> None:
    description = asyncapi()["info"]["description"]
    for suffix in ("pings-rekeyed", "visit-updates", "presence-changelog", "coverage-changelog"):
        assert f"`<app-id>-{suffix}`" in description


def test_the_topic_mapping_covers_every_configurable_topic() -> None:
    assert set(TOPIC_SCHEMAS) == set(vars(TopicNames()).values())


# -- shipping and the command -------------------------------------------------------------------


def test_every_file_is_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["stream.schemas"]
    shipped = sorted(p.name for p in schemas.directory().iterdir() if p.suffix != ".py")
    assert shipped == sorted(schemas.filename(n) for n in schemas.NAMES)
    for name in shipped:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_schema_without_a_name_prints_every_message_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == list(schemas.MESSAGES)
    assert printed == schemas.all_schemas()


@pytest.mark.parametrize(
    ("given_name", "name"),
    [
        ("ping", "ping"),
        ("Ping", "ping"),
        ("DwellEvent", "dwell-event"),
        ("dwell-event", "dwell-event"),
        ("dwell_event", "dwell-event"),
        ("CoverageAlert", "coverage-alert"),
        ("DeadLetter", "dead-letter"),
        ("AsyncAPI", "asyncapi"),
    ],
)
def test_schema_with_a_name_prints_that_file(
    capsys: pytest.CaptureFixture[str], given_name: str, name: str
) -> None:
    assert cli.main(["schema", given_name]) == 0
    assert capsys.readouterr().out == schemas.text(name)


def test_an_unknown_schema_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema", "Pong"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert "'Pong'" in line
    assert all(name in line for name in schemas.NAMES)


def test_schema_path_finds_the_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema", "--path"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert cli.main(["schema", "DeadLetter", "--path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == folder / "dead-letter.schema.json"
    assert json.loads(path.read_text()) == schemas.schema("dead-letter")


def test_the_asyncapi_document_refers_to_files_beside_it() -> None:
    for ref in refs(asyncapi()):
        if not ref.startswith("#"):
            assert (schemas.directory() / ref).is_file()


def test_records_read_from_an_output_topic_are_checked() -> None:
    """The harness's ``consume`` passes what it read through ``check_records``."""
    good = Record(
        "geofence-events", 0, 0, b"HS-03", compact_json(presence_events()[0].to_json_dict())
    )
    bad = good._replace(value=orjson.dumps({**orjson.loads(good.value or b""), "lat": 91}))
    assert check_records("geofence-events", [good]) == [good]
    with pytest.raises(AssertionError, match="lat"):
        check_records("geofence-events", [good, bad])
    internal = Record("test-visit-updates", 0, 0, b"HS-03", b'["enter"]')
    assert check_records("test-visit-updates", [internal]) == [internal]
