"""Times as the controller keeps them (float seconds since the epoch, UTC) and as the API shows
them (ISO 8601 with an explicit zone)."""
from __future__ import annotations

import datetime as _dt
from typing import Optional, Union

from .errors import InvalidInput

TimeLike = Union[float, int, str, _dt.datetime]


def parse_iso8601(text: str) -> float:
    """ISO 8601 date-time with a time zone -> epoch seconds. A time without a zone is ambiguous
    between the operator's and the receiver's clock, so it is refused."""
    if not isinstance(text, str) or not text or len(text) > 64:
        raise InvalidInput("time must be an ISO 8601 string")
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):  # fromisoformat() before 3.11 does not accept "Z"
        candidate = candidate[:-1] + "+00:00"
    try:
        value = _dt.datetime.fromisoformat(candidate)
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"time needs a zone (e.g. Z or +02:00): {text!r}")
    return value.timestamp()


def to_epoch(value: Optional[TimeLike]) -> Optional[float]:
    """Accept epoch seconds, an aware datetime or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput("time must not be a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInput("datetime needs a time zone")
        return value.timestamp()
    return parse_iso8601(value)


def iso(epoch: Optional[float]) -> Optional[str]:
    if epoch is None:
        return None
    when = _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
