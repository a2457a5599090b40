"""`stockstore._lifetime` alone: lifetimes resolved to absolute expiries in epoch milliseconds."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockstore._lifetime import check_lifetime, expiry_ms, to_expiry
from stockstore.errors import StoreError

NOW = 1_700_000_000.25
NOW_MS = NOW * 1000
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def test_none_never_expires() -> None:
    assert expiry_ms(None, object(), NOW) is None
    assert expiry_ms(lambda obj: None, object(), NOW) is None
    assert to_expiry(None, NOW) is None
    assert to_expiry(math.inf, NOW) is None


@pytest.mark.parametrize(
    "lifetime",
    [10, 10.0, dt.timedelta(seconds=10), lambda obj: 10, lambda obj: dt.timedelta(milliseconds=10_000)],
    ids=["int", "float", "timedelta", "callable-int", "callable-timedelta"],
)
def test_relative_lifetimes(lifetime: Any) -> None:
    assert expiry_ms(lifetime, None, NOW) == math.ceil(NOW_MS + 10_000)


def test_naive_datetime_means_utc() -> None:
    naive = dt.datetime(2030, 1, 1, 12, 0, 0, 500)
    aware = naive.replace(tzinfo=dt.UTC)
    want = math.ceil(aware.timestamp() * 1000)
    assert to_expiry(naive, NOW) == want
    assert expiry_ms(naive, None, NOW) == want
    assert expiry_ms(lambda obj: naive, None, NOW) == want


def test_aware_datetime_uses_its_offset() -> None:
    local = dt.datetime(2030, 1, 1, 17, 30, tzinfo=IST)
    assert to_expiry(local, NOW) == to_expiry(dt.datetime(2030, 1, 1, 12, 0), NOW)


@pytest.mark.parametrize(
    "value",
    [0, 0.0, -1, -1e-9, -math.inf, dt.timedelta(0), dt.timedelta(microseconds=-1), dt.datetime(2000, 1, 1)],
    ids=repr,
)
def test_non_positive_or_past_is_already_expired(value: Any) -> None:
    expiry = to_expiry(value, NOW)
    assert expiry is not None
    assert expiry <= NOW_MS


@given(st.floats(min_value=1e-6, max_value=1e10))
def test_a_positive_lifetime_never_ends_early(seconds: float) -> None:
    expiry = to_expiry(seconds, NOW)
    assert expiry is not None
    assert expiry > NOW_MS
    assert expiry >= (NOW + seconds) * 1000
    assert expiry - (NOW + seconds) * 1000 < 1 + 1e-3 * max(1.0, seconds)


def test_long_lifetimes_stay_relative() -> None:
    forty_days = 40 * 86400
    assert to_expiry(forty_days, NOW) == math.ceil((NOW + forty_days) * 1000)
    assert to_expiry(dt.timedelta(days=3650), NOW) == math.ceil((NOW + 3650 * 86400) * 1000)


def test_callable_gets_the_object() -> None:
    seen: list[Any] = []
    obj = object()
    expiry_ms(lambda o: seen.append(o), obj, NOW)
    assert seen == [obj]


@pytest.mark.parametrize("bad", ["10", b"1", math.nan, True, [1], dt.date(2030, 1, 1), object()], ids=repr)
def test_bad_values_raise(bad: Any) -> None:
    with pytest.raises(StoreError):
        to_expiry(bad, NOW)
    with pytest.raises(StoreError):
        expiry_ms(lambda obj: bad, None, NOW)


@pytest.mark.parametrize("bad", ["10", math.nan, dt.date(2030, 1, 1)], ids=repr)
def test_static_lifetime_checked_when_the_store_is_built(bad: Any) -> None:
    with pytest.raises(StoreError):
        check_lifetime(bad)


@pytest.mark.parametrize(
    "good", [None, 0, -5, 3.5, dt.timedelta(days=400), dt.datetime(2000, 1, 1), lambda obj: "later"]
)
def test_static_lifetime_check_accepts(good: Any) -> None:
    assert check_lifetime(good) is None  # does not raise; callables are only judged on what they return
