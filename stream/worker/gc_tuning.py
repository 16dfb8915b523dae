"""The cyclic garbage collector's settings for the worker.

Each ping allocates a few dozen short-lived containers, nearly all freed by reference
counting; with Python's thresholds the collector still walks the young generation every 700
allocations, and the older ones, which hold the unit states, in turn. A full collection walks
every object the worker holds (Faust, aiokafka, the states), stopping the event loop long
enough to show in the ping-to-event latency.
"""

from __future__ import annotations

import gc

#: the cyclic collector's thresholds (``gc.set_threshold``; Python's are 700, 10, 10): far
#: fewer young collections for the same garbage
GC_THRESHOLDS = (100_000, 50, 100)


def settle_garbage_collector() -> None:
    """Raise the collector's thresholds, and move what exists once the worker is assigned and
    restored, which lives as long as the assignment, out of its sight (``gc.freeze``)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()
