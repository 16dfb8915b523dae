"""Pings: what a valid ping is (docs/interface.md, Messages: Ping) and how one is decoded."""

from __future__ import annotations

import math
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson

from geofences.errors import InvalidPing
from geofences.timefmt import parse_rfc3339_ms

MAX_PING_BYTES = 16_384
MAX_UNIT_ID_CHARS = 64
MAX_UNIT_TYPE_CHARS = 64
#: |lat| and |lon| at most (degrees, WGS 84)
MAX_LAT = 90.0
MAX_LON = 180.0
KNOWN_UNIT_TYPES = frozenset({"police", "pcso", "outreach", "security"})
UNKNOWN_UNIT_TYPE = "unknown"
#: one string object per known type, for every state to share (each decoded one is an object of
#: its own)
_SHARED_TYPES: dict[str | None, str] = {t: t for t in KNOWN_UNIT_TYPES}

_MIN_TS_MS = 0
_MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class Ping(NamedTuple):
    """One decoded, valid ping. ``ts_ms`` is epoch milliseconds.

    A named tuple rather than a frozen dataclass: one is made per ping, and it is cheaper to
    build."""

    unit_id: str
    ts_ms: int
    lat: float
    lon: float
    accuracy_m: float | None = None
    unit_type: str | None = None


def _number(obj: dict[str, Any], field: str) -> float:
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPing(f"{field} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range (only from Python callers)
        raise InvalidPing(f"{field} must be finite") from None
    if not math.isfinite(number):
        raise InvalidPing(f"{field} must be finite")
    return number


def _ts_ms(value: object) -> int:
    if isinstance(value, str):
        try:
            ts_ms = parse_rfc3339_ms(value)
        except ValueError:
            raise InvalidPing(
                f"ts is not an RFC 3339 timestamp with a zone: {value[:40]!r}"
            ) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidPing("ts must be finite")
        if abs(value) > 1e15:  # value * 1000 could overflow to inf (1e306) and crash round()
            raise InvalidPing(f"ts out of range: {value!r}")
        ts_ms = round(value * 1000)
    else:
        raise InvalidPing(
            f"ts must be an RFC 3339 string or epoch seconds, got {type(value).__name__}"
        )
    if not _MIN_TS_MS <= ts_ms <= _MAX_TS_MS:
        raise InvalidPing(f"ts out of range: {value!r}")
    return ts_ms


def ping_from_obj(obj: object) -> Ping:
    """Validate a decoded JSON value against docs/interface.md, Messages: Ping; raise
    ``InvalidPing`` with a reason."""
    if type(obj) is dict:
        ping = _plain_ping(obj)
        if ping is not None:
            return ping
    return _checked_ping(obj)


def _plain_ping(obj: dict[str, Any]) -> Ping | None:
    """The ping if ``obj`` is valid in the usual way (a string ts, float coordinates), else
    ``None`` for :func:`_checked_ping` to decide: the same result, with fewer checks.
    (Comparisons are false for NaN, so the range checks also refuse non-finite numbers.)"""
    unit_id = obj.get("unit_id")
    ts = obj.get("ts")
    lat = obj.get("lat")
    lon = obj.get("lon")
    if not (
        type(unit_id) is str
        and 1 <= len(unit_id) <= MAX_UNIT_ID_CHARS
        and type(ts) is str
        and type(lat) is float
        and type(lon) is float
        and -MAX_LAT <= lat <= MAX_LAT
        and -MAX_LON <= lon <= MAX_LON
    ):
        return None
    accuracy_m = obj.get("accuracy_m")
    if accuracy_m is not None:
        if type(accuracy_m) is int and 0 <= accuracy_m <= 1 << 53:
            accuracy_m = float(accuracy_m)
        elif not (type(accuracy_m) is float and 0.0 <= accuracy_m <= 1e308):
            return None
    unit_type = obj.get("unit_type")
    if unit_type is not None and not (
        type(unit_type) is str and 1 <= len(unit_type) <= MAX_UNIT_TYPE_CHARS
    ):
        return None
    try:
        ts_ms = parse_rfc3339_ms(ts)
    except ValueError:
        return None
    if not _MIN_TS_MS <= ts_ms <= _MAX_TS_MS:
        return None
    # tuple.__new__ builds a named tuple quicker than its generated __new__
    return tuple.__new__(
        Ping, (unit_id, ts_ms, lat, lon, accuracy_m, _SHARED_TYPES.get(unit_type, unit_type))
    )


def _checked_ping(obj: object) -> Ping:
    if not isinstance(obj, dict):
        raise InvalidPing(f"value must be a JSON object, got {type(obj).__name__}")
    for field in ("unit_id", "ts", "lat", "lon"):
        if obj.get(field) is None:
            raise InvalidPing(f"missing {field}")
    unit_id = obj["unit_id"]
    if not isinstance(unit_id, str):
        raise InvalidPing(f"unit_id must be a string, got {type(unit_id).__name__}")
    if not 1 <= len(unit_id) <= MAX_UNIT_ID_CHARS:
        raise InvalidPing(f"unit_id must be 1-{MAX_UNIT_ID_CHARS} characters, got {len(unit_id)}")
    ts_ms = _ts_ms(obj["ts"])
    lat = _number(obj, "lat")
    lon = _number(obj, "lon")
    if not -MAX_LAT <= lat <= MAX_LAT:
        raise InvalidPing(f"lat {lat} outside -{MAX_LAT:g}..{MAX_LAT:g}")
    if not -MAX_LON <= lon <= MAX_LON:
        raise InvalidPing(f"lon {lon} outside -{MAX_LON:g}..{MAX_LON:g}")
    accuracy_m = None
    if obj.get("accuracy_m") is not None:
        accuracy_m = _number(obj, "accuracy_m")
        if accuracy_m < 0:
            raise InvalidPing(f"accuracy_m must be >= 0, got {accuracy_m}")
    unit_type = obj.get("unit_type")
    if unit_type is not None and (
        not isinstance(unit_type, str) or not 1 <= len(unit_type) <= MAX_UNIT_TYPE_CHARS
    ):
        raise InvalidPing(f"unit_type must be a string of 1-{MAX_UNIT_TYPE_CHARS} characters")
    return Ping(unit_id, ts_ms, lat, lon, accuracy_m, _SHARED_TYPES.get(unit_type, unit_type))


_UnitType = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_UNIT_TYPE_CHARS)]


class _UsualPing(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The usual shape of a valid ping (a string ts, no other fields), decoded and checked by
    msgspec in C, quicker than ``orjson.loads`` and :func:`_plain_ping` (decoding is the largest
    piece of the presence stage: docs/performance.md). Only a fast path: whatever it refuses,
    :func:`ping_from_obj` decides and names the reason, and whatever it accepts those rules
    accept too, with the same ping (``tests/geofences/test_pings.py`` compares the two on
    generated values). Unknown fields are refused here because msgspec skips their values
    without the checks orjson makes (UTF-8, surrogates, numbers beyond a double)."""

    unit_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_UNIT_ID_CHARS)]
    ts: str
    lat: Annotated[float, msgspec.Meta(ge=-MAX_LAT, le=MAX_LAT)]
    lon: Annotated[float, msgspec.Meta(ge=-MAX_LON, le=MAX_LON)]
    accuracy_m: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    unit_type: _UnitType | None = None


_decode_usual = msgspec.json.Decoder(_UsualPing).decode


def decode_ping(raw: bytes | None) -> Ping:
    """Decode one Kafka value into a ``Ping``; every way it can be wrong raises ``InvalidPing``."""
    if not raw:
        raise InvalidPing("empty value")
    if len(raw) > MAX_PING_BYTES:
        raise InvalidPing(f"value too large: {len(raw)} bytes > {MAX_PING_BYTES}")
    try:
        usual = _decode_usual(raw)
        ts_ms = parse_rfc3339_ms(usual.ts)
    except ValueError:  # msgspec's DecodeError and ValidationError are ValueErrors
        return decode_with_orjson(raw)
    if not _MIN_TS_MS <= ts_ms <= _MAX_TS_MS:
        return decode_with_orjson(raw)
    unit_type = usual.unit_type
    return tuple.__new__(
        Ping,
        (
            usual.unit_id,
            ts_ms,
            usual.lat,
            usual.lon,
            usual.accuracy_m,
            _SHARED_TYPES.get(unit_type, unit_type),
        ),
    )


def decode_with_orjson(raw: bytes) -> Ping:
    """:func:`decode_ping` for any value (at most ``MAX_PING_BYTES``, not empty): every rule,
    and the reason a value breaks one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPing("value is not UTF-8") from None
        raise InvalidPing(f"not JSON: {str(exc).splitlines()[0]}") from None
    return ping_from_obj(obj)
