"""The codec alone: every supported value round-trips with its type; nothing else gets in or out."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import msgpack
import pytest
from exact import assert_same, expected
from hypothesis import given, settings
from hypothesis import strategies as st
from test_conformance import UNSUPPORTED, VALUES

from stockstore import _codec
from stockstore.errors import SerializationError

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TIMEZONES = st.builds(
    dt.timezone,
    st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)),
)
DECIMALS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([decimal.Decimal(s) for s in ["-0.00", "NaN", "-NaN", "sNaN", "0E-1000", "1E+999999"]]),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0]),
    st.text(),
    st.binary(),
    st.datetimes(),
    st.datetimes(timezones=TIMEZONES),
    st.dates(),
    DECIMALS,
)
VALUE = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8), inner, max_size=5),
    ),
    max_leaves=30,
)
ATTRIBUTES = st.dictionaries(st.text(max_size=12), VALUE, max_size=8)


def round_trip(attrs: dict[str, Any]) -> dict[str, Any]:
    tag, back = _codec.decode_record(_codec.encode_record("Tag", attrs))
    assert tag == "Tag"
    return back


@settings(max_examples=150)
@given(ATTRIBUTES)
def test_random_values_round_trip_with_their_types(attrs: dict[str, Any]) -> None:
    assert_same(round_trip(attrs), expected(attrs))


@given(VALUE)
def test_encoding_is_deterministic(value: Any) -> None:
    assert _codec.encode_record("T", {"v": value}) == _codec.encode_record("T", {"v": value})


@pytest.mark.parametrize("name", list(VALUES))
def test_named_values_round_trip(name: str) -> None:
    assert_same(round_trip({"v": VALUES[name]})["v"], expected(VALUES[name]))


@pytest.mark.parametrize(
    "offset",
    [dt.timedelta(microseconds=1), dt.timedelta(microseconds=-1), dt.timedelta(hours=-23, minutes=-59, seconds=-59)],
    ids=repr,
)
def test_sub_minute_utc_offsets_round_trip(offset: dt.timedelta) -> None:
    """CPython 3.11's fromisoformat reads "+00:00:00.000001" as UTC; the codec must not."""
    value = dt.datetime(2000, 1, 1, 12, tzinfo=dt.timezone(offset))
    got = _codec.unpack(_codec.pack(value))
    assert_same(got, value)
    assert got.utcoffset() == offset


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_values_raise(name: str) -> None:
    with pytest.raises(SerializationError):
        _codec.encode_record("T", {"v": UNSUPPORTED[name]})
    with pytest.raises(SerializationError):
        _codec.encode_record("T", {"v": [1, {"x": UNSUPPORTED[name]}]})


@given(ATTRIBUTES, st.sampled_from(sorted(UNSUPPORTED)), st.data())
def test_an_unsupported_value_anywhere_raises(attrs: dict[str, Any], name: str, data: st.DataObject) -> None:
    depth = data.draw(st.integers(0, 3))
    bad: Any = UNSUPPORTED[name]
    for _ in range(depth):
        bad = data.draw(st.sampled_from([[bad], (1, bad), {"k": bad}]))
    attrs = {**attrs, data.draw(st.text(max_size=5)): bad}
    with pytest.raises(SerializationError):
        _codec.encode_record("T", attrs)


@pytest.mark.parametrize("key", [1, b"k", None, 1.5, ("a",)], ids=repr)
def test_attribute_names_must_be_str(key: Any) -> None:
    with pytest.raises(SerializationError):
        _codec.encode_record("T", {key: 1})


@settings(max_examples=100)
@given(ATTRIBUTES, st.data())
def test_truncated_bytes_raise(attrs: dict[str, Any], data: st.DataObject) -> None:
    encoded = _codec.encode_record("T", attrs)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(SerializationError):
        _codec.decode_record(encoded[:cut])


@settings(max_examples=150)
@given(ATTRIBUTES, st.data())
def test_corrupt_bytes_raise_or_decode_to_a_record(attrs: dict[str, Any], data: st.DataObject) -> None:
    """Flipped bytes either fail as SerializationError or still decode to (str, dict): never anything else."""
    encoded = bytearray(_codec.encode_record("T", attrs))
    pos = data.draw(st.integers(0, len(encoded) - 1))
    encoded[pos] ^= data.draw(st.integers(1, 255))
    try:
        tag, back = _codec.decode_record(bytes(encoded))
    except SerializationError:
        return
    assert type(tag) is str
    assert type(back) is dict


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb(["T"]),
        msgpack.packb([1, {}]),
        msgpack.packb(["T", []]),
        msgpack.packb(["T", {}, 3]),
        msgpack.packb({"T": {}}),
        msgpack.packb(["T", {1: 2}]),
        msgpack.packb(["T", {"v": msgpack.ExtType(99, b"x")}]),
        msgpack.packb(["T", {"v": msgpack.ExtType(1, b"not a date")}]),
        msgpack.packb(["T", {"v": msgpack.ExtType(2, b"\xff\xfe")}]),
        msgpack.packb(["T", {"v": msgpack.ExtType(3, b"1.2.3")}]),
        msgpack.packb(["T", {}]) + b"\x00",
    ],
)
def test_malformed_records_raise(data: bytes) -> None:
    with pytest.raises(SerializationError):
        _codec.decode_record(data)
