"""Bandwidth limits: a token bucket, sans-IO (the caller passes the time and does the waiting),
and the RATE syntax of the daemons' --bandwidth-limit options.

A bucket fills at `rate` bytes a second up to `burst` bytes. `reserve(n, now)` takes n tokens
at once, whatever n is, and answers how long the caller must wait before sending its n bytes:
the balance may go negative, and that debt delays whoever reserves next. So a frame larger
than the burst still goes through, callers sharing one bucket are served in the order they
reserved, and over any stretch longer than a burst the bytes sent stay within `rate`.
"""
from __future__ import annotations

import re
from typing import Optional

# A bucket holds at most this many seconds of its rate (and never less than MIN_BURST bytes):
# enough to absorb the gaps between a sender's writes, small enough not to distort a measure
# over a few seconds.
BURST_SECONDS = 0.05
MIN_BURST = 64 << 10

_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([kKMGT])(i?))?[bB]?(?:/s)?\s*$")
_UNITS = {"": 1, "k": 1, "K": 1, "M": 2, "G": 3, "T": 4}


def parse_rate(text: str) -> Optional[float]:
    """Bytes a second from RATE: a number with an optional unit, decimal (K, M, G: 1000^n) or
    binary (Ki, Mi, Gi: 1024^n), an optional B and /s: "20M", "20MB/s", "512Ki", "1.5G".
    0 (or "none", "off", "") means no limit: None."""
    if text.strip().lower() in ("", "0", "none", "off", "unlimited"):
        return None
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"bandwidth {text!r}: expected a number of bytes a second with an optional "
                         "unit, e.g. 20M (20 MB/s), 512Ki, 1.5G; 0 for no limit")
    number, unit, binary = m.group(1), m.group(2) or "", m.group(3)
    rate = float(number) * ((1024 if binary else 1000) ** _UNITS[unit] if unit else 1)
    if rate == 0:
        return None
    if rate < 1024:
        raise ValueError(f"bandwidth {text!r}: below 1 KiB/s; 0 means no limit")
    return rate


def format_rate(rate: Optional[float]) -> str:
    if not rate:
        return "unlimited"
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if rate >= scale:
            return f"{rate / scale:g} {unit}"
    return f"{rate:g} B/s"


class TokenBucket:
    def __init__(self, rate: float, burst: Optional[float] = None, now: float = 0.0):
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(self.rate * BURST_SECONDS, MIN_BURST)
        self.tokens = self.burst      # may go negative: a debt later reservations wait out
        self.stamp = now
        self.reserved = 0             # bytes reserved in all

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def reserve(self, n: int, now: float) -> float:
        """Take n tokens; seconds to wait (from `now`) before sending the n bytes."""
        self._refill(now)
        self.tokens -= n
        self.reserved += n
        return -self.tokens / self.rate if self.tokens < 0 else 0.0

    def wait_time(self, now: float) -> float:
        """Seconds until the bucket is out of debt (0 when it is not in debt)."""
        self._refill(now)
        return -self.tokens / self.rate if self.tokens < 0 else 0.0
