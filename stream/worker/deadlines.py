"""Signal-loss deadlines of the units of one partition, filed by the second they fall in.

The presence stage asks after each batch which units' deadlines passed; looking at every unit
would cost as much as the batch. A heap of ``(deadline, unit)`` tuples would answer that with
a tuple and an int a unit; here a unit costs a slot in its second's list, and the heap holds
one int per second: memory per tracked unit is what limits a worker.

Entries may be stale: a unit's deadline moves later with every ping, and its entry is not
moved; when the entry comes due the caller says what the deadline is now, and the unit is filed
again there. So the wheel holds, for every unit with a deadline, an entry no later than it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable


class DeadlineWheel:
    def __init__(self) -> None:
        self._buckets: dict[int, list[str]] = {}
        self._seconds: list[int] = []
        #: entries filed, stale ones included (the caller rebuilds when they outgrow its units)
        self.entries = 0

    def add(self, deadline_ms: int, unit_id: str) -> None:
        second = deadline_ms // 1000
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [unit_id]
            heapq.heappush(self._seconds, second)
        else:
            bucket.append(unit_id)
        self.entries += 1

    def pop_due(self, now_ms: int, deadline_of: Callable[[str], int | None]) -> set[str]:
        """The units whose deadline, ``deadline_of(unit)`` now, is before ``now_ms``; their
        entries are removed, and units with a later deadline are filed again under it."""
        due: set[str] = set()
        later: list[tuple[int, str]] = []
        seconds = self._seconds
        while seconds and seconds[0] * 1000 < now_ms:
            for unit_id in self._buckets.pop(heapq.heappop(seconds)):
                self.entries -= 1
                deadline = deadline_of(unit_id)
                if deadline is None:
                    continue
                if deadline < now_ms:
                    due.add(unit_id)
                else:
                    later.append((deadline, unit_id))
        for deadline, unit_id in later:
            self.add(deadline, unit_id)
        return due

    def rebuild(self, deadlines: Iterable[tuple[int, str]]) -> None:
        """File exactly these ``(deadline, unit)`` entries, dropping every stale one."""
        self._buckets.clear()
        self._seconds.clear()
        self.entries = 0
        for deadline, unit_id in deadlines:
            self.add(deadline, unit_id)
