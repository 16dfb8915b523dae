"""Checking messages against the shipped JSON Schemas (``stream/schemas``), for tests.

``check(name, value)`` fails with every violation listed; ``check_records(topic, records)``
checks the values of records read from an output topic, which the harness's ``consume`` does
for every integration test. Format checking is on (``format: uuid`` is checked; ``date-time``
only if ``rfc3339-validator`` is installed, and the schemas' patterns check it anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, TypeVar

import orjson
from jsonschema import Draft202012Validator

from stream import schemas
from stream.worker.settings import TopicNames

_NAMES = TopicNames()
#: default topic name -> the schema of its values
TOPIC_SCHEMAS: dict[str, str] = {
    _NAMES.pings: "ping",
    _NAMES.assignments: "assignment",
    _NAMES.geofence_events: "geofence-event",
    _NAMES.dwell_events: "dwell-event",
    _NAMES.coverage_alerts: "coverage-alert",
    _NAMES.pings_dlq: "dead-letter",
    _NAMES.assignments_dlq: "dead-letter",
    _NAMES.dispatch_suggestions: "dispatch-suggestion",
}
#: the topics the processor writes: what the integration tests read back is checked
OUTPUT_TOPICS = frozenset(
    {
        _NAMES.geofence_events,
        _NAMES.dwell_events,
        _NAMES.coverage_alerts,
        _NAMES.pings_dlq,
        _NAMES.assignments_dlq,
        _NAMES.dispatch_suggestions,
    }
)

R = TypeVar("R", bound=Sequence[Any])


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator of a message schema, by canonical name, with format checking."""
    return Draft202012Validator(
        schemas.schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def errors(name: str, value: Any) -> list[str]:
    """Every violation of schema ``name`` by ``value``, one line each (none: valid)."""
    found = validator(name).iter_errors(value)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(value)'}: {e.message}" for e in found]


def check(name: str, value: Any) -> None:
    """Fail unless ``value`` is valid under schema ``name``."""
    problems = errors(name, value)
    assert not problems, f"not a valid {name}: {value!r}\n" + "\n".join(problems)


def check_records(topic: str, records: R) -> R:
    """Check the value of every record of an output topic against its schema; records of other
    topics pass unchecked. Returns ``records``."""
    if topic in OUTPUT_TOPICS:
        for record in records:
            check(TOPIC_SCHEMAS[topic], orjson.loads(record.value))
    return records
