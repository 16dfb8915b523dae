"""The one-ping-at-a-time reference and the comparison of the worker's output with it.

The reference feeds the presence stage one ping at a time with the event clock after each,
which is what a slow replay gives: the worker, taking the same pings in batches of thousands,
must write exactly the same events. That comparison is the bench's only hard check.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import orjson

from geofences.index import HotSpotIndex
from geofences.presence import PresenceSettings
from stream.records import Record
from stream.tools.bench.load import Load, partitioned
from stream.worker.presence_stage import PresenceStage

#: the topics the reference and the worker are compared on
OUT_TOPICS = ("geofence-events", "dwell-events")


def reference_events(load: Load, partitions: int) -> dict[str, list[bytes]]:
    """Every event of the load, one ping at a time through the presence stage with the event
    clock after each (what a slow replay gives): the output the worker must reproduce."""
    stage = PresenceStage(HotSpotIndex(load.collection.hotspots), PresenceSettings(), "pings")
    table: dict[bytes, bytes] = {}
    events: dict[str, list[bytes]] = {topic: [] for topic in OUT_TOPICS}
    offsets = [0] * partitions
    waiting = set(range(partitions))
    for p, (key, value) in partitioned(load.messages, partitions):
        out = stage.process([Record("pings", p, offsets[p], key, value)], table.get)
        offsets[p] += 1
        waiting.discard(p)
        if not waiting:
            watermark = stage.watermark_ms()
            if watermark is not None:
                stage.expire(watermark, range(partitions), out)
        table.update({k: v for k, (_, v) in stage.take_writes().items()})
        events["geofence-events"] += [v for _, v in out.geofence_events]
        events["dwell-events"] += [v for _, v in out.dwell_events]
    return events


def compare(want: dict[str, list[bytes]], got: dict[str, list[bytes]]) -> str:
    """ "identical", or what differs. Same events (ids, fields, bytes) and, per unit, the same
    order; a redelivery after a rebalance may repeat an event (same id): counted apart."""
    problems = []
    for topic in OUT_TOPICS:
        distinct = list(dict.fromkeys(got[topic]))
        if sorted(distinct) != sorted(want[topic]):
            missing = len(set(want[topic]) - set(distinct))
            extra = len(set(distinct) - set(want[topic]))
            problems.append(f"{topic}: {missing} missing, {extra} unexpected")
            continue
        if _per_unit(distinct) != _per_unit(want[topic]):
            problems.append(f"{topic}: per-unit order differs")
        if len(distinct) != len(got[topic]):
            problems.append(f"{topic}: {len(got[topic]) - len(distinct)} redelivered duplicates")
    return "identical" if not problems else "; ".join(problems)


def _per_unit(payloads: Sequence[bytes]) -> dict[tuple[str, str], list[bytes]]:
    """Events by (unit, hot spot), in order: the output topics are keyed by hot spot, so a
    unit's events in different hot spots may sit in different partitions."""
    result: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for payload in payloads:
        event = orjson.loads(payload)
        result[(event["unit_id"], event["hotspot_id"])].append(payload)
    return dict(result)
