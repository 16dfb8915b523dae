"""Timestamps: the core keeps time as integer epoch milliseconds (``*_ms``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


#: epoch second -> its text up to the seconds: events of a batch share a few seconds
_SECONDS: dict[int, str] = {}


def format_ms(epoch_ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, as the processor writes it: ``2026-11-22T14:03:05.000Z``."""
    seconds, ms = divmod(epoch_ms, 1000)
    text = _SECONDS.get(seconds)
    if text is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        text = _SECONDS[seconds] = f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}"
    return f"{text}.{ms:03d}Z"


#: "YYYY-MM-DDTHH:MM:SS" -> its epoch second: a batch's pings share a few seconds
_SECOND_OF: dict[str, int] = {}
#: "000".."999" -> its milliseconds: the fraction checked and read in one lookup
_MS_OF: dict[str, int] = {f"{ms:03d}": ms for ms in range(1000)}


def parse_rfc3339_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 timestamp with ``Z`` or an offset.

    Raises ``ValueError`` for anything else, including a timestamp without a zone. The usual
    shape, ``2026-11-22T14:03:05.123Z`` (as trackers and :func:`format_ms` write it), reads its
    second from a cache.
    """
    if len(text) == 24 and text[19] == "." and text[23] == "Z":
        ms = _MS_OF.get(text[20:23])
        if ms is not None:
            prefix = text[:19]
            second = _SECOND_OF.get(prefix)
            if second is None:
                if len(_SECOND_OF) >= 4096:
                    _SECOND_OF.clear()
                second = _SECOND_OF[prefix] = _parse(prefix + "Z") // 1000
            return second * 1000 + ms
    return _parse(text)


def _parse(text: str) -> int:
    if len(text) < 20 or text[10] not in "Tt ":
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    dt = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp has no time zone: {text[:40]!r}")
    return (dt - _EPOCH) // _MS
