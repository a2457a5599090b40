"""A stored record carries its own key: another key's bytes are never taken for it.

Records are planted through the store's own write primitive (as a copy of one
key's value under another would be made on the server), then read through the
public API: the read refuses them with a `SerializationError` that names the key
asked for, and every other record reads as it was.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from .. import _codec
from .._entry import versions
from .._keys import encode_key, family_of
from .._record import Record
from .._store import BaseStore
from ..backends.base import Entry
from ..errors import SerializationError
from ._base import SuiteBase
from ._exact import assert_record
from ._records import Security


class Coupon(Record):
    """A record of another family, whose payload is planted under a Security key."""

    __stockstore_keys__: ClassVar[list[Any]] = ["coupon_id"]


def plant(store: BaseStore, key: Any, payload: bytes) -> None:
    """Store *payload* as the record of Security *key*, through the store's write primitive."""
    family = family_of(Security)
    entry = Entry(payload, versions.next(), None, encode_key((key,)), ())
    with store._errors():
        store._write(family, [entry], store.clock() * 1000)


def payload_of(obj: Any) -> bytes:
    family = family_of(type(obj))
    return _codec.pack((family.tag(type(obj)), dict(obj)))


class IntegrityTests(SuiteBase):
    def test_a_record_copied_under_another_key_is_refused_and_named(self, store: BaseStore) -> None:
        records = [Security(ssm_id=f"K{i:04d}", v=float(i)) for i in range(3000)]
        store.batch_put(records)
        plant(store, "K1234", payload_of(records[42]))  # K0042's bytes, under K1234
        with pytest.raises(SerializationError, match="K1234"):
            store.get(Security, "K1234")
        with pytest.raises(SerializationError, match="K1234") as failed:
            store.batch_get(Security, [r["ssm_id"] for r in records])
        assert "K0042" in str(failed.value), "the message says whose record it is"
        with pytest.raises(SerializationError, match="K1234"):
            store.patch(Security, "K1234", {"w": 1.0})
        assert_record(store.get(Security, "K0042"), records[42])
        store.delete(Security, "K1234")
        assert store.get(Security, "K1234") is None
        store.put(records[1234])
        assert_record(store.get(Security, "K1234"), records[1234])

    def test_a_frame_refuses_a_copied_record_and_names_it(self, store: BaseStore) -> None:
        pytest.importorskip("pandas")
        store.batch_put([Security(ssm_id=f"K{i}", v=float(i)) for i in range(10)])
        plant(store, "K7", payload_of(Security(ssm_id="K3", v=3.0)))
        with pytest.raises(SerializationError, match="K7"):
            store.get_frame(Security, keys=[f"K{i}" for i in range(10)])

    def test_a_frame_refuses_a_copied_row_record_and_names_it(self, store: BaseStore) -> None:
        """Wide records as the store wrote them (row records, where it writes rows), one copied under another key."""
        pytest.importorskip("pandas")
        store.batch_put([Security(ssm_id=f"K{i}", **{f"a{n}": n / (i + 1) for n in range(20)}) for i in range(10)])
        [stored] = store._read(family_of(Security), [encode_key(("K3",))], store.clock() * 1000)
        assert stored is not None
        assert stored.payload is not None
        plant(store, "K7", stored.payload)  # K3's bytes, under K7, after records the frame has read whole
        with pytest.raises(SerializationError, match="K7"):
            store.get_frame(Security, keys=[f"K{i}" for i in range(10)])
        if self.lists_keys:
            with pytest.raises(SerializationError, match="K7"):
                store.get_frame(Security)

    def test_a_record_of_another_family_under_a_key_names_the_key_and_the_family(self, store: BaseStore) -> None:
        store.put(Coupon(coupon_id="C1"))  # the class is known to this process
        plant(store, "K1", payload_of(Coupon(coupon_id="C1", rate=0.05)))
        with pytest.raises(SerializationError, match="K1") as failed:
            store.get(Security, "K1")
        assert "Coupon" in str(failed.value)
        assert "not defined in this process" not in str(failed.value)
