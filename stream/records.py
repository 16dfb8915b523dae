"""The records the shell reads and the messages it writes, in one place.

A :class:`Record` is what a stage reads of a consumed Kafka record; a :data:`Message` is a
(key, value) pair for a topic; an :data:`Outgoing` is a message with its topic and partition,
as the outbox sends it. :class:`VisitUpdate` is the internal message from presence to coverage.
"""

from __future__ import annotations

import base64
from typing import Any, NamedTuple, Protocol

import orjson

#: (topic, key, value (None: a tombstone), partition or None for the key's partition)
Outgoing = tuple[str, bytes | None, bytes | None, int | None]


class Record(NamedTuple):
    """One consumed Kafka record: the fields of aiokafka's ``ConsumerRecord`` the stages read.
    The worker's consumer makes these of the pings topics' fetched batches directly
    (``stream.worker.intake.read_in_bulk``); the coverage stage reads Faust's records as they are
    (see :class:`Consumed`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: the Kafka record timestamp, epoch milliseconds (for ping-to-event latency)
    timestamp: int | None = None


class Consumed(Protocol):
    """What the stages read of a record: a :class:`Record` or an aiokafka ``ConsumerRecord``."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | None: ...


Message = tuple[bytes | None, bytes]


class VisitUpdate(NamedTuple):
    """What the coverage stage needs from presence, keyed by hot spot (one per usable ping
    inside a hot spot: a named tuple, cheap to build)."""

    kind: str  # "enter" | "inside" | "exit"
    hotspot_id: str
    unit_id: str
    unit_type: str
    ts_ms: int
    enter_ms: int

    def encode(self) -> bytes:
        return orjson.dumps([self.kind, self.unit_id, self.unit_type, self.ts_ms, self.enter_ms])


#: at most this many bytes of a refused value are kept in its dead letter's ``raw``: a dead
#: letter holds a whole ping (at most 16 KiB) and stays far under Kafka's default 1 MB message
#: size, however large the refused value was
MAX_DEAD_LETTER_RAW_BYTES = 16_384


def _raw_text(kept: bytes, truncated: bool) -> str:
    """``kept`` as text, or base64 if not UTF-8; a prefix cut inside a character loses the
    character's first bytes, not the text."""
    try:
        return kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        if truncated and exc.reason == "unexpected end of data" and exc.end == len(kept):
            try:
                return kept[: exc.start].decode("utf-8")
            except UnicodeDecodeError:
                pass
    return base64.b64encode(kept).decode("ascii")


def dead_letter(record: Consumed, error: str) -> bytes:
    """The DeadLetter message (docs/interface.md, Messages) for a record: ``raw`` is the value, or
    its first ``MAX_DEAD_LETTER_RAW_BYTES`` bytes (cut at a character for text), as text or
    base64 if not UTF-8; ``raw_bytes`` is the whole value's size and ``raw_truncated`` says
    whether ``raw`` holds less than all of it."""
    raw = record.value or b""
    truncated = len(raw) > MAX_DEAD_LETTER_RAW_BYTES
    text = _raw_text(raw[:MAX_DEAD_LETTER_RAW_BYTES] if truncated else raw, truncated)
    return compact_json(
        {
            "error": error,
            "raw": text,
            "raw_bytes": len(raw),
            "raw_truncated": truncated,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
        }
    )


def compact_json(obj: Any) -> bytes:
    """``orjson.dumps`` for a value that outlives the call (kept in a table, or held with its
    batch until the producer has it): orjson's result keeps its 4 KiB output buffer, so a
    kept value gets a right-sized copy: thousands of event payloads at 4 KiB each would be
    most of the worker's transient memory."""
    return bytes(memoryview(orjson.dumps(obj)))
