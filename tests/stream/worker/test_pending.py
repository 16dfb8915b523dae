"""A coverage partition's pending log against a plain list of what is pending: what a restore
from the store gives is what was pending when the log last wrote, whatever came between."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.worker.pending import (
    ENTER,
    EXIT,
    INSIDE,
    PENDING_KEY_PREFIX,
    PendingLog,
    kept_updates,
    pending_key,
    stored_chunks,
)

PARTITION = 3
HOTSPOTS = ["HS-01", "HS-02"]

#: ("add", (hot spot, ts)) | ("batch", watermark step): the end of a batch, the watermark moved
#: on by the step | ("restart", 0): the log rebuilt from the store
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.tuples(st.sampled_from(HOTSPOTS), st.integers(0, 30))),
        st.tuples(st.just("batch"), st.sampled_from([0, 0, 1, 3, 8])),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=60,
)


def restored(store: dict[bytes, bytes]) -> PendingLog:
    return PendingLog(PARTITION, stored_chunks(store.items()).get(PARTITION, ()))


@settings(max_examples=400, deadline=None)
@given(operations, st.booleans())
def test_a_restore_gives_what_was_pending_at_the_last_batch(ops: list[Any], clock: bool) -> None:
    """Updates at or before the watermark are applied at the end of their batch (the coverage
    stage catches them up), the rest wait; ``clock`` False: no watermark yet."""
    log = PendingLog(PARTITION)
    watermark: int | None = 0 if clock else None
    pending: list[tuple[str, list[Any]]] = []  # arrival order
    saved: list[tuple[str, list[Any]]] = []
    store: dict[bytes, bytes] = {}
    for number, (op, value) in enumerate(ops):
        if op == "add":
            hotspot_id, ts_ms = value
            [update] = kept_updates([(INSIDE, f"U{number}", None, ts_ms, None)])
            log.add(hotspot_id, [update])
            pending.append((hotspot_id, update))
        elif op == "batch":
            if watermark is not None:
                watermark += value
                pending = [(h, u) for h, u in pending if u[3] > watermark]
            writes = log.changes(watermark)
            keys = [key for key, _ in writes]
            assert len(keys) == len(set(keys)), "a key written twice in one go"
            for key, raw in writes:
                assert key[:1] == PENDING_KEY_PREFIX
                if raw is None:
                    assert store.pop(key, None) is not None, "a delete of a key never written"
                else:
                    store[key] = raw
            saved = list(pending)
            assert log.changes(watermark) == [], "nothing changed since"
            got = restored(store).restored
            assert got == by_hotspot(saved)
            assert len(store) <= len(saved) + 1, "chunks left that nothing needs"
        else:
            log = restored(store)
            assert log.restored == by_hotspot(saved)
            pending = list(saved)
            if watermark is not None and log.written_ms is not None:
                assert log.written_ms <= watermark
    if not saved:
        assert len(store) <= 1


def by_hotspot(entries: list[tuple[str, list[Any]]]) -> dict[str, list[list[Any]]]:
    grouped: dict[str, list[list[Any]]] = {}
    for hotspot_id, update in entries:
        grouped.setdefault(hotspot_id, []).append(update)
    return grouped


def test_a_used_up_chunk_gives_its_key_to_the_next_or_is_deleted() -> None:
    log = PendingLog(PARTITION)
    log.add("HS-01", [[ENTER, "U1", "police", 10, None]])
    log.add("HS-01", [[INSIDE, "U1", None, 20, None]])
    assert [key for key, _ in log.changes(5)] == [pending_key(PARTITION, 0)]
    log.add("HS-02", [[ENTER, "U2", "police", 30, None]])
    # the first chunk partly applied: a second chunk, with the watermark
    assert [(key, raw is None) for key, raw in log.changes(15)] == [
        (pending_key(PARTITION, 1), False)
    ]
    # the first chunk used up: its key goes to the next chunk
    log.add("HS-02", [[INSIDE, "U2", None, 40, None]])
    assert [(key, raw is None) for key, raw in log.changes(25)] == [
        (pending_key(PARTITION, 0), False)
    ]
    # everything applied: nothing left in the store
    assert sorted(log.changes(50)) == [
        (pending_key(PARTITION, 0), None),
        (pending_key(PARTITION, 1), None),
    ]


def test_a_stored_chunk_restores_its_updates_as_kept() -> None:
    """As written (kinds coded; an inside update without unit type or enter time), read back as
    ``kept_updates`` holds them: tuples."""
    log = PendingLog(PARTITION)
    updates = [
        [ENTER, "U1", "police", 10, None],
        [INSIDE, "U1", None, 20, None],
        [EXIT, "U1", "police", 30, 10],
    ]
    log.add("HS-01", updates)
    [(key, raw)] = log.changes(5)
    assert key == pending_key(PARTITION, 0) and raw is not None
    assert orjson.loads(raw) == [0, 5, [["HS-01", *u] for u in updates]]
    restored = PendingLog(PARTITION, [(0, raw)]).restored
    assert restored == {
        "HS-01": [
            (ENTER, "U1", "police", 10, None),
            (INSIDE, "U1", None, 20, None),
            (EXIT, "U1", "police", 30, 10),
        ]
    }
    assert all(type(u) is tuple for u in restored["HS-01"])
