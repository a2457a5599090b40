"""Lifetimes: how long a store keeps a record, resolved to an absolute expiry.

Expiries are whole milliseconds since the Unix epoch everywhere inside
stockstore (Redis' PEXPIREAT unit), so every tier compares the same numbers.
One range for every backend: the years a `datetime` can name, 1 to 9999
(`MIN_EXPIRY_MS`, `MAX_EXPIRY_MS`).  A lifetime that ends later is refused; one
that ends earlier has ended, and ends at the start of year 1.  "Never" is
``None``, no number: every expiry, the epoch's 0 too, is a time.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any, TypeAlias

from .errors import StoreError

MIN_EXPIRY_MS = math.floor(dt.datetime.min.replace(tzinfo=dt.UTC).timestamp() * 1000)
MAX_EXPIRY_MS = math.ceil(dt.datetime.max.replace(tzinfo=dt.UTC).timestamp() * 1000)

LifetimeValue: TypeAlias = int | float | dt.timedelta | dt.datetime | None
Lifetime: TypeAlias = LifetimeValue | Callable[[Any], LifetimeValue]


def check_lifetime(lifetime: Lifetime) -> None:
    """Reject a static lifetime that can never work, when the store is built."""
    if callable(lifetime) and not isinstance(lifetime, (dt.timedelta, dt.datetime)):
        return
    to_expiry(lifetime, 0.0)


def expiry_ms(lifetime: Lifetime, obj: Any, now: float) -> int | None:
    """The expiry of *obj* under *lifetime*: epoch milliseconds, or ``None`` for never.

    A result at or before ``now`` means "already expired": the store does not keep it.
    """
    if lifetime is None:
        return None
    if callable(lifetime) and not isinstance(lifetime, (dt.timedelta, dt.datetime)):
        return to_expiry(lifetime(obj), now)
    return to_expiry(lifetime, now)


def to_expiry(value: Any, now: float) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return _in_range(math.ceil(float(value.timestamp()) * 1000), value)
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif type(value) in (int, float):
        seconds = value
    else:
        raise StoreError(f"a lifetime must be None, seconds, a timedelta or a datetime, not {value!r:.80}")
    if math.isnan(seconds):
        raise StoreError("a lifetime cannot be NaN")
    if seconds == math.inf:
        return None
    seconds = float(seconds)
    # Round up so a lifetime never ends early; a non-positive one ends now.
    return _in_range(math.ceil((now + seconds) * 1000) if seconds > 0 else math.floor(now * 1000), value)


def _in_range(expires_ms: int, value: Any) -> int:
    if expires_ms > MAX_EXPIRY_MS:
        raise StoreError(
            f"a lifetime must end by the end of 9999 (the last year a datetime can name), not {value!r:.80}: "
            "use None for a record that never expires"
        )
    return max(expires_ms, MIN_EXPIRY_MS)  # before year 1: as long over as year 1 is
