"""``hotspot bench``: throughput, latency and memory of the worker, measured on synthetic load
it makes itself.

Everything is seeded (:mod:`.load`). Each measurement that needs a broker starts its own
embedded broker and its own worker processes (``python -m stream.cli worker``, the same as
``hotspot worker``: :mod:`.cluster`) and the run prints a row per figure, with ratios taken
within the same run (:mod:`.report`). Benchmarks are not tests: nothing here asserts a time;
the only hard check is that the worker's output is identical to the one-ping-at-a-time
reference (:mod:`.reference`).

- :mod:`.in_process`: the matching kernel and each stage alone, no broker;
- :mod:`.throughput`: a backlog through one worker and two, against a bare consumer;
- :mod:`.latency`: ping to ``enter`` on the live clock, at shares of the backlog throughput;
- :mod:`.memory`: state per unit, and a worker's RSS with many units tracked.
"""

from stream.tools.bench.command import add_arguments, run_bench

__all__ = ["add_arguments", "run_bench"]
