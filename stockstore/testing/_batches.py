"""batch_put, batch_get, batch_delete: aligned results, checks before writing, per-item failures."""

from __future__ import annotations

from typing import Any

import pytest

from .._store import BaseStore
from ..errors import BatchError, InvalidKeyError, SerializationError
from ._base import SuiteBase
from ._exact import assert_record
from ._records import UNSUPPORTED, Bond, Listing, Quote, Security


class BatchTests(SuiteBase):
    def test_batch_get_aligned_with_none_for_missing(self, store: BaseStore) -> None:
        recs = [Security(ssm_id=f"s{i}", v=float(i)) for i in range(50)]
        store.batch_put(recs)
        keys = ["s3", "missing", "s49", "s3", "s0", "also-missing"]
        got = store.batch_get(Security, keys)
        assert len(got) == len(keys)
        by_id = {r["ssm_id"]: r for r in recs}
        for key, obj in zip(keys, got, strict=True):
            if key in by_id:
                assert_record(obj, by_id[key])
            else:
                assert obj is None
        assert got[0] is not got[3]

    def test_one_str_where_keys_go_is_a_type_error(self, store: BaseStore) -> None:
        """Iterated, "S1" would be the keys "S" and "1": batch_delete would remove those records."""
        held = [Security(ssm_id="S"), Security(ssm_id="1"), Security(ssm_id="S1")]
        store.batch_put(held)
        with pytest.raises(
            TypeError, match=r"^batch_get takes an iterable of keys, not a str: use get\(Security, 'S1'\)"
        ):
            store.batch_get(Security, "S1")
        with pytest.raises(
            TypeError, match=r"^batch_delete takes .*, not a bytes: .*batch_delete\(Security, \[b'S1'\]\)$"
        ):
            store.batch_delete(Security, b"S1")
        with pytest.raises(
            TypeError, match=r"^get_frame takes .*, not a str: use get_frame\(Security, keys=\['S1'\]\)$"
        ):
            store.get_frame(Security, keys="S1")  # refused before pandas is needed
        for record, got in zip(held, store.batch_get(Security, ["S", "1", "S1"]), strict=True):
            assert_record(got, record)

    def test_batch_get_mixes_key_forms(self, store: BaseStore) -> None:
        a = Listing(exchange="X", ticker="A", isin="IA")
        b = Listing(exchange="X", ticker="B", isin="IB")
        store.batch_put([a, b])
        got = store.batch_get(Listing, [("X", "A"), {"isin": "IB"}, {"exchange": "X", "ticker": "B"}, {"isin": "IZ"}])
        assert_record(got[0], a)
        assert_record(got[1], b)
        assert_record(got[2], b)
        assert got[3] is None

    def test_empty_batches(self, store: BaseStore) -> None:
        store.batch_put([])
        assert store.batch_get(Security, []) == []
        assert store.batch_delete([]) == 0
        assert store.batch_delete(Security, []) == 0
        store.batch_patch(Security, [])
        self.assert_holds(store, Security, [])

    def test_last_duplicate_in_a_batch_wins(self, store: BaseStore) -> None:
        store.batch_put([Security(ssm_id="x", v=1), Security(ssm_id="x", v=2)])
        assert_record(store.get(Security, "x"), Security(ssm_id="x", v=2))
        self.assert_holds(store, Security, ["x"])

    def test_batch_of_mixed_families(self, store: BaseStore) -> None:
        objs = [Security(ssm_id="x"), Quote("q", "X", "T", 1.0), Bond(ssm_id="b"), Listing(exchange="E", ticker="T")]
        store.batch_put(objs)
        assert_record(store.get(Security, "x"), objs[0])
        assert_record(store.get(Quote, "q"), objs[1])
        assert_record(store.get(Security, "b"), objs[2])
        assert_record(store.get(Listing, ("E", "T")), objs[3])
        assert store.batch_delete(objs) == 4

    def test_batch_delete_counts_only_existing(self, store: BaseStore) -> None:
        store.batch_put([Security(ssm_id=f"s{i}") for i in range(5)])
        assert store.batch_delete(Security, ["s0", "s1", "nope", "s1"]) == 2
        assert store.batch_delete([Security(ssm_id="s2"), Security(ssm_id="nope")]) == 1
        self.assert_holds(store, Security, ["s3", "s4"], among=["s0", "s1", "s2", "nope"])
        assert store.batch_delete(Security, ["s0", "s2"]) == 0

    def test_large_batch(self, store: BaseStore) -> None:
        recs = [Security(ssm_id=i, **{f"a{j}": i * j / 3 for j in range(20)}) for i in range(2000)]
        store.batch_put(recs)
        self.assert_holds(store, Security, range(2000))
        got = store.batch_get(Security, range(2000))
        for obj, want in zip(got, recs, strict=True):
            assert_record(obj, want)
        assert store.batch_delete(Security, range(0, 2000, 2)) == 1000
        self.assert_holds(store, Security, range(1, 2000, 2), among=range(0, 2000, 2))

    @pytest.mark.parametrize("bad", ["set", "int_2_63", "dict_int_keys", "nested_set"])
    def test_unencodable_batch_writes_nothing(self, store: BaseStore, bad: str) -> None:
        old = Security(ssm_id="s0", v="old")
        store.put(old)
        batch = [Security(ssm_id="s0", v="new"), Security(ssm_id="s1"), Security(ssm_id="s2", v=UNSUPPORTED[bad])]
        with pytest.raises(SerializationError):
            store.batch_put(batch)
        assert_record(store.get(Security, "s0"), old)
        assert store.get(Security, "s1") is None
        self.assert_holds(store, Security, ["s0"], among=["s1", "s2"])

    @pytest.mark.parametrize("bad_key", [None, 1.0, True, 2**63, b"k", ("a",)], ids=repr)
    def test_invalid_key_in_batch_writes_nothing(self, store: BaseStore, bad_key: Any) -> None:
        with pytest.raises(InvalidKeyError):
            store.batch_put([Security(ssm_id="s0"), Security(ssm_id=bad_key)])
        self.assert_holds(store, Security, [], among=["s0"])

    def test_alternate_key_conflict_fails_only_that_item(self, store: BaseStore) -> None:
        holder = Listing(exchange="X", ticker="A", isin="TAKEN")
        store.put(holder)
        batch = [
            Listing(exchange="X", ticker="B", isin="IB"),
            Listing(exchange="X", ticker="C", isin="TAKEN"),
            Listing(exchange="X", ticker="D"),
        ]
        with pytest.raises(BatchError) as info:
            store.batch_put(batch)
        assert info.value.failed == [("X", "C")]
        assert_record(store.get(Listing, ("X", "B")), batch[0])
        assert_record(store.get(Listing, ("X", "D")), batch[2])
        assert store.get(Listing, ("X", "C")) is None
        assert_record(store.get(Listing, {"isin": "TAKEN"}), holder)
