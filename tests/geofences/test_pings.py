"""decode_ping / ping_from_obj against docs/interface.md, Messages: Ping (valid values) and
Semantics: valid and usable pings."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.errors import InvalidPing
from geofences.pings import (
    MAX_PING_BYTES,
    Ping,
    _checked_ping,
    _plain_ping,
    decode_ping,
    decode_with_orjson,
    ping_from_obj,
)

TS_TEXT = "2026-11-22T14:03:05Z"
TS_MS = int(datetime(2026, 11, 22, 14, 3, 5, tzinfo=UTC).timestamp()) * 1000
TS_S = TS_MS // 1000


def obj(**changes: Any) -> dict[str, Any]:
    """A valid ping object with ``changes`` applied; a value of ``...`` removes the field."""
    base: dict[str, Any] = {"unit_id": "PC-101", "ts": TS_TEXT, "lat": 52.63, "lon": -1.13}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def raw(**changes: Any) -> bytes:
    return orjson.dumps(obj(**changes))


# --- accepted ----------------------------------------------------------------------------------

ACCEPTED: list[tuple[str, bytes, Ping]] = [
    ("rfc3339-Z", raw(), Ping("PC-101", TS_MS, 52.63, -1.13)),
    (
        "rfc3339-lowercase-z-and-t",
        raw(ts="2026-11-22t14:03:05z"),
        Ping("PC-101", TS_MS, 52.63, -1.13),
    ),
    (
        "rfc3339-millis",
        raw(ts="2026-11-22T14:03:05.123Z"),
        Ping("PC-101", TS_MS + 123, 52.63, -1.13),
    ),
    (
        "rfc3339-one-digit-fraction",
        raw(ts="2026-11-22T14:03:05.5Z"),
        Ping("PC-101", TS_MS + 500, 52.63, -1.13),
    ),
    (
        "rfc3339-micros-truncated",
        raw(ts="2026-11-22T14:03:05.123999Z"),
        Ping("PC-101", TS_MS + 123, 52.63, -1.13),
    ),
    (
        "rfc3339-plus-offset",
        raw(ts="2026-11-22T15:03:05+01:00"),
        Ping("PC-101", TS_MS, 52.63, -1.13),
    ),
    (
        "rfc3339-minus-offset",
        raw(ts="2026-11-22T09:03:05.250-05:00"),
        Ping("PC-101", TS_MS + 250, 52.63, -1.13),
    ),
    (
        "rfc3339-zero-offset",
        raw(ts="2026-11-22T14:03:05+00:00"),
        Ping("PC-101", TS_MS, 52.63, -1.13),
    ),
    (
        "rfc3339-offset-crosses-date",
        raw(ts="2026-11-23T01:33:05+11:30"),
        Ping("PC-101", TS_MS, 52.63, -1.13),
    ),
    ("epoch-int", raw(ts=TS_S), Ping("PC-101", TS_MS, 52.63, -1.13)),
    ("epoch-float", raw(ts=TS_S + 0.123), Ping("PC-101", TS_MS + 123, 52.63, -1.13)),
    ("epoch-float-half", raw(ts=TS_S + 0.5), Ping("PC-101", TS_MS + 500, 52.63, -1.13)),
    ("epoch-zero", raw(ts=0), Ping("PC-101", 0, 52.63, -1.13)),
    ("int-coordinates", raw(lat=52, lon=-1), Ping("PC-101", TS_MS, 52.0, -1.0)),
    ("lat-plus-90", raw(lat=90), Ping("PC-101", TS_MS, 90.0, -1.13)),
    ("lat-minus-90", raw(lat=-90.0), Ping("PC-101", TS_MS, -90.0, -1.13)),
    ("lon-plus-180", raw(lon=180.0), Ping("PC-101", TS_MS, 52.63, 180.0)),
    ("lon-minus-180", raw(lon=-180), Ping("PC-101", TS_MS, 52.63, -180.0)),
    ("accuracy", raw(accuracy_m=12.5), Ping("PC-101", TS_MS, 52.63, -1.13, 12.5)),
    ("accuracy-int", raw(accuracy_m=7), Ping("PC-101", TS_MS, 52.63, -1.13, 7.0)),
    ("accuracy-zero", raw(accuracy_m=0), Ping("PC-101", TS_MS, 52.63, -1.13, 0.0)),
    ("accuracy-large", raw(accuracy_m=5000), Ping("PC-101", TS_MS, 52.63, -1.13, 5000.0)),
    ("unit-type", raw(unit_type="pcso"), Ping("PC-101", TS_MS, 52.63, -1.13, None, "pcso")),
    (
        "unit-type-not-a-known-one",
        raw(unit_type="dog"),
        Ping("PC-101", TS_MS, 52.63, -1.13, None, "dog"),
    ),
    (
        "both-optionals",
        raw(accuracy_m=3.0, unit_type="police"),
        Ping("PC-101", TS_MS, 52.63, -1.13, 3.0, "police"),
    ),
    ("null-accuracy", raw(accuracy_m=None), Ping("PC-101", TS_MS, 52.63, -1.13)),
    ("null-unit-type", raw(unit_type=None), Ping("PC-101", TS_MS, 52.63, -1.13)),
    (
        "extra-fields-ignored",
        raw(speed=3.2, heading="north", nested={"a": [1, 2]}, extra=None),
        Ping("PC-101", TS_MS, 52.63, -1.13),
    ),
    ("unit-id-1-char", raw(unit_id="x"), Ping("x", TS_MS, 52.63, -1.13)),
    ("unit-id-64-chars", raw(unit_id="u" * 64), Ping("u" * 64, TS_MS, 52.63, -1.13)),
    ("unit-id-64-non-ascii-chars", raw(unit_id="é" * 64), Ping("é" * 64, TS_MS, 52.63, -1.13)),
    (
        "whitespace-and-key-order",
        b' {"lon": -1.13,\n "lat": 52.63, "ts": "2026-11-22T14:03:05Z", "unit_id": "PC-101"} ',
        Ping("PC-101", TS_MS, 52.63, -1.13),
    ),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_decode_ping_accepts(value: bytes, expected: Ping) -> None:
    assert decode_ping(value) == expected
    assert ping_from_obj(orjson.loads(value)) == expected


def test_decode_ping_accepts_exactly_max_bytes() -> None:
    base = raw(pad="")
    value = raw(pad="x" * (MAX_PING_BYTES - len(base)))
    assert len(value) == MAX_PING_BYTES
    assert decode_ping(value) == Ping("PC-101", TS_MS, 52.63, -1.13)


def test_offset_and_zulu_and_epoch_agree() -> None:
    forms = ["2026-11-22T14:03:05.000Z", "2026-11-22T16:03:05+02:00", TS_S, float(TS_S)]
    assert {decode_ping(raw(ts=ts)).ts_ms for ts in forms} == {TS_MS}


# --- refused -----------------------------------------------------------------------------------

_OVERSIZED = raw(pad="x" * MAX_PING_BYTES)

REFUSED: list[tuple[str, bytes | None, str]] = [
    ("none", None, "empty value"),
    ("empty", b"", "empty value"),
    ("not-json", b"{not json", "not JSON"),
    ("truncated-json", raw()[:-1], "not JSON"),
    ("json-nan-literal", b'{"unit_id": "a", "ts": 1, "lat": NaN, "lon": 0}', "not JSON"),
    (
        "json-number-overflows-to-inf",
        b'{"unit_id": "a", "ts": 1e400, "lat": 0, "lon": 0}',
        "not JSON",
    ),
    ("not-utf8", b"\xff\xfe{}", "not UTF-8"),
    ("not-utf8-inside-string", b'{"unit_id": "\xff", "ts": 1, "lat": 0, "lon": 0}', "not UTF-8"),
    ("oversized", _OVERSIZED, f"value too large: {len(_OVERSIZED)} bytes > {MAX_PING_BYTES}"),
    ("list", b"[1, 2]", "must be a JSON object, got list"),
    ("empty-list", b"[]", "must be a JSON object, got list"),
    ("string", b'"PC-101"', "must be a JSON object, got str"),
    ("number", b"42", "must be a JSON object, got int"),
    ("float", b"4.5", "must be a JSON object, got float"),
    ("null", b"null", "must be a JSON object, got NoneType"),
    ("bool", b"true", "must be a JSON object, got bool"),
    ("empty-object", b"{}", "missing unit_id"),
    ("missing-unit-id", raw(unit_id=...), "missing unit_id"),
    ("missing-ts", raw(ts=...), "missing ts"),
    ("missing-lat", raw(lat=...), "missing lat"),
    ("missing-lon", raw(lon=...), "missing lon"),
    ("null-unit-id", raw(unit_id=None), "missing unit_id"),
    ("null-ts", raw(ts=None), "missing ts"),
    ("null-lat", raw(lat=None), "missing lat"),
    ("null-lon", raw(lon=None), "missing lon"),
    ("unit-id-number", raw(unit_id=101), "unit_id must be a string, got int"),
    ("unit-id-list", raw(unit_id=["a"]), "unit_id must be a string, got list"),
    ("unit-id-empty", raw(unit_id=""), "unit_id must be 1-64 characters, got 0"),
    ("unit-id-65-chars", raw(unit_id="u" * 65), "unit_id must be 1-64 characters, got 65"),
    ("lat-string", raw(lat="52.63"), "lat must be a number, got str"),
    ("lon-string", raw(lon="-1.13"), "lon must be a number, got str"),
    ("lat-bool", raw(lat=True), "lat must be a number, got bool"),
    ("lon-bool", raw(lon=False), "lon must be a number, got bool"),
    ("lat-object", raw(lat={"v": 1}), "lat must be a number, got dict"),
    ("ts-bool", raw(ts=True), "ts must be an RFC 3339 string or epoch seconds, got bool"),
    ("ts-list", raw(ts=[2026, 11, 22]), "ts must be an RFC 3339 string or epoch seconds, got list"),
    (
        "ts-without-zone",
        raw(ts="2026-11-22T14:03:05"),
        "ts is not an RFC 3339 timestamp with a zone",
    ),
    (
        "ts-millis-no-zone",
        raw(ts="2026-11-22T14:03:05.123"),
        "ts is not an RFC 3339 timestamp with a zone",
    ),
    ("ts-date-only", raw(ts="2026-11-22"), "ts is not an RFC 3339 timestamp with a zone"),
    ("ts-garbage", raw(ts="yesterday at noon"), "ts is not an RFC 3339 timestamp with a zone"),
    ("ts-empty-string", raw(ts=""), "ts is not an RFC 3339 timestamp with a zone"),
    ("ts-bad-month", raw(ts="2026-13-22T14:03:05Z"), "ts is not an RFC 3339 timestamp with a zone"),
    ("ts-bad-hour", raw(ts="2026-11-22T25:03:05Z"), "ts is not an RFC 3339 timestamp with a zone"),
    ("ts-numeric-string", raw(ts=str(TS_S)), "ts is not an RFC 3339 timestamp with a zone"),
    ("ts-negative-epoch", raw(ts=-1), "ts out of range"),
    ("ts-year-10000", raw(ts=253_402_300_800), "ts out of range"),
    ("ts-huge-epoch-float", raw(ts=1e306), "ts out of range"),
    ("ts-huge-negative-epoch-float", raw(ts=-1e306), "ts out of range"),
    ("lat-above-90", raw(lat=90.0001), "lat 90.0001 outside -90..90"),
    ("lat-below-90", raw(lat=-91), "lat -91.0 outside -90..90"),
    ("lon-above-180", raw(lon=180.5), "lon 180.5 outside -180..180"),
    ("lon-below-180", raw(lon=-180.000001), "outside -180..180"),
    ("accuracy-negative", raw(accuracy_m=-0.5), "accuracy_m must be >= 0, got -0.5"),
    ("accuracy-string", raw(accuracy_m="5"), "accuracy_m must be a number, got str"),
    ("accuracy-bool", raw(accuracy_m=True), "accuracy_m must be a number, got bool"),
    ("unit-type-number", raw(unit_type=3), "unit_type must be a string"),
    ("unit-type-empty", raw(unit_type=""), "unit_type must be a string"),
]


@pytest.mark.parametrize(("value", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_decode_ping_refuses_with_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidPing) as caught:
        decode_ping(value)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message  # a DeadLetter's error is one line (Messages: DeadLetter)
    assert len(message) < 300


OBJ_REFUSED: list[tuple[str, object, str]] = [
    ("ts-inf", obj(ts=float("inf")), "ts must be finite"),
    ("ts-minus-inf", obj(ts=float("-inf")), "ts must be finite"),
    ("ts-nan", obj(ts=float("nan")), "ts must be finite"),
    ("ts-huge-int", obj(ts=10**400), "ts out of range"),
    ("lat-nan", obj(lat=float("nan")), "lat must be finite"),
    ("lon-inf", obj(lon=float("inf")), "lon must be finite"),
    ("lat-huge-int", obj(lat=10**400), "lat must be finite"),
    ("accuracy-inf", obj(accuracy_m=float("inf")), "accuracy_m must be finite"),
    ("tuple", ("PC-101", TS_TEXT, 52.63, -1.13), "must be a JSON object, got tuple"),
    ("none", None, "must be a JSON object, got NoneType"),
]


@pytest.mark.parametrize(
    ("value", "reason"), [c[1:] for c in OBJ_REFUSED], ids=[c[0] for c in OBJ_REFUSED]
)
def test_ping_from_obj_refuses_with_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidPing) as caught:
        ping_from_obj(value)
    assert reason in str(caught.value)


def test_refusals_are_domain_errors_only() -> None:
    """Whatever the bytes, decode_ping either returns a Ping or raises InvalidPing (a crash here
    would stop the worker instead of dead-lettering the value: docs/interface.md, Semantics:
    valid and usable pings)."""
    samples = [c[1] for c in REFUSED] + [c[1] for c in ACCEPTED]
    samples += [b"\x00", b"{}" * 10, b'{"unit_id": {}}', raw(ts="9999-12-31T23:59:59.999Z")]
    samples += [raw(ts="0001-01-01T00:00:00Z"), raw(ts="2026-11-22T14:03:05+25:00")]
    for value in samples:
        try:
            result = decode_ping(value)
        except InvalidPing:
            continue
        assert isinstance(result, Ping)


def test_ts_bounds_of_the_representable_range() -> None:
    assert decode_ping(raw(ts="9999-12-31T23:59:59.999Z")).ts_ms == 253_402_300_799_999
    with pytest.raises(InvalidPing, match="ts out of range"):
        decode_ping(raw(ts="1969-12-31T23:59:59Z"))


_field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "2026-11-22T14:03:05Z",
            "2026-11-22T14:03:05.123+01:00",
            "2026-11-22 14:03:05.5z",
            "2026-11-22T14:03:05",
            "9999-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00+14:00",
            "P1",
            "",
            "x" * 65,
            "police",
        ]
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["unit_id", "ts", "lat", "lon", "accuracy_m", "unit_type"]),
        _field_values,
    ),
    st.floats(-100, 100),
    st.floats(-200, 200),
)
def test_the_fast_path_agrees_with_the_checked_one(
    obj: dict[str, Any], lat: float, lon: float
) -> None:
    """Whatever the fast path accepts, the full validation accepts the same; whatever it
    leaves, the full validation decides (with its reason)."""
    for candidate in (obj, {**obj, "lat": lat, "lon": lon}):
        fast = _plain_ping(candidate)
        try:
            checked: Ping | str = _checked_ping(candidate)
        except InvalidPing as exc:
            checked = str(exc)
        if fast is not None:
            assert fast == checked
        if isinstance(checked, Ping):
            assert ping_from_obj(candidate) == checked
        else:
            with pytest.raises(InvalidPing, match=re.escape(checked)):
                ping_from_obj(candidate)


def _outcome(decode: Any, value: bytes) -> str:
    """A decode's result as text: the ping's repr (so -0.0 and 0.0 differ) or the reason."""
    try:
        return repr(decode(value))
    except InvalidPing as exc:
        return f"refused: {exc}"


_json_texts = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=70),
    st.sampled_from(["é" * 64, "é" * 65, "\ud800", "\\ud800", "a\x00b"]),
)


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["unit_id", "ts", "lat", "lon", "accuracy_m", "unit_type", "speed"]),
        st.one_of(_field_values, _json_texts),
    ),
    st.floats(-90, 90) | st.integers(-90, 90),
    st.floats(-180, 180) | st.integers(-180, 180),
    st.booleans(),
    st.booleans(),
)
def test_the_msgspec_path_decodes_as_the_orjson_one(
    fields: dict[str, Any], lat: float, lon: float, usual: bool, ascii_only: bool
) -> None:
    """``decode_ping``'s msgspec fast path gives what the orjson path gives (the same ping,
    or the same refusal) on generated values: JSON written by Python's encoder (non-ASCII
    escaped or not, lone surrogates, NaN and Infinity literals, huge integers) and, with
    ``usual``, values most of which are valid pings."""
    if usual:
        fields = {"unit_id": "U1", "ts": "2026-11-22T14:03:05.123Z", **fields}
        fields.update(lat=lat, lon=lon)
    value = json.dumps(fields, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if not value or len(value) > MAX_PING_BYTES:
        return
    assert _outcome(decode_ping, value) == _outcome(decode_with_orjson, value)


@pytest.mark.parametrize(
    "value",
    [
        b'{"unit_id":"U1","ts":"2026-11-22T14:03:05Z","lat":1,"lon":2,"speed":1e400}',
        b'{"unit_id":"U1","ts":"2026-11-22T14:03:05Z","lat":1,"lon":2,"x":"\xff"}',
        b'{"unit_id":"U1","ts":"2026-11-22T14:03:05Z","lat":1,"lon":2,"x":"\\ud800"}',
        b'{"unit_id":"U1","ts":"2026-11-22T14:03:05Z","lat":1,"lon":2,"accuracy_m":1e400}',
        b'{"unit_id":"U1","unit_id":"U2","ts":"2026-11-22T14:03:05Z","lat":1,"lon":2}',
        b'{"unit_id":"U1","ts":"2026-11-22T14:03:05Z","lat":1,"lon":2,"accuracy_m":18446744073709551616}',
        b'{"unit_id":"U1","ts":"2026-11-22T14:03:05Z","lat":1,"lon":2} x',
        b'{"unit_id":"U1","ts":"2026-11-22T14:03:05Z","lat":-0.0,"lon":2}',
    ],
)
def test_what_msgspec_skips_or_reads_differently_goes_the_orjson_way(value: bytes) -> None:
    assert _outcome(decode_ping, value) == _outcome(decode_with_orjson, value)
