"""The rate ratio of two Poisson counts with its exact interval (docs/interface.md, Evaluation:
summary.csv).

Conditional on the total ``n = x1 + x0``, the patrol-day count is binomial with
``p = d1·RR / (d1·RR + d0)``; the exact (Clopper–Pearson) interval of ``p``, from scipy, maps to
``RR = p / (1 − p) · d0 / d1``. Undefined values are None, never 0 or infinity: a ratio with no
crimes on either side, a bound at 0 or at infinity.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateRatio:
    """Patrol-day rate ÷ other-day rate, and its 95 % interval; None where undefined."""

    ratio: float | None
    low: float | None
    high: float | None


def rate_ratio(x1: int, d1: int, x0: int, d0: int, confidence: float = 0.95) -> RateRatio:
    """``(x1 / d1) / (x0 / d0)`` with an exact interval conditional on ``x1 + x0``."""
    if d1 <= 0 or d0 <= 0 or x1 + x0 == 0:
        return RateRatio(None, None, None)
    from scipy.stats import binomtest

    interval = binomtest(x1, x1 + x0, 0.5).proportion_ci(confidence, method="exact")
    p_low, p_high = float(interval.low), float(interval.high)
    scale = d0 / d1
    ratio = (x1 / d1) / (x0 / d0) if x1 > 0 and x0 > 0 else None
    low = p_low / (1 - p_low) * scale if p_low > 0 else None
    high = p_high / (1 - p_high) * scale if p_high < 1 else None
    return RateRatio(ratio, low, high)
