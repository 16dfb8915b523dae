"""The clocks (stream/worker/clock.py): the event clock's watermark readiness and broadcast,
the live clock's tick; both behind the one interface the wiring and the control room use."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from stream.records import Record
from stream.worker.clock import CLOCKS, ClockParts, EventClock, LiveClock, wall_clock_ms
from stream.worker.intake import Batch

P0, P1 = TP("pings", 0), TP("pings", 1)


class Stage:
    def __init__(self) -> None:
        self.partition_max_ts: dict[tuple[str, int], int] = {}
        self.first_ts: dict[str, int] = {}
        self.expired: list[tuple[int, set[int]]] = []

    def watermark_ms(self) -> int | None:
        return min(self.partition_max_ts.values(), default=None)

    def watermark_parts(self) -> dict[str, int]:
        return {f"{t}:{p}": ts for (t, p), ts in self.partition_max_ts.items()}

    def expire(self, now_ms: int, owned: set[int], out: Any = None) -> Any:
        self.expired.append((now_ms, owned))
        return out if out is not None else SimpleNamespace(events=[])


class Outbox:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, messages: Any) -> None:
        self.sent.extend(messages)


def parts(stage: Stage, outbox: Outbox, highwater: dict[TP, int], **more: Any) -> ClockParts:
    consumer = SimpleNamespace(highwater=highwater.get, _committed_offset={})
    ownership = SimpleNamespace(
        ping_tps=lambda: [P0, P1],
        ping_partitions=lambda: {0, 1},
        coverage_partitions=lambda: {0},
    )
    fields: dict[str, Any] = {
        "app": SimpleNamespace(consumer=consumer),
        "stage": stage,
        "coverage": None,
        "ownership": ownership,
        "outbox": outbox,
        "coverage_store": dict,
        "publish": None,
        "publish_coverage": None,
        "visit_topic": "visit-updates",
        "partitions": 2,
        "ledgers_lock": asyncio.Lock(),
        "states_guard": asyncio.Lock(),
    }
    fields.update(more)
    return ClockParts(**fields)


def batch(tp: TP, *offsets: int) -> Batch:
    return Batch(tp, [Record(tp.topic, tp.partition, o, b"U", b"{}") for o in offsets])


def test_the_clocks_by_name() -> None:
    assert {"live": LiveClock, "event": EventClock} == CLOCKS
    assert LiveClock.coalesce_inside and not EventClock.coalesce_inside


def test_the_watermark_waits_for_a_partition_not_read_up_to_its_end() -> None:
    """Partition 1 has delivered no ping: until it is read up to its high watermark the
    watermark does not move (nothing expires, nothing is broadcast); then it does."""
    stage, outbox = Stage(), Outbox()
    clock = EventClock(parts(stage, outbox, {P0: 10, P1: 3}))

    async def scenario() -> list[Any]:
        stage.partition_max_ts[("pings", 0)] = 1_000
        out = SimpleNamespace()
        clock.batch_processed([batch(P0, 8, 9)], out)
        await clock.batch_published()
        sent_before = list(outbox.sent)
        clock.batch_processed([batch(P1, 0, 1, 2)], out)  # read to its end: no ping delivered
        await clock.batch_published()
        await clock.batch_published()  # the same watermark is sent once
        return sent_before

    sent_before = asyncio.run(scenario())
    assert sent_before == []
    assert stage.expired == [(1_000, {0, 1})]
    assert [(topic, partition) for topic, _, _, partition in outbox.sent] == [
        ("visit-updates", 0),
        ("visit-updates", 1),
    ]
    assert clock.now_ms() == 1_000
    assert clock.coverage_now_ms() is None


def test_a_revoke_forgets_which_partitions_were_idle() -> None:
    stage = Stage()
    highwater = {P0: 0, P1: 0}
    clock = EventClock(parts(stage, Outbox(), highwater))
    assert clock.ready()
    clock.revoked()
    highwater[P1] = 5  # records arrived while the partition was away
    assert not clock.ready()


def test_the_live_clock_ticks_by_the_wall_clock() -> None:
    stage, published, covered = Stage(), [], []

    async def publish(out: Any) -> None:
        published.append(out)

    async def publish_coverage(out: Any) -> None:
        covered.append(out)

    coverage = SimpleNamespace(advance_all=lambda now, owned, store: ("advanced", owned))
    clock = LiveClock(
        parts(
            stage,
            Outbox(),
            {},
            coverage=coverage,
            publish=publish,
            publish_coverage=publish_coverage,
        )
    )
    before = wall_clock_ms()
    asyncio.run(clock.assigned())
    assert before <= stage.expired[0][0] <= wall_clock_ms()
    assert published == []  # no unit went silent
    assert covered == [("advanced", {0})]
    assert before <= (clock.now_ms() or 0) and before <= (clock.coverage_now_ms() or 0)
