"""The codec alone: every supported value round-trips with its type; nothing else gets in or out."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import math
import random
import re
import struct
import sys
import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockstore import _codec
from stockstore.errors import SerializationError
from stockstore.testing import assert_same, expected
from stockstore.testing._records import UNSUPPORTED, VALUES, Colour, numpy_scalars

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
        msgpack.packb(["T", {"v": msgpack.ExtType(4, b"\0" * 24)}]),  # a row is no attribute value
        msgpack.packb(["T", {}]) + b"\x00",
    ],
)
def test_malformed_records_raise(data: bytes) -> None:
    with pytest.raises(SerializationError):
        _codec.decode_record(data)


# ---------------------------------------------------------------------------- row records (put_frame's)

NAMES = st.text(min_size=1, max_size=8)
COLUMNS = st.lists(st.tuples(NAMES, st.sampled_from(["f8", "i8"])), min_size=1, max_size=12, unique_by=lambda c: c[0])
BITS64 = st.integers(min_value=0, max_value=2**64 - 1)


def row_values(columns: list[tuple[str, str]], data: st.DataObject) -> tuple[list[int], bytes]:
    """Raw values for *columns* (float64 as any bit pattern) and their little-endian bytes."""
    raw = [data.draw(BITS64 if kind == "f8" else INT64) for _, kind in columns]
    packed = b"".join(struct.pack("<Q" if kind == "f8" else "<q", v) for v, (_, kind) in zip(raw, columns, strict=True))
    return raw, packed


def a_row_record(**attrs: Any) -> tuple[_codec.RowSchema, bytes]:
    schema = _codec.row_schema([("x", "f8"), ("n", "i8")])
    return schema, _codec.encode_row_record("T", attrs or {"k": "a"}, schema, struct.pack("<dq", -0.0, -(2**63)))


@settings(max_examples=150)
@given(COLUMNS, st.data())
def test_row_records_round_trip_exactly(columns: list[tuple[str, str]], data: st.DataObject) -> None:
    schema = _codec.row_schema(columns)
    raw, packed = row_values(columns, data)
    attrs = data.draw(
        st.dictionaries(st.text(max_size=8).filter(lambda n: n not in schema.name_set), VALUE, max_size=4)
    )
    record = _codec.encode_row_record("Tag", attrs, schema, packed)
    tag, back = _codec.decode_record(record)
    assert tag == "Tag"
    assert list(back) == [*attrs, *schema.names]  # the map's attributes first, then the schema's
    assert_same({name: back[name] for name in attrs}, expected(attrs))
    for (name, kind), value in zip(columns, raw, strict=True):
        if kind == "f8":
            assert type(back[name]) is float
            assert struct.pack("<d", back[name]) == struct.pack("<Q", value)  # NaN payloads, -0.0: every bit
        else:
            assert_same(back[name], value)
    head_tag, head = _codec.decode_head(record)
    assert head_tag == "Tag"
    assert_same(head, expected(attrs))
    # The hash layout's split and join make an ordinary record of the same attributes.
    split_tag, pairs = _codec.split_record(record)
    joined = _codec.join_record(split_tag, [(name.encode(), value) for name, value in pairs])
    assert joined[:1] == b"\x92"
    assert_same(list(_codec.decode_record(joined)), [tag, back])
    assert_same_fields(record)


def test_schema_ids_are_content_addressed() -> None:
    schema = _codec.row_schema([("x", "f8"), ("n", "i8")])
    assert msgpack.unpackb(schema.data) == [["x", "f8"], ["n", "i8"]]
    assert schema.id == hashlib.blake2b(schema.data, digest_size=16).digest()
    assert _codec.row_schema([("x", "f8"), ("n", "i8")]) is schema
    assert _codec.load_schema(schema.data) is schema
    assert _codec.row_schema([("n", "i8"), ("x", "f8")]).id != schema.id
    assert _codec.row_schema([("x", "i8"), ("n", "i8")]).id != schema.id
    assert _codec.row_schema([("x", "f8")]).id != schema.id


def test_an_unknown_schema_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    schema, record = a_row_record()
    monkeypatch.setattr(_codec, "_schemas", {})  # a process that never saw it
    with pytest.raises(_codec.UnknownSchemaError) as info:
        _codec.decode_record(record)
    assert isinstance(info.value, SerializationError)
    assert info.value.schema_id == schema.id
    with pytest.raises(SerializationError):
        _codec.split_record(record)
    assert _codec.decode_head(record) == ("T", {"k": "a"})  # the map needs no schema
    assert _codec.decode_record(record, lambda i: _codec.load_schema(schema.data))[1] == {
        "k": "a",
        "x": -0.0,
        "n": -(2**63),
    }


@pytest.mark.parametrize("change", [-16, -8, -1, 1, 8])
def test_a_row_of_the_wrong_length_raises(change: int) -> None:
    schema, _ = a_row_record()
    values = struct.pack("<dq", 1.0, 2)
    values = values[:change] if change < 0 else values + b"\0" * change
    record = _codec.row_head("T") + _codec.pack({"k": "a"}) + msgpack.packb(msgpack.ExtType(4, schema.id + values))
    with pytest.raises(SerializationError):
        _codec.decode_record(record)
    with pytest.raises(SerializationError):
        _codec.split_record(record)


def test_row_values_must_fit_the_schema_to_be_encoded() -> None:
    schema, _ = a_row_record()
    with pytest.raises(SerializationError):
        _codec.encode_row_record("T", {"k": "a"}, schema, b"\0" * 8)
    with pytest.raises(SerializationError):
        _codec.encode_row_record("T", {"x": 1.0}, schema, b"\0" * 16)  # x is in the row already


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb(["T", {}, msgpack.ExtType(3, b"1")]),
        msgpack.packb(["T", {}, msgpack.ExtType(4, b"\0" * 8)]),  # shorter than a schema id
        msgpack.packb([1, {}, msgpack.ExtType(4, b"\0" * 24)]),
        msgpack.packb(["T", [], msgpack.ExtType(4, b"\0" * 24)]),
        msgpack.packb(["T", {"v": msgpack.ExtType(4, b"\0" * 24)}, msgpack.ExtType(4, b"\0" * 24)]),
        msgpack.packb(["T", {}, msgpack.ExtType(4, b"\0" * 24), 1])[:1] + msgpack.packb("T"),
    ],
)
def test_malformed_row_records_raise(data: bytes) -> None:
    """(A row inside an ordinary record's map is refused by `test_malformed_records_raise`.)"""
    with pytest.raises(SerializationError):
        _codec.decode_record(data)
    with pytest.raises(SerializationError):
        _codec.split_record(data)


def test_a_map_attribute_in_the_row_too_is_corrupt() -> None:
    schema, _ = a_row_record()
    twice = _codec.row_head("T") + _codec.pack({"x": 1.0}) + schema.prefix + struct.pack("<dq", 1.0, 2)
    with pytest.raises(SerializationError):
        _codec.decode_record(twice)
    with pytest.raises(SerializationError):
        _codec.split_record(twice)


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb([]),
        msgpack.packb([["x", "f4"]]),
        msgpack.packb([["x", "f8"], ["x", "i8"]]),
        msgpack.packb([[1, "f8"]]),
        msgpack.packb([["x", "f8", 1]]),
        msgpack.packb("x"),
        b"\xc1",
    ],
)
def test_malformed_schemas_raise(data: bytes) -> None:
    with pytest.raises(SerializationError):
        _codec.load_schema(data)


@settings(max_examples=100)
@given(st.data())
def test_truncated_or_flipped_row_records_raise_or_decode_to_a_record(data: st.DataObject) -> None:
    _, record = a_row_record(k="a", s="text")
    cut = data.draw(st.integers(0, len(record) - 1))
    with pytest.raises(SerializationError):
        _codec.decode_record(record[:cut])
    flipped = bytearray(record)
    flipped[data.draw(st.integers(0, len(record) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        tag, back = _codec.decode_record(bytes(flipped))
    except SerializationError:
        return
    assert type(tag) is str
    assert type(back) is dict


# ---------------------------------------------------------------------------- wide dict records as rows

WIDE_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, math.nan, -math.nan])


@given(
    st.lists(WIDE_FLOATS, min_size=16, max_size=300),
    st.lists(st.tuples(st.integers(min_value=0, max_value=300), st.text() | INT64 | st.none()), max_size=4),
)
def test_wide_records_are_rows_and_come_back_exactly_in_order(
    floats: list[float],
    others: list[tuple[int, Any]],
) -> None:
    """Floats and other values anywhere: the key last, a string among the floats."""
    items = [(f"a{i}", value) for i, value in enumerate(floats)]
    for n, (at, value) in enumerate(others):
        items.insert(at, (f"k{n}", value))
    attrs = dict(items)
    tag = f"T{uuid.uuid4().hex}"  # a class of its own: shapes of other examples are no part of its schema
    wide = _codec.check_wide(tag, attrs)
    assert wide is not None
    again = _codec.check_wide(tag, attrs)  # the shape seen before: the one-pass check
    assert again is not None
    assert again[0] is wide[0]
    assert again[1] == wide[1]
    data = _codec.encode_wide(attrs, wide, _codec.packer(), wide[0].target())
    assert _codec.is_row_record(data)
    assert len(data) < len(_codec.encode_record(tag, attrs))
    got_tag, got = _codec.decode_record(data)
    assert got_tag == tag
    assert list(got) == list(attrs)  # the attribute order too
    assert_same(got, attrs)
    split_tag, pairs = _codec.split_record(data)  # the hash layout's fields, in order too
    assert [name for name, _ in pairs] == list(attrs)
    assert_same(_codec.decode_record(_codec.join_record(split_tag, [(n.encode(), v) for n, v in pairs]))[1], attrs)
    assert_same_fields(data)


def assert_same_fields(data: bytes) -> None:
    """`record_fields` finds `split_record`'s pairs in their order, flat, names in UTF-8."""
    tag, pairs = _codec.split_record(data)
    fields_tag, flat = _codec.record_fields(data)
    assert fields_tag == tag
    assert all(type(part) is bytes for part in flat)
    assert flat == [part for name, value in pairs for part in (name.encode("utf-8", "surrogatepass"), value)]


def test_record_fields_of_every_kind_of_record() -> None:
    """Ordinary, row and sparse row records (a presence bitmap), a name with a lone surrogate, no attribute."""
    tag = f"T{uuid.uuid4().hex}"
    full = {"key": "k", **{f"a{i}": float(i) for i in range(20)}, "n": 1}
    sparse = {name: value for name, value in full.items() if name not in ("a3", "a17")}
    for attrs in (full, sparse):
        wide = _codec.check_wide(tag, attrs) or _codec.check_wide(tag, attrs)
        assert wide is not None
        assert_same_fields(_codec.encode_wide(attrs, wide, _codec.packer(), wide[0].target()))
    assert_same_fields(_codec.encode_record(tag, {**full, "\udcff": 1}))
    assert_same_fields(_codec.encode_record(tag, {}))
    with pytest.raises(SerializationError):
        _codec.record_fields(b"\x92\xa1T\x01")


def _written(tag: str, attrs: dict[str, Any]) -> bytes:
    wide = _codec.check_wide(tag, attrs)
    assert wide is not None
    return _codec.encode_wide(attrs, wide, _codec.packer(), wide[0].target())


def test_a_row_does_not_depend_on_where_the_key_sits() -> None:
    floats = {f"a{i}": float(i) for i in range(200)}
    first = _written(f"T{uuid.uuid4().hex}", {"k": "US0378331005", **floats})
    last = _written(f"T{uuid.uuid4().hex}", {**floats, "k": "US0378331005"})
    middle = {**dict(list(floats.items())[:100]), "k": "US0378331005", "note": "x", **dict(list(floats.items())[100:])}
    between = _written(f"T{uuid.uuid4().hex}", middle)
    plain = len(_codec.encode_record("T", {"k": "US0378331005", **floats}))
    assert len(last) == len(first) < plain * 0.7  # 200 values and a bitmap, against 200 names and values
    assert len(between) < len(first) + 10
    assert list(_codec.decode_record(last)[1]) == [*floats, "k"]
    assert list(_codec.decode_record(between)[1]) == list(middle)


def test_too_few_floats_or_none_make_no_row() -> None:
    floats = {f"a{i}": float(i) for i in range(20)}
    assert _codec.check_wide("T", {"k": "x", **dict(list(floats.items())[:15])}) is None  # too few to pay
    ints = {"k": "x", **{f"i{i}": i for i in range(20)}}
    assert _codec.check_wide("T", ints) is None  # ints stay ordinary: msgpack keeps them short


def test_records_lacking_attributes_share_one_schema() -> None:
    """5,000 records each lacking 5% of 200 attributes at random: one schema, not one a shape."""
    rng = random.Random(7)
    tag = f"T{uuid.uuid4().hex}"
    names = [f"a{i}" for i in range(200)]
    records = [{"k": f"S{n}", **{a: rng.random() for a in names if rng.random() >= 0.05}} for n in range(5_000)]
    wides = [_codec.check_wide(tag, attrs) for attrs in records]  # a batch's check, before any is written
    targets = [wide[0].target() for wide in wides if wide is not None]
    assert len(targets) == len(records)
    assert len({schema.id for schema, _ in targets}) == 1  # every record written with the same schema
    assert len(_codec._lineages[tag].made) <= 20  # the schemas the merges made, this process only
    for attrs, wide, target in zip(records[:500], wides, targets, strict=False):
        assert wide is not None
        got = _codec.decode_record(_codec.encode_wide(attrs, wide, _codec.packer(), target))[1]
        assert list(got) == list(attrs)
        assert_same(got, attrs)


def test_a_class_whose_names_churn_stays_bounded() -> None:
    """Every record a new set of names: at most _SCHEMAS_PER_TAG schemas, then plain records."""
    tag = f"T{uuid.uuid4().hex}"
    made = [_codec.check_wide(tag, {"k": "x", **{f"d{day}_{i}": 1.0 for i in range(20)}}) for day in range(100)]
    assert len(_codec._lineages[tag].made) == _codec._SCHEMAS_PER_TAG
    assert made[_codec._SCHEMAS_PER_TAG - 1] is not None
    assert made[-1] is None
    assert len(_codec._lineages[tag].schema.columns) <= 42  # starts over, never grows


def test_a_record_of_a_wide_shape_with_other_values_is_ordinary() -> None:
    assert _codec.check_wide("T", {"k": "x", **{f"a{i}": float(i) for i in range(20)}}) is not None
    assert _codec.check_wide("T", {"k": "x", **{f"a{i}": i for i in range(20)}}) is None
    # struct would take a Decimal for a float, and lose its digits
    decimals = {"k": "x", **{f"a{i}": float(i) for i in range(20)}, "a3": decimal.Decimal("0.1")}
    assert _codec.check_wide("T", decimals) is None


class FloatSubclass(float):
    pass


@pytest.mark.parametrize(
    "bad",
    [
        {"a3": FloatSubclass(1.5)},  # struct would pack it as a float
        {"a3": bytearray(b"x")},
        {"a3": 2**70},
        {"k": {1: "x"}},
        {"k": {"deep": {1, 2}}},
    ],
)
def test_the_one_pass_check_of_a_seen_wide_shape_refuses_what_check_attributes_refuses(bad: dict[str, Any]) -> None:
    good = {"k": "x", **{f"a{i}": float(i) for i in range(20)}}
    assert _codec.check_wide("T", good) is not None
    record = {**good, **bad}
    with pytest.raises(SerializationError):
        _codec.check_attributes(record)
    with pytest.raises(SerializationError):
        _codec.check_wide("T", record)


def test_a_patched_row_record_stays_a_row_of_its_schema() -> None:
    attrs = {"k": "x", **{f"a{i}": float(i) for i in range(20)}}
    wide = _codec.check_wide("T", attrs)
    assert wide is not None
    data = _codec.encode_wide(attrs, wide, _codec.packer(), wide[0].target())
    changes = {"a3": -0.0, "a19": math.nan, "new": 1.5, "note": "n"}
    patched = _codec.patch_row(data, changes)
    assert patched is not None
    head, record = patched
    assert head == {"k": "x", "new": 1.5, "note": "n"}
    assert _codec.split_row(record)[2][: _codec.SCHEMA_ID_SIZE] == wide[0].target()[0].id
    tag, got = _codec.decode_record(record)
    assert tag == "T"
    assert_same(got, {**attrs, **changes})


def test_an_int_column_of_a_row_takes_ints_in_place() -> None:
    schema = _codec.row_schema([("n", "i8"), ("x", "f8")])
    data = _codec.encode_row_record("T", {"k": "x"}, schema, schema.row.pack(1, 1.0))
    patched = _codec.patch_row(data, {"n": -(2**63)})
    assert patched is not None
    assert_same(_codec.decode_record(patched[1])[1], {"k": "x", "n": -(2**63), "x": 1.0})


@pytest.mark.parametrize("change", [{"a1": 1}, {"a1": "1.0"}, {"a1": None}, {"n": 1.0}, {"n": True}])
def test_a_change_that_does_not_fit_its_column_is_no_row_patch(change: dict[str, Any]) -> None:
    schema = _codec.row_schema([("n", "i8"), *((f"a{i}", "f8") for i in range(3))])
    data = _codec.encode_row_record("T", {"k": "x"}, schema, schema.row.pack(1, 0.0, 1.0, 2.0))
    assert _codec.patch_row(data, change) is None
    assert _codec.patch_row(_codec.encode_record("T", {"k": "x", "a1": 1.0}), {"a1": 2.0}) is None  # no row


def test_a_wide_record_with_a_lone_surrogate_in_a_name_round_trips() -> None:
    """Names are stored as records keep them (surrogatepass), in a schema too."""
    attrs = {"k": "x", "\udc80": 1.0, **{f"a{i}": float(i) for i in range(20)}}
    data = _written(f"T{uuid.uuid4().hex}", attrs)
    assert _codec.is_row_record(data)
    got = _codec.decode_record(data)[1]
    assert list(got) == list(attrs)
    assert_same(got, attrs)
    frame_schema = _codec.row_schema([("\udc80", "f8")])
    assert _codec.load_schema(frame_schema.data) is frame_schema


# ---------------------------------------------------------------------------- numpy scalars and refusals


def test_plain_makes_numpy_scalars_python_values_at_any_depth() -> None:
    np = pytest.importorskip("numpy")
    scalars = numpy_scalars(np)
    given = {name: value for name, (value, _) in scalars.items()}
    want = {name: python for name, (_, python) in scalars.items()}
    attrs = {"k": "x", **given, "nested": [given, (np.int8(1), "s")], "deep": {"a": {"b": [np.float32(0.5)]}}}
    converted = _codec.plain(attrs)
    assert converted is not None
    assert_same(converted, {"k": "x", **want, "nested": [want, [1, "s"]], "deep": {"a": {"b": [0.5]}}})
    _codec.check_attributes(converted)
    assert_same(round_trip(converted), converted)


def test_plain_finds_nothing_without_numpy_scalars(monkeypatch: pytest.MonkeyPatch) -> None:
    np = pytest.importorskip("numpy")
    assert _codec.plain({"k": "x", "v": [1, 2.0, {"a": {1, 2}}], "d": decimal.Decimal(1)}) is None
    assert _codec.plain({"v": np.complex128(1j), "w": np.longdouble(1) / 3, "a": np.zeros(2)}) is None  # refused
    monkeypatch.delitem(sys.modules, "numpy")  # not imported: no numpy scalar can exist, and none is looked for
    assert _codec.plain({"v": 1.5, "w": [None]}) is None


def test_numpy_floats_made_plain_are_a_wide_row_bit_for_bit() -> None:
    np = pytest.importorskip("numpy")
    payload = np.frombuffer(struct.pack("<Q", 0x7FF8_0000_0000_0123), dtype="<f8")
    floats = {f"a{i}": np.float64(i / 7) for i in range(30)}
    attrs = {"k": "x", **floats, "a3": payload[0], "a4": np.float64(-0.0)}
    tag = f"T{uuid.uuid4().hex}"
    with pytest.raises(SerializationError):
        _codec.check_wide(tag, attrs)  # the codec itself stores Python values only
    converted = _codec.plain(attrs)
    assert converted is not None
    data = _written(tag, converted)
    assert _codec.is_row_record(data)
    got = _codec.decode_record(data)[1]
    assert struct.pack("<d", got["a3"]) == struct.pack("<Q", 0x7FF8_0000_0000_0123)
    assert struct.pack("<d", got["a4"]) == struct.pack("<d", -0.0)
    assert_same(got, converted)


@pytest.mark.parametrize(
    ("attrs", "path", "reason"),
    [
        ({"a": 1, "b": {1, 2}}, "'b'", r"type set: \{1, 2\}; convert with sorted\(\) or list\(\)$"),
        (
            {"px.close": [1.0, [2, {"x": 2**64}]]},
            "'px.close'[1][1]['x']",
            r"64-bit signed range: 18446744073709551616; store it as a str",
        ),
        ({"a": [{"b": {1: "x"}}]}, "'a'[0]['b']", r"keys must be str, not int: 1; convert with str\(\)$"),
        ({"a": 1, 2: "x"}, "", r"keys must be str, not int: 2"),
        ({"t": (1, dt.timedelta(1))}, "'t'[1]", r"convert with \.total_seconds\(\)$"),
        ({"e": Colour.RED}, "'e'", r"convert with int\(\)$"),
        ({"o": object()}, "'o'", r"convert with float\(\), int\(\) or str\(\)$"),
    ],
)
def test_locate_names_the_refused_value_and_what_to_do(attrs: dict[Any, Any], path: str, reason: str) -> None:
    with pytest.raises(SerializationError) as raised:
        _codec.check_attributes(attrs)
    where, error = _codec.locate(attrs, raised.value)
    assert where == path
    assert re.search(reason, str(error)), str(error)


def test_locate_finds_a_value_nested_too_deep() -> None:
    deep: Any = 1.0
    for _ in range(_codec._MAX_DEPTH):
        deep = [deep]
    with pytest.raises(SerializationError) as raised:
        _codec.check_attributes({"k": "x", "d": deep})
    where, error = _codec.locate({"k": "x", "d": deep}, raised.value)
    assert where.startswith("'d'[0][0]")
    assert str(error).endswith("levels; flatten it")


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_every_refusal_says_what_to_do(name: str) -> None:
    with pytest.raises(SerializationError, match=r"; (convert|use put_frame|store)"):
        _codec.check_attributes({"v": UNSUPPORTED[name]})
