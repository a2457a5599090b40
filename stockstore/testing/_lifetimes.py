"""Lifetimes: seconds, timedelta, datetimes, callables; an expired record is never returned (see the Lifetimes page).

Time is the test's `FakeClock`: the tests tick it, and never sleep.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import pytest

from .._store import BaseStore
from ..errors import BatchError, StoreError
from ._base import SuiteBase
from ._exact import assert_record
from ._records import IST, UTC, Listing, Security


class LifetimeTests(SuiteBase):
    def test_number_of_seconds(self) -> None:
        store = self.make(lifetime=10)
        store.put(Security(ssm_id="x"))
        self.clock.tick(9.5)
        assert store.get(Security, "x") is not None
        self.clock.tick(1)
        self._assert_gone(store, "x")

    def test_float_seconds(self) -> None:
        store = self.make(lifetime=0.5)
        store.put(Security(ssm_id="x"))
        self.clock.tick(0.25)
        assert store.get(Security, "x") is not None
        self.clock.tick(0.5)
        self._assert_gone(store, "x")

    @pytest.mark.parametrize(
        "make",
        [
            lambda now: 100,
            lambda now: 100.0,
            lambda now: dt.timedelta(seconds=100),
            lambda now: dt.datetime.fromtimestamp(now + 100, UTC).replace(tzinfo=None),
            lambda now: dt.datetime.fromtimestamp(now + 100, IST),
        ],
        ids=["int", "float", "timedelta", "naive-datetime-is-utc", "aware-datetime"],
    )
    def test_callable_lifetime(self, make: Callable[[float], Any]) -> None:
        seen: list[Any] = []

        def lifetime(obj: Any) -> Any:
            seen.append(obj)
            return make(self.clock.now) if obj["short"] else None

        store = self.make(lifetime=lifetime)
        store.batch_put([Security(ssm_id="short", short=True), Security(ssm_id="long", short=False)])
        assert {type(o) for o in seen} == {Security}
        assert {o["ssm_id"] for o in seen} >= {"short", "long"}
        self.clock.tick(99)
        assert store.get(Security, "short") is not None
        self.clock.tick(2)
        self._assert_gone(store, "short")
        self.clock.tick(10 * 365 * 86400)
        assert_record(store.get(Security, "long"), Security(ssm_id="long", short=False))

    @pytest.mark.parametrize(
        "lifetime",
        [
            0,
            0.0,
            -1,
            -0.001,
            dt.timedelta(0),
            dt.timedelta(seconds=-5),
            lambda obj: 0,
            lambda obj: -3.5,
            lambda obj: dt.timedelta(days=-1),
            lambda obj: dt.datetime(2000, 1, 1),
            lambda obj: dt.datetime(2000, 1, 1, tzinfo=UTC),
        ],
        ids=["0", "0.0", "-1", "-ms", "td0", "td-5", "f0", "f-3.5", "f-td", "f-naive-past", "f-aware-past"],
    )
    def test_expired_lifetime_is_not_kept_and_removes_the_old_copy(self, lifetime: Any) -> None:
        static = self.make(lifetime=lifetime)
        static.put(Security(ssm_id="new"))
        self._assert_gone(static, "new")
        static.batch_put([Security(ssm_id="b1"), Security(ssm_id="b2")])
        self._assert_gone(static, "b1")

        def only_when_asked(obj: Any) -> Any:
            if not obj.get("expire"):
                return None
            return lifetime(obj) if callable(lifetime) else lifetime

        store = self.make(lifetime=only_when_asked)
        store.batch_put([Security(ssm_id="old", v=1), Security(ssm_id="b", v=1)])
        store.put(Listing(exchange="X", ticker="T", isin="I"))
        store.put(Security(ssm_id="old", v=2, expire=True))
        self._assert_gone(store, "old")
        store.batch_put([Security(ssm_id="b", v=2, expire=True), Security(ssm_id="c")])
        self._assert_gone(store, "b")
        self.assert_holds(store, Security, ["c"], among=["new", "b1", "b2", "old", "b"])
        store.put(Listing(exchange="X", ticker="T", isin="I", expire=True))
        assert store.get(Listing, {"isin": "I"}) is None
        assert store.get(Listing, ("X", "T")) is None

    def test_past_absolute_datetime(self) -> None:
        past = dt.datetime.fromtimestamp(self.clock.now - 1, UTC)
        store = self.make(lifetime=lambda obj: past)
        store.put(Security(ssm_id="x"))
        self._assert_gone(store, "x")

    @pytest.mark.parametrize("days", [31, 400, 365 * 50])
    def test_long_lifetimes(self, days: int) -> None:
        store = self.make(lifetime=dt.timedelta(days=days))
        store.put(Security(ssm_id="x"))
        self.clock.tick((days - 1) * 86400)
        assert store.get(Security, "x") is not None
        self.clock.tick(2 * 86400)
        self._assert_gone(store, "x")

    def test_static_datetime_lifetime(self) -> None:
        store = self.make(lifetime=dt.datetime.fromtimestamp(self.clock.now + 60, UTC).replace(tzinfo=None))
        store.put(Security(ssm_id="x"))
        self.clock.tick(59)
        assert store.get(Security, "x") is not None
        self.clock.tick(2)
        self._assert_gone(store, "x")

    def test_expired_alternate_key_is_free(self) -> None:
        store = self.make(lifetime=lambda obj: 10 if obj["ticker"] == "A" else None)
        store.put(Listing(exchange="X", ticker="A", isin="I"))
        self.clock.tick(11)
        assert store.get(Listing, {"isin": "I"}) is None
        store.put(Listing(exchange="X", ticker="B", isin="I"))
        assert_record(store.get(Listing, {"isin": "I"}), Listing(exchange="X", ticker="B", isin="I"))

    def test_expired_does_not_count_for_delete_or_clear(self) -> None:
        store = self.make(lifetime=lambda obj: 10 if obj["short"] else None)
        store.batch_put([Security(ssm_id=i, short=i < 3) for i in range(6)])
        self.clock.tick(11)
        assert store.batch_delete(Security, [0, 1, 3]) == 1
        assert store.clear(Security) == self.cleared(2)

    def test_patch_of_an_expired_record_starts_afresh(self) -> None:
        store = self.make(lifetime=lambda obj: 10 if obj.get("short") else None)
        store.put(Security(ssm_id="x", short=True, old=1))
        self.clock.tick(11)
        store.patch(Security, "x", {"short": False})
        assert_record(store.get(Security, "x"), Security(ssm_id="x", short=False))

    def test_invalid_lifetime_is_refused(self) -> None:
        for bad in ["10", math.nan, object(), 1e17]:  # 1e17 s: past the end of 9999, the last a datetime names
            with pytest.raises((StoreError, TypeError, ValueError)):
                self.make(lifetime=bad)

    @pytest.mark.parametrize(
        "when",
        [dt.datetime(1970, 1, 1), dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(1900, 1, 1), dt.datetime.min],
        ids=["naive-epoch", "aware-epoch", "1900", "datetime-min"],
    )
    def test_an_expiry_at_or_before_the_epoch_is_already_expired(self, when: dt.datetime) -> None:
        """No expiry may read as "never": the epoch and earlier are past, for put, batch_put and patch."""
        store = self.make(lifetime=lambda obj: when if obj.get("expire") else None)
        store.put(Security(ssm_id="x", expire=True))
        self._assert_gone(store, "x")
        store.batch_put([Security(ssm_id=f"b{i}", expire=True) for i in range(20)])
        for i in range(20):
            self._assert_gone(store, f"b{i}")
        store.put(Security(ssm_id="p", v=1))
        store.patch(Security, "p", {"expire": True})
        self._assert_gone(store, "p")
        self.clock.tick(10**6)
        self._assert_gone(store, "p")

    def test_lifetimes_up_to_the_end_of_9999(self) -> None:
        last = dt.datetime.max.replace(tzinfo=UTC)
        store = self.make(lifetime=lambda obj: last)
        store.put(Security(ssm_id="x"))
        self.clock.tick(10**9)  # thirty years on
        assert_record(store.get(Security, "x"), Security(ssm_id="x"))

    @pytest.mark.parametrize(
        "outcome",
        [ValueError("no lifetime for this one"), "ten seconds", 1e17, dt.timedelta(days=10**7)],
        ids=["raises", "wrong-type", "too-long", "past-9999"],
    )
    def test_a_lifetime_that_fails_fails_a_batch_before_anything_is_written(self, outcome: Any) -> None:
        """A callback that raises or returns no valid lifetime: the error names the record, nothing is written."""

        def lifetime(obj: Any) -> Any:
            if obj["ssm_id"] != "S3333":
                return 60
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        store = self.make(lifetime=lifetime)
        store.put(Security(ssm_id="S0001", v="old"))
        batch = [Security(ssm_id=f"S{i:04d}", v="new") for i in range(1, 5001)]  # several chunks
        with pytest.raises(StoreError, match="S3333") as failed:
            store.batch_put(batch)
        assert not isinstance(failed.value, BatchError), "nothing was written: no BatchError"
        assert_record(store.get(Security, "S0001"), Security(ssm_id="S0001", v="old"))
        assert store.batch_get(Security, ["S0002", "S2001", "S4999"]) == [None, None, None]

    def _assert_gone(self, store: BaseStore, key: Any) -> None:
        """The record of Security under *key* has expired: no call sees it."""
        assert store.get(Security, key) is None
        assert store.batch_get(Security, [key]) == [None]
        if self.lists_keys:
            assert key not in list(store.keys(Security))
            assert store.count(Security) == len(list(store.keys(Security)))
        assert store.batch_delete(Security, [key]) == 0
