"""A bounded fuzz run over everything that decodes bytes or text a server hands back.

Stored bytes may have been written by anyone: the codec's decoders, key decoding and
the backends' header parsing must either produce something valid or raise the
documented error (`SerializationError`; `InvalidKeyError` for key text), never another
exception.  What decodes must be storable again: a value ``put`` would refuse (an int
past 64 bits, a bytes attribute name, msgpack's own Timestamp) must not come out of a
read.  And key encodings are injective: distinct keys never share bytes, Redis key
text, memcached item keys or SQL tables.

Inputs are random bytes, valid records mutated (bit flips, truncations, insertions,
splices, inflated length headers) and msgpack trees built with every type and ext code.
Sized to run in seconds (``max_examples``); CI runs it with the rest of the suite.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import inspect
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stockstore import _codec
from stockstore._entry import Stored
from stockstore._keys import decode_key, encode_key
from stockstore.errors import InvalidKeyError, SerializationError
from stockstore.testing import assert_same, expected

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=150, deadline=None)

# ---------------------------------------------------------------------------- inputs

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
EDGE_INTS = st.sampled_from([0, 1, -1, 127, 128, -32, -33, 255, 256, 2**16, 2**31, 2**32, 2**63 - 1, -(2**63)])
# Strings made of what key text, percent-encoding and globs give meaning to, and any text at all.
TOKENS = [*"#,%:*?[]{}\\/ \n\r\t\x00aAzZ09-_.~é😀", "%2C", "%23", "%25", "%2a", "#1", "%FF", "%", "\u0661", "\ufeff"]
AWKWARD_TEXT = st.one_of(st.lists(st.sampled_from(TOKENS), max_size=8).map("".join), st.text(max_size=12))
KEY_PART = st.one_of(AWKWARD_TEXT, INT64, EDGE_INTS)
KEY = st.lists(KEY_PART, min_size=1, max_size=4).map(tuple)

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.datetimes(timezones=st.one_of(st.none(), st.just(dt.UTC))),
    st.dates(),
    st.decimals(allow_nan=True, allow_infinity=True, places=3),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
RECORDS = st.builds(
    _codec.encode_record, st.sampled_from(["Security", "T", "é"]), st.dictionaries(st.text(max_size=8), VALUES)
)
# Header bytes that claim 4 GB (or 4 G items) of what follows.
HUGE_HEADERS = [b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff"]


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding, then a few bit flips, truncations, insertions, deletions or splices."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice", "inflate"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif kind == "splice":
            other = draw(valid)
            data[at:] = other[draw(st.integers(0, len(other))) :]
        elif kind == "inflate":
            data[at:at] = draw(st.sampled_from(HUGE_HEADERS))
    return bytes(data)


@dataclass(frozen=True)
class Ext:
    """An ext value of any code, -128 (msgpack's own Timestamp is -1) to 127."""

    code: int
    data: bytes


EXT_TEXTS = [b"2000-01-01T00:00:00", b"2000-01-01", b"1.5", b"NaN", b"2000-01-01T00:00:00 3600000000", b"x", b""]
EXTS = st.builds(
    Ext,
    st.one_of(st.integers(-128, 127), st.sampled_from([-1, 1, 2, 3, 4])),
    st.one_of(st.sampled_from(EXT_TEXTS), st.binary(max_size=12)),
)
MSGPACK_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
TREE_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    MSGPACK_INTS,
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=6),
    EXTS,
)
# Maps are lists of pairs, so keys may be of any type (and repeat).
TREES = st.recursive(
    TREE_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(
            st.tuples(st.one_of(st.text(max_size=4), st.binary(max_size=4), MSGPACK_INTS, inner), inner), max_size=4
        ).map(lambda pairs: {"pairs": pairs}),
    ),
    max_leaves=10,
)


def packed(node: Any) -> bytes:
    """msgpack bytes of a tree from `TREES` (ext codes and map keys as they come)."""
    if type(node) is Ext:
        return b"\xc7" + bytes([len(node.data)]) + node.code.to_bytes(1, "big", signed=True) + node.data
    if type(node) is list:
        return msgpack.Packer().pack_array_header(len(node)) + b"".join(packed(n) for n in node)
    if type(node) is dict:
        pairs = node["pairs"]
        return msgpack.Packer().pack_map_header(len(pairs)) + b"".join(packed(k) + packed(v) for k, v in pairs)
    return msgpack.packb(node, use_bin_type=True)  # type: ignore[no-any-return]


# [tag, attributes] and [tag, attributes, row] of trees: the shape of a record, anything inside.
RECORD_TREES = st.builds(
    lambda head, tag, attrs, rest: head + packed(tag) + packed({"pairs": attrs}) + b"".join(map(packed, rest)),
    st.sampled_from([b"\x92", b"\x93"]),
    st.one_of(st.text(max_size=6), TREE_LEAVES),
    st.lists(st.tuples(st.one_of(st.text(max_size=4), TREE_LEAVES), TREES), max_size=4),
    st.lists(TREES, max_size=1),
)
STORED_BYTES = st.one_of(st.binary(max_size=300), mutated(RECORDS), RECORD_TREES, mutated(RECORD_TREES))

# ---------------------------------------------------------------------------- what valid means

_STORABLE = (type(None), bool, int, float, str, bytes, list, dict, dt.datetime, dt.date, decimal.Decimal)


def assert_storable(tag: Any, attrs: Any) -> None:
    """*tag* and *attrs* are what `encode_record` accepts; iterative, for values nested deep."""
    assert type(tag) is str, f"tag {tag!r:.40}"
    assert type(attrs) is dict
    todo: list[Any] = [attrs]
    while todo:
        value = todo.pop()
        kind = type(value)
        assert kind in _STORABLE, f"decoded a {kind.__module__}.{kind.__qualname__}: {value!r:.60}"
        if kind is int:
            assert -(2**63) <= value < 2**63, f"decoded an int past 64 bits: {value}"
        elif kind is list:
            todo.extend(value)
        elif kind is dict:
            for name, item in value.items():
                assert type(name) is str, f"decoded a {type(name).__qualname__} attribute or dict key: {name!r:.40}"
                todo.append(item)


def outcome(decode: Callable[[], Any]) -> Any:
    """What *decode* returns, or None if it raised SerializationError; any other exception fails."""
    try:
        return decode()
    except SerializationError:
        return None


# ---------------------------------------------------------------------------- the codec

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "decode_record": _codec.decode_record,
    "decode_head": _codec.decode_head,
    "split_record": _codec.split_record,
    "split_row": _codec.split_row,
    "unpack": _codec.unpack,
    "load_schema": _codec.load_schema,
    "is_row_record": _codec.is_row_record,
}


@FUZZ
@given(STORED_BYTES)
@example(b"\x92\xa1T\x81\xa1v" + b"\x91" * 5000)  # deeper than msgpack's stack
@example(b"\x92\xa1T\x81\xa1v\xdb\xff\xff\xff\xff")
def test_decoders_raise_nothing_but_serialization_error(data: bytes) -> None:
    for name, decode in DECODERS.items():
        try:
            decode(data)
        except SerializationError:
            pass
        except Exception as exc:  # the finding: which decoder let what through
            pytest.fail(f"{name} raised {type(exc).__qualname__}: {exc}")


@FUZZ
@given(STORED_BYTES)
@example(b"\x92\xa1T\x81\xa1v\xd6\xff\x00\x00\x00\x00")  # msgpack's Timestamp ext (-1)
@example(b"\x92\xa1T\x81\xa1v\xcf\xff\xff\xff\xff\xff\xff\xff\xff")  # a uint64 past int64
@example(b"\x92\xa1T\x81\xc4\x01k\x01")  # a bytes attribute name
@example(b"\x92\xa1T\x81\xa1v\x81\xc4\x01k\x01")  # a bytes dict key
def test_what_decodes_is_a_storable_record(data: bytes) -> None:
    for name in ("decode_record", "decode_head"):
        got = outcome(lambda: DECODERS[name](data))  # noqa: B023 -- called right here
        if got is not None:
            assert_storable(*got)
    split = outcome(lambda: _codec.split_record(data))
    if split is None:
        return
    tag, pairs = split
    assert type(tag) is str
    for name, value in pairs:
        assert type(name) is str
        assert type(value) is bytes
        one = outcome(lambda: _codec.unpack(value))  # noqa: B023 -- called right here
        if one is not None:
            assert_storable(tag, {"v": one})
    # The Redis hash layout stores the pairs and joins them back: the same record, or an error.
    joined = _codec.join_record(tag, [(name.encode(), value) for name, value in pairs])
    whole, again = outcome(lambda: _codec.decode_record(data)), outcome(lambda: _codec.decode_record(joined))
    if whole is not None and again is not None and not _codec.is_row_record(data):
        assert_same(list(again), list(whole))


@QUICK
@given(st.dictionaries(st.text(max_size=6), VALUES, max_size=6))
def test_valid_records_survive_split_and_join(attrs: dict[str, Any]) -> None:
    """The other side of the fuzz: a record stockstore wrote always decodes, split or not."""
    data = _codec.encode_record("T", attrs)
    tag, pairs = _codec.split_record(data)
    joined = _codec.join_record(tag, [(name.encode(), value) for name, value in pairs])
    assert_same(list(_codec.decode_record(joined)), ["T", expected(attrs)])
    assert_same(list(_codec.decode_record(data)), ["T", expected(attrs)])


# ---------------------------------------------------------------------------- keys

KEY_BYTES = st.one_of(st.binary(max_size=40), st.builds(encode_key, KEY), mutated(st.builds(encode_key, KEY)))


@FUZZ
@given(KEY_BYTES)
@example(b"\x91\xcc\x01")  # the int 1, not in its shortest form
@example(b"\x91\xcf\xff\xff\xff\xff\xff\xff\xff\xff")
@example(b"\x91\xc4\x01x")  # bytes
@example(b"\x91\xa1\xff")  # not UTF-8
@example(b"\x91\xa3\xed\xa0\x80")  # a surrogate, in the short form a one-str key takes
@example(b"\x91\xa2a")  # shorter than it says
@example(b"\x91\xa0")  # the empty str: a key
def test_decode_key_takes_only_what_encode_key_makes(data: bytes) -> None:
    got = outcome(lambda: decode_key(data))
    if got is None:
        return
    assert type(got) is tuple
    assert got
    for part in got:
        assert type(part) is str or (type(part) is int and -(2**63) <= part < 2**63), repr(part)
    assert encode_key(got) == data


@QUICK
@given(st.lists(KEY, min_size=2, max_size=12))
def test_key_encoding_is_injective(keys: list[tuple[Any, ...]]) -> None:
    typed = {tuple((type(v), v) for v in k): k for k in keys}
    encoded = {encode_key(k) for k in typed.values()}
    assert len(encoded) == len(typed)
    for key in typed.values():
        assert decode_key(encode_key(key)) == key


# ---------------------------------------------------------------------------- Redis key text

redis_backend = pytest.importorskip("stockstore.backends.redis")
KEY_TEXT_CHARS = string.ascii_letters + string.digits + "#,%_.~-+ \u0661é:*\n"
KEY_TEXT = st.one_of(
    st.text(alphabet=KEY_TEXT_CHARS, max_size=16),
    st.builds(lambda k: redis_backend.key_text(encode_key(k)), KEY),
    st.builds(
        lambda k, junk, at: (t := redis_backend.key_text(encode_key(k)))[:at] + junk + t[at:],
        KEY,
        st.text(alphabet=KEY_TEXT_CHARS, min_size=1, max_size=3),
        st.integers(0, 20),
    ),
)


@QUICK
@given(st.lists(KEY, min_size=2, max_size=12))
def test_redis_key_text_is_injective_and_round_trips(keys: list[tuple[Any, ...]]) -> None:
    typed = {tuple((type(v), v) for v in k): k for k in keys}
    texts = {redis_backend.key_text(encode_key(k)): k for k in typed.values()}
    assert len(texts) == len(typed)
    for text, key in texts.items():
        assert redis_backend.key_bytes(text) == encode_key(key)
        assert re.fullmatch(r"[A-Za-z0-9_.~%#,-]*", text), text  # no glob, hash tag, ':' or space


@FUZZ
@given(KEY_TEXT)
@example("#abc")
@example("#1_0")
@example("#99999999999999999999")
@example("%FF")
@example("a%41")
@example("\n")  # unquote() passes what quote() would have encoded
def test_redis_key_names_decode_only_as_key_text_writes_them(text: str) -> None:
    """A key name under a record prefix is someone's: only `key_text`'s exact output is a key."""
    try:
        key = redis_backend.key_bytes(text)
    except (SerializationError, InvalidKeyError):
        return
    except Exception as exc:
        pytest.fail(f"key_bytes({text!r}) raised {type(exc).__qualname__}: {exc}")
    assert redis_backend.key_text(key) == text, f"{text!r} read as the key of {redis_backend.key_text(key)!r}"


# ---------------------------------------------------------------------------- backend headers

_HEADERED = st.one_of(
    st.binary(max_size=40), st.builds(lambda h, r: h + r, st.binary(min_size=16, max_size=16), STORED_BYTES)
)


def _check_stored(stored: Stored | None) -> None:
    if stored is None:
        return
    assert type(stored) is Stored
    assert type(stored.version) is int
    if stored.payload is not None:
        got = outcome(lambda: _codec.decode_record(stored.payload))  # type: ignore[arg-type]
        if got is not None:
            assert_storable(*got)


def _judged(parse: Callable[..., Any]) -> Callable[[Any], Any]:
    """*parse* with no server run to compare a header's stamp to, where it takes one."""
    if "run" in inspect.signature(parse).parameters:
        return functools.partial(parse, run=None)
    return parse


@FUZZ
@given(_HEADERED)
def test_redis_string_values(value: bytes) -> None:
    _check_stored(outcome(lambda: _judged(redis_backend._stored)(value)))


@FUZZ
@given(
    st.dictionaries(
        st.one_of(st.just(b"\xff"), st.binary(max_size=6), st.text(max_size=6).map(str.encode)),
        st.one_of(st.binary(max_size=30), _HEADERED),
        max_size=5,
    )
)
@example({b"\xff": bytes(40) + b"\xff"})  # a class tag that is not UTF-8
def test_redis_hash_values(fields: dict[bytes, bytes]) -> None:
    try:
        stored = _judged(redis_backend.RedisHashStore._from_hash)(dict(fields))
    except SerializationError:
        return
    except Exception as exc:
        pytest.fail(f"_from_hash raised {type(exc).__qualname__}: {exc}")
    _check_stored(stored)


memcache_backend = pytest.importorskip("stockstore.backends.memcache")


@FUZZ
@given(_HEADERED)
def test_memcached_values(value: bytes) -> None:
    _check_stored(outcome(lambda: memcache_backend._unpack(value)))


@FUZZ
@given(st.binary(max_size=24))
def test_memcached_generation_counters(value: bytes) -> None:
    family = SimpleNamespace(name="F")
    got = outcome(lambda: memcache_backend._generation_of(value, family))
    if got is not None:
        assert value.isdigit(), value
        assert got == int(value)


@QUICK
@given(
    st.lists(
        st.tuples(AWKWARD_TEXT, AWKWARD_TEXT, EDGE_INTS, st.sampled_from(["r", "a"]), KEY), min_size=2, max_size=10
    )
)
def test_memcached_item_keys_are_distinct_and_legal(items: list[tuple[str, str, int, str, tuple[Any, ...]]]) -> None:
    """memcached keys: at most 250 bytes, no space or control character; distinct inputs never meet."""
    distinct = {
        (ns, fam, gen, kind, tuple((type(v), v) for v in key)): (ns, fam, gen, kind, key)
        for ns, fam, gen, kind, key in items
    }
    names = set()
    for ns, fam, gen, kind, key in distinct.values():
        name = memcache_backend.MemcacheStore._item_key(SimpleNamespace(namespace=ns), fam, gen, kind, encode_key(key))
        assert re.fullmatch(r"[!-~]{1,250}", name), name
        names.add(name)
    assert len(names) == len(distinct)


sql_backend = pytest.importorskip("stockstore.backends.sql")


@QUICK
@given(st.lists(st.tuples(AWKWARD_TEXT.filter(bool), AWKWARD_TEXT.filter(bool)), min_size=2, max_size=10, unique=True))
def test_sql_table_names_are_distinct_and_legal(pairs: list[tuple[str, str]]) -> None:
    """Identifiers every database takes unquoted, at most 63 bytes, case-insensitively distinct."""
    names = {sql_backend.table_name(ns, fam).lower() for ns, fam in pairs}
    assert len(names) == len(pairs)
    for name in names:
        assert re.fullmatch(r"ss_[a-z0-9_]*_[0-9a-f]{20}", name), name
        assert len(name) <= 63
