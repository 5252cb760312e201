"""Transfer rate and ETA from progress samples. Pure functions: the controller stores the
previous sample and hands it back in.

The rate is an exponentially weighted moving average whose weight depends on the time between
samples, so sparse and bursty updates smooth the same way as regular ones.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

RATE_TIME_CONSTANT = 10.0  # seconds: the rate forgets older samples with this time constant
MIN_SAMPLE_INTERVAL = 0.5  # seconds: closer samples are folded into the next one


class RateSample(NamedTuple):
    rate: Optional[float]        # bytes/s, None until two samples exist
    sample_bytes: Optional[int]  # the baseline for the next sample
    sample_at: Optional[float]


def next_rate(previous: RateSample, bytes_done: int, now: float,
              time_constant: float = RATE_TIME_CONSTANT) -> RateSample:
    if previous.sample_at is None or previous.sample_bytes is None:
        return RateSample(previous.rate, bytes_done, now)
    if bytes_done < previous.sample_bytes:
        # A new pass restarted the counters: keep the rate, start a new baseline.
        return RateSample(previous.rate, bytes_done, now)
    elapsed = now - previous.sample_at
    if elapsed < MIN_SAMPLE_INTERVAL:
        return previous
    instant = (bytes_done - previous.sample_bytes) / elapsed
    if previous.rate is None:
        return RateSample(instant, bytes_done, now)
    weight = 1.0 - math.exp(-elapsed / time_constant)
    return RateSample(previous.rate + weight * (instant - previous.rate), bytes_done, now)


def eta_seconds(bytes_done: int, bytes_total: Optional[int], rate: Optional[float]) -> Optional[float]:
    """Seconds until bytes_total at the current rate; None when unknown, 0 when done."""
    if not bytes_total:
        return None
    remaining = bytes_total - bytes_done
    if remaining <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return remaining / rate
