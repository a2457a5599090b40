"""Key declarations, key parsing, and the byte form of keys (which must never collide)."""

from __future__ import annotations

from typing import Any, ClassVar

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import stockstore as ss
from stockstore._keys import decode_key, encode_key, family_of
from stockstore.errors import InvalidKeyError
from stockstore.testing._records import Colour

KEY_PART = st.one_of(st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1))
KEY = st.lists(KEY_PART, min_size=1, max_size=4).map(tuple)


def typed(key: tuple[Any, ...]) -> tuple[tuple[type, Any], ...]:
    """A key with its types, so "1" and 1 count as different (as the store must)."""
    return tuple((type(v), v) for v in key)


@given(st.lists(KEY, min_size=2, max_size=20))
def test_encoding_is_injective(keys: list[tuple[Any, ...]]) -> None:
    by_bytes: dict[bytes, tuple[Any, ...]] = {}
    for key in keys:
        seen = by_bytes.setdefault(encode_key(key), key)
        assert typed(seen) == typed(key), f"{seen!r} and {key!r} encode alike"


@given(KEY)
def test_encoding_round_trips(key: tuple[Any, ...]) -> None:
    assert typed(decode_key(encode_key(key))) == typed(key)


@given(st.text(st.characters(max_codepoint=127), max_size=40) | st.text(max_size=40))
def test_a_one_str_key_is_encoded_as_msgpack_packs_it(value: str) -> None:
    # encode_key writes the common key (a short ASCII str) itself: the packer's very bytes.
    assert encode_key((value,)) == msgpack.packb((value,))


@pytest.mark.parametrize(
    ("a", "b"),
    [(("1",), (1,)), (("a", "b"), ("ab",)), (("a:b",), ("a", "b")), (("",), ("", "")), ((0,), ("",)), ((1, 2), (12,))],
)
def test_classic_collisions_do_not_happen(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    assert encode_key(a) != encode_key(b)


class Item(ss.Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["id", ("market", "code"), "isin"]


class SubItem(Item):
    pass


@pytest.mark.parametrize(
    ("key", "want"),
    [
        ("x", (0, ("x",))),
        (5, (0, (5,))),
        (("x",), (0, ("x",))),
        ({"id": "x"}, (0, ("x",))),
        ({"code": 1, "market": "M"}, (1, ("M", 1))),
        ({"isin": "I"}, (2, ("I",))),
    ],
)
def test_parse_key_forms(key: Any, want: tuple[int, tuple[Any, ...]]) -> None:
    index, values = family_of(Item).parse_key(key)
    assert index == want[0]
    assert typed(values) == typed(want[1])


@pytest.mark.parametrize(
    "key",
    [True, 1.0, None, b"x", 2**63, ("x", "y"), (), {"market": "M"}, {"id": "x", "isin": "I"}, {}, {"nope": 1}, ["x"]],
    ids=repr,
)
def test_parse_key_refuses(key: Any) -> None:
    with pytest.raises(InvalidKeyError):
        family_of(Item).parse_key(key)


def test_a_numpy_int_key_is_refused_with_what_to_do() -> None:
    """A key is compared by type, so a numpy int is not quietly made an int: the caller converts it."""
    np = pytest.importorskip("numpy")
    for key in (np.int64(5), np.uint8(5), Colour.RED):
        with pytest.raises(InvalidKeyError, match=r"must be str or int, not \w+: .*; convert with int\(\)$"):
            family_of(Item).parse_key(key)
    with pytest.raises(InvalidKeyError, match=r"; convert with str\(\)$"):
        family_of(Item).parse_key(np.str_("x"))
    with pytest.raises(InvalidKeyError, match=r"not float64: .*1\.5\)$"):  # no int or str it stands for
        family_of(Item).parse_key(np.float64(1.5))


def test_subclasses_share_the_family() -> None:
    assert family_of(SubItem) == family_of(Item)
    assert family_of(SubItem).root is Item
    assert family_of(SubItem).keys == (("id",), ("market", "code"), ("isin",))


def test_unset_alternate_key_is_not_indexed() -> None:
    family = family_of(Item)
    assert family.alternates_of({"id": "x"}) == (None, None)
    assert family.alternates_of({"id": "x", "market": "M", "code": None, "isin": "I"}) == (None, encode_key(("I",)))
    with pytest.raises(InvalidKeyError):
        family.primary_of({"market": "M"})


@pytest.mark.parametrize(
    "declared",
    [[], "id", ["id", "id"], [()], [("a", "a")], [1], [("a", 1)], [""], ["a", ("a",)]],
    ids=repr,
)
def test_bad_declarations(declared: Any) -> None:
    cls = type("Bad", (), {"__stockstore_keys__": declared})
    with pytest.raises(InvalidKeyError):
        family_of(cls)


def test_undeclared_class() -> None:
    with pytest.raises(InvalidKeyError):
        family_of(type("Loose", (), {}))
    with pytest.raises(InvalidKeyError):
        family_of("not a class")  # type: ignore[arg-type]
