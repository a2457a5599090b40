"""Hostile input: keys, names and values built to break a backend's escaping, limits and parsers.

Megabyte key values, keys of every awkward character, attribute names that are SQL text
or 10K long, deep and huge values, keys of the wrong type or missing.  Each either works
exactly or raises the documented `StoreError` subclass, and never changes another
record: "bystander" records in the test's namespace and in a second one (whose name is
itself awkward) are compared before and after each hostile call, through the public API
and through `stored_state`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import math
import sys
from collections.abc import Callable
from typing import Any

import pytest

from .._store import BaseStore
from ..errors import InvalidKeyError, SerializationError, StoreError
from ._base import SuiteBase
from ._exact import assert_record, assert_same
from ._records import Colour, Listing, Plain, Quote, Security, Text

# ---------------------------------------------------------------------------- bystanders


def _key(rec: Any) -> Any:
    if type(rec) is Listing:
        return (rec["exchange"], rec["ticker"])
    return rec["ssm_id"]


# What every hostile test must leave exactly as it was, in the test's namespace and in
# a second one on the same server (whose name is itself awkward).
MINE: list[Any] = [
    Security(ssm_id="a", v=1.5, z=-0.0, t="x"),
    Security(ssm_id="*", s="star"),
    Security(ssm_id=7, b=b"\x00\xff"),
    Security(ssm_id="a\x00", n=None, d=dt.date(2000, 1, 1)),
    Listing(exchange="X", ticker="T", isin="I", p=1.0),
    Listing(exchange="X", ticker="*", isin="*", p=2.0),
]
THEIRS: list[Any] = [
    Security(ssm_id="a", v="theirs"),
    Security(ssm_id="b", n=[1, decimal.Decimal("1.10")]),
    Listing(exchange="X", ticker="T", isin="I", p=3.0),
]
OTHER_NAMESPACE = ":*?[{}] é"  # appended to the test's namespace


@dataclasses.dataclass
class Bystanders:
    """Records put before a hostile call; `check` proves the call changed none of them."""

    suite: SuiteBase
    mine: BaseStore
    theirs: BaseStore
    before: list[object] = dataclasses.field(default_factory=list)

    def below(self) -> list[object]:
        """Each bystander's state below the public API, as the suite's `stored_state` reads it."""
        return [
            self.suite.stored_state(store, type(rec), _key(rec))
            for store, recs in ((self.mine, MINE), (self.theirs, THEIRS))
            for rec in recs
        ]

    def check(self, *, extra: dict[type, list[Any]] | None = None) -> None:
        """Every bystander as put, and as held below; listing shows them (and *extra*) and nothing else.

        A store that cannot list keys is asked for the *extra* keys instead: each must be held.
        """
        extra = extra or {}
        for store, recs, more in ((self.mine, MINE, extra), (self.theirs, THEIRS, {})):
            for rec in recs:
                assert_record(store.get(type(rec), _key(rec)), rec)
            for cls in (Security, Listing):
                if not self.suite.lists_keys:
                    found = store.batch_get(cls, more.get(cls, []))
                    assert all(obj is not None for obj in found), f"{cls.__name__}: a record of the test was lost"
                    continue
                want = [_key(r) for r in recs if type(r) is cls] + more.get(cls, [])
                listed = list(store.keys(cls))
                assert len(listed) == len(want), f"{cls.__name__}: {len(listed)} keys listed, {len(want)} stored"
                assert {(type(k), k) for k in listed} == {(type(k), k) for k in want}
                if not more:  # (count is another scan of the same keys: once is enough where they are big)
                    assert store.count(cls) == len(want)
        assert self.below() == self.before, "a bystander's stored state changed"


def _refused(error: type[StoreError], call: Callable[[], Any], what: str = "") -> StoreError:
    """Run *call*, which must raise exactly the documented kind of error."""
    with pytest.raises(StoreError) as info:
        call()
    kind = type(info.value).__qualname__
    assert isinstance(info.value, error), f"{what}: {kind} is not a {error.__qualname__}: {info.value}"
    return info.value


# ---------------------------------------------------------------------------- key values

MIXED = "*?[{}]: \n\r\t\x00é😀\\%#,'\";--/"  # every character a key must survive, in one value


def _utf8_of_size(unit: str, size: int) -> str:
    """*unit* repeated to *size* bytes of UTF-8 (within one unit)."""
    return unit * (size // len(unit.encode()))


MEGABYTE = 1_000_000  # memcached's item limit is 1 MiB: a record holding a 1 MB key still fits in one
_AWKWARD: list[Any] = [
    MIXED,
    MIXED * 3,
    *MIXED,  # each character alone
    "#1",  # how the Redis layout writes the int 1
    "%231",
    "a,b",  # how it separates composite parts
    ",",
    "%",
    "%2A",
    "r:x",
    "a:r:b",
    "{Security}",
    "*:r:*",
    "[a-z]*",
    "\x00" * 10,
    " a ",
    "\u2028",
    "\ufeff",
    "ÿ",  # U+00FF: the Redis hash layout's meta field is the byte 0xff
    "\U0010ffff",
    -(2**63),
    2**63 - 1,
]
AWKWARD_KEYS = [k for k in dict.fromkeys(_AWKWARD) if k not in {_key(r) for r in MINE}]
WRONG_KEYS: list[Any] = [
    1.0,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    b"k",
    bytearray(b"k"),
    ["x"],
    {"a": 1},
    frozenset({"x"}),
    Text("x"),
    Colour.RED,
    2**63,
    -(2**63) - 1,
    decimal.Decimal(1),
    dt.date(2000, 1, 1),
    object(),
]


# ---------------------------------------------------------------------------- attribute names

SQL_TEXT = [
    '"; DROP TABLE ss_x; --',
    "'; DROP TABLE ss_x; --",
    "') OR ('1'='1",
    "`id`",
    "[id]",
    "%s",
    "%(payload)s",
    ":payload",
    "?",
    "$1",
    "\\",
    "\\'",
    "/*",
    "--",
    "NULL",
    "id",
    "key",
    "payload",
    "version",
]
NAMES = [
    *SQL_TEXT,
    "'",
    '"',
    '""',
    "\x00",
    "a\x00b",
    "\x00" * 3,
    "ÿ",  # U+00FF: its UTF-8 is not the byte 0xff that names the Redis hash layout's meta field
    "é😀",
    "\u202e",
    "\n",
    "*",
    "{x}",
    "",
    "n" * 10_000,
    "é" * 10_000,
    _utf8_of_size(MIXED, 10_000),
]


# ---------------------------------------------------------------------------- deep and huge values


def _nested(depth: int, kind: str) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def _assert_nested(got: Any, depth: int, kind: str) -> None:
    """`_nested` checked level by level, without recursion (which a deep value would exhaust)."""
    for level in range(depth):
        if kind == "list":
            ok = type(got) is list and len(got) == 1
            assert ok, f"level {level}: a {type(got).__qualname__} of {len(got)}"
            got = got[0]
        else:
            ok = type(got) is dict and list(got) == ["k"]
            assert ok, f"level {level}: a {type(got).__qualname__} of {len(got)}"
            got = got["k"]
    assert_same(got, "leaf")


# msgpack nests at most 1024 levels (unpacking; packing stops there too) and a record's
# own array and map take two: a value nested deeper can never be read back.
FORMAT_DEPTH = 1_022


# ---------------------------------------------------------------------------- namespaces


class HostileTests(SuiteBase):
    @pytest.fixture
    def bystanders(self, store: BaseStore) -> Bystanders:
        """`MINE` put in *store*, `THEIRS` in a store of another namespace, and their state read."""
        theirs = self.make(namespace=self.namespace + OTHER_NAMESPACE)
        store.batch_put(MINE)
        theirs.batch_put(THEIRS)
        found = Bystanders(self, store, theirs)
        found.before = found.below()
        return found

    # ------------------------------------------------------------------ key values

    def test_awkward_key_values_round_trip_and_stay_apart(self, store: BaseStore, bystanders: Bystanders) -> None:
        recs = [Security(ssm_id=k, k=k) for k in AWKWARD_KEYS]
        store.batch_put(recs)
        for rec, got in zip(recs, store.batch_get(Security, AWKWARD_KEYS), strict=True):
            assert_record(got, rec)
        parts = [MIXED, "*", "?", "[", "{", ":", ",", "#1", 1, "\x00", ""]
        listings = [Listing(exchange=e, ticker=t, isin=f"{e!r}|{t!r}") for e in parts for t in parts]
        store.batch_put(listings)
        by_primary = store.batch_get(Listing, [_key(r) for r in listings])
        by_alternate = store.batch_get(Listing, [{"isin": r["isin"]} for r in listings])
        for listing, first, second in zip(listings, by_primary, by_alternate, strict=True):
            assert_record(first, listing)
            assert_record(second, listing)
        bystanders.check(extra={Security: AWKWARD_KEYS, Listing: [_key(r) for r in listings]})
        store.batch_patch(Security, [{"ssm_id": k, "seen": True} for k in AWKWARD_KEYS])
        for rec, got in zip(recs, store.batch_get(Security, AWKWARD_KEYS), strict=True):
            assert_record(got, Security(rec, seen=True))
        assert store.batch_delete(Security, AWKWARD_KEYS) == len(AWKWARD_KEYS)
        assert store.batch_delete(listings) == len(listings)
        bystanders.check()

    def test_megabyte_key_values(self, store: BaseStore, bystanders: Bystanders) -> None:
        """A 1 MB key of every awkward character; 1 MB in a composite key, and in an alternate key.

        (On Redis the first is ~2.5 MB of percent-encoded key name; memcached and SQL hash keys.)
        """
        half = MEGABYTE // 2
        big = Security(ssm_id=_utf8_of_size(MIXED, MEGABYTE), v=1.0)
        composite = Listing(exchange=_utf8_of_size(MIXED, half), ticker=_utf8_of_size("é", half), isin="big")
        alternate = Listing(exchange="X", ticker="big", isin=_utf8_of_size(MIXED, MEGABYTE))
        store.batch_put([big, composite, alternate])
        key = big["ssm_id"]
        got: list[Any] = store.batch_get(Security, [key, "a", key[:-1]])
        assert_record(got[0], big)
        assert_record(got[1], MINE[0])
        assert got[2] is None
        got = store.batch_get(Listing, [_key(composite), {"isin": alternate["isin"]}, {"isin": alternate["isin"][:-1]}])
        assert_record(got[0], composite)
        assert_record(got[1], alternate)
        assert got[2] is None
        store.patch(Security, key, {"v": 2.0, "w": "x"})
        store.batch_patch(
            Listing, [{"exchange": r["exchange"], "ticker": r["ticker"], "p": -1.0} for r in (composite, alternate)]
        )
        assert_record(store.get(Security, {"ssm_id": key}), Security(big, v=2.0, w="x"))
        got = store.batch_get(Listing, [{"isin": composite["isin"]}, _key(alternate)])
        assert_record(got[0], Listing(composite, p=-1.0))
        assert_record(got[1], Listing(alternate, p=-1.0))
        bystanders.check(extra={Security: [key], Listing: [_key(composite), _key(alternate)]})
        assert store.batch_delete(Listing, [{"isin": composite["isin"]}, {"isin": alternate["isin"]}]) == 2
        store.delete(Security, key)
        assert store.get(Security, key) is None
        bystanders.check()

    def test_wrong_key_types_are_refused_everywhere(self, store: BaseStore, bystanders: Bystanders) -> None:
        for bad in WRONG_KEYS:
            calls: list[Callable[[], Any]] = [
                lambda: store.put(Security(ssm_id=bad)),  # noqa: B023 -- each is called in this iteration
                lambda: store.batch_put([Security(ssm_id="new"), Security(ssm_id=bad)]),  # noqa: B023
                lambda: store.get(Security, bad),  # noqa: B023
                lambda: store.get(Security, {"ssm_id": bad}),  # noqa: B023
                lambda: store.batch_get(Security, ["a", bad]),  # noqa: B023
                lambda: store.delete(Security, bad),  # noqa: B023
                lambda: store.delete(Security(ssm_id=bad)),  # noqa: B023
                lambda: store.batch_delete(Security, ["a", bad]),  # noqa: B023
                lambda: store.batch_delete([Security(ssm_id="a"), Security(ssm_id=bad)]),  # noqa: B023
                lambda: store.patch(Security, bad, {"v": 1}),  # noqa: B023
                lambda: store.batch_patch(Security, [{"ssm_id": "a", "v": 0}, {"ssm_id": bad, "v": 1}]),  # noqa: B023
                lambda: store.put(Listing(exchange="X", ticker=bad)),  # noqa: B023
                lambda: store.put(Listing(exchange="X", ticker="new", isin=bad)),  # noqa: B023
                lambda: store.get(Listing, ("X", bad)),  # noqa: B023
                lambda: store.get(Listing, (bad, bad)),  # noqa: B023
                lambda: store.get(Listing, {"exchange": bad, "ticker": "T"}),  # noqa: B023
                lambda: store.get(Listing, {"isin": bad}),  # noqa: B023
                lambda: store.batch_delete(Listing, [{"isin": bad}]),  # noqa: B023
            ]
            for number, call in enumerate(calls):
                _refused(InvalidKeyError, call, f"{bad!r:.40}, call {number}")
        _refused(InvalidKeyError, lambda: store.get(Security, ("a", "b")))  # too many parts
        _refused(InvalidKeyError, lambda: store.get(Security, ()))
        bystanders.check()

    def test_patching_an_alternate_key_to_a_wrong_type_is_a_key_error(
        self, store: BaseStore, bystanders: Bystanders
    ) -> None:
        """As `put` says: a bad key value is a key error, whether or not the codec could store the value."""
        for bad in [1.5, True, b"k", bytearray(b"k"), Text("x"), Colour.RED, 2**63, object()]:
            for number, call in enumerate(
                [
                    lambda: store.put(Listing(exchange="X", ticker="T", isin=bad)),  # noqa: B023
                    lambda: store.patch(Listing, ("X", "T"), {"isin": bad}),  # noqa: B023
                    lambda: store.batch_patch(Listing, [{"exchange": "X", "ticker": "T", "isin": bad}]),  # noqa: B023
                ]
            ):
                _refused(InvalidKeyError, call, f"{bad!r:.40}, call {number}")
        bystanders.check()

    def test_missing_key_attributes_are_refused(self, store: BaseStore, bystanders: Bystanders) -> None:
        missing = [
            Security(),
            Security(ssm_id=None),
            Security(SSM_ID="x"),
            Security(**{"ssm_id ": "x"}),
            Listing(exchange="X"),
            Listing(ticker="T", isin="I2"),
            Listing(exchange=None, ticker="T"),
            object.__new__(Plain),
            object.__new__(Quote),
        ]
        call: Callable[[], Any]
        for index, obj in enumerate(missing):
            for number, call in enumerate(
                [
                    lambda: store.put(obj),  # noqa: B023 -- each is called in this iteration
                    lambda: store.batch_put([Security(ssm_id="new"), obj]),  # noqa: B023
                    lambda: store.delete(obj),  # noqa: B023
                ]
            ):
                _refused(InvalidKeyError, call, f"missing[{index}], call {number}")
        for number, call in enumerate(
            [
                lambda: store.get(Security, {}),
                lambda: store.get(Listing, {"exchange": "X"}),
                lambda: store.get(Listing, "X"),
                lambda: store.patch(Listing, {"exchange": "X"}, {"p": 1}),
                lambda: store.batch_patch(Security, [{"v": 1}]),
                lambda: store.batch_patch(Security, [{"ssm_id": None, "v": 1}]),
                lambda: store.batch_patch(Listing, [{"exchange": "X", "p": 1}]),
                lambda: store.batch_patch(Security, ["a"]),  # type: ignore[list-item]
            ]
        ):
            _refused(InvalidKeyError, call, f"call {number}")
        bystanders.check()

    # ------------------------------------------------------------------ attribute names

    def test_hostile_attribute_names_round_trip(self, store: BaseStore, bystanders: Bystanders) -> None:
        rec = Security(ssm_id="names", **{name: i for i, name in enumerate(NAMES)})
        assert len(rec) == len(NAMES) + 1
        store.put(rec)
        assert_record(store.get(Security, "names"), rec)
        store.patch(Security, "names", {name: f"patched {name}" for name in NAMES[::2]})
        rec.update({name: f"patched {name}" for name in NAMES[::2]})
        assert_record(store.get(Security, "names"), rec)
        store.batch_patch(Security, [{"ssm_id": "names", **{name: -1.0 for name in NAMES[1::2]}}])
        rec.update({name: -1.0 for name in NAMES[1::2]})
        assert_record(store.get(Security, "names"), rec)
        listing = Listing(exchange="E", ticker="T", isin="names", **{name: [name] for name in NAMES})
        store.put(listing)
        assert_record(store.get(Listing, {"isin": "names"}), listing)
        nested = Security(ssm_id="nested", d={name: {name: name} for name in NAMES})  # as dict keys and values
        store.put(nested)
        assert_record(store.get(Security, "nested"), nested)
        bystanders.check(extra={Security: ["names", "nested"], Listing: [("E", "T")]})

    def test_names_that_cannot_be_stored_are_refused_before_writing(
        self, store: BaseStore, bystanders: Bystanders
    ) -> None:
        names: list[Any] = [1, b"x", None, ("a",)]
        for name in names:
            bad = Security(ssm_id="a", v=1)
            dict.__setitem__(bad, name, "x")
            for number, call in enumerate(
                [
                    lambda: store.put(bad),  # noqa: B023 -- each is called in this iteration
                    lambda: store.batch_put([Security(ssm_id="new"), bad]),  # noqa: B023
                    lambda: store.patch(Security, "a", {name: 1}),  # noqa: B023
                    lambda: store.put(Security(ssm_id="new", d={"ok": {name: 1}})),  # noqa: B023
                ]
            ):
                _refused(SerializationError, call, f"{name!r}, call {number}")
        bystanders.check()

    def test_lone_surrogates_in_names_and_values_come_back_exactly(
        self, store: BaseStore, bystanders: Bystanders
    ) -> None:
        """A str with a lone surrogate (from surrogateescape, say) is a str like any other: kept as it is.

        The batch spans more than one of `batch_put`'s chunks, the odd records last.
        """
        odd = [
            Security(ssm_id="value", v="\ud800"),
            Security(ssm_id="name", **{"\ud800x": 1.0}),
            Security(ssm_id="nested", v=[{"w": ["\udfff", {"\udc80": "a\ud800b"}]}]),
        ]
        store.batch_put([*(Security(ssm_id=f"n{i}") for i in range(type(store).put_chunk + 1)), *odd])
        for rec in odd:
            assert_record(store.get(Security, rec["ssm_id"]), rec)
        store.patch(Security, "value", {"w": "\udfff"})
        assert_record(store.get(Security, "value"), Security(ssm_id="value", v="\ud800", w="\udfff"))
        _refused(InvalidKeyError, lambda: store.put(Security(ssm_id="\ud800")), "a surrogate in a key value")
        bystanders.check(
            extra={Security: [*(f"n{i}" for i in range(type(store).put_chunk + 1)), "value", "name", "nested"]}
        )

    # ------------------------------------------------------------------ deep and huge values

    def test_deep_values_are_stored_exactly_or_refused(self, store: BaseStore, bystanders: Bystanders) -> None:
        """Up to 100 levels must work; deeper, a value round-trips exactly or raises SerializationError.

        Never a RecursionError, never a record that was written but cannot be read, and
        past the format's limit always a SerializationError.
        """
        problems: list[str] = []
        for kind in ("list", "dict"):
            for depth in (100, 500, 1_000, FORMAT_DEPTH + 1, 5_000):
                value = _nested(depth, kind)
                writes: list[tuple[str, Callable[[], Any]]] = [
                    ("put", lambda: store.put(Security(ssm_id="deep", v=value))),  # noqa: B023
                    ("patch", lambda: store.patch(Security, "deep", {"v": value})),  # noqa: B023
                ]
                for how, write in writes:
                    what = f"{depth} levels of {kind} by {how}"
                    try:
                        write()
                    except SerializationError:
                        if depth <= 100:
                            problems.append(f"{what}: refused")
                        continue
                    except Exception as exc:  # what escaped (a RecursionError, say) is the finding
                        problems.append(f"{what}: {type(exc).__qualname__} escaped")
                        continue
                    got = store.get(Security, "deep")
                    if depth > FORMAT_DEPTH:
                        problems.append(f"{what}: written")
                    else:
                        assert got is not None, what
                        _assert_nested(got["v"], depth, kind)
                    store.delete(Security, "deep")
        assert problems == [], "; ".join(problems)
        bystanders.check()

    def test_deep_values_beyond_the_format_are_refused_whatever_the_recursion_limit(
        self, store: BaseStore, bystanders: Bystanders
    ) -> None:
        """A deeper Python stack must not let a record through that the format cannot hold."""
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(20_000)
        try:
            for depth, kind in [(FORMAT_DEPTH + 1, "list"), (FORMAT_DEPTH + 1, "dict"), (3_000, "list")]:
                value = _nested(depth, kind)
                _refused(SerializationError, lambda: store.put(Security(ssm_id="deep", v=value)))  # noqa: B023
        finally:
            sys.setrecursionlimit(limit)
        assert store.get(Security, "deep") is None
        bystanders.check()

    def test_huge_values(self, store: BaseStore, bystanders: Bystanders) -> None:
        """Tens of MB in one record: stored exactly where the backend allows it, else a clear refusal.

        memcached's item limit (1 MiB by default) and MariaDB's ``max_allowed_packet``
        (16 MiB by default) are the only limits met here; each raises `SerializationError`
        naming it, before anything is written.
        """
        blob = bytes(range(256)) * (80 * 1024)  # 20 MiB
        text = _utf8_of_size("é€😀", 4 * 1024 * 1024)
        rec = Security(ssm_id="huge", blob=blob, text=text, **{f"a{i}": i / 3 for i in range(20_000)})
        limit = self.largest_record_size
        if limit is not None and len(blob) + len(text.encode()) > limit:
            with pytest.raises(SerializationError, match=self.largest_record_error):
                store.put(rec)
            with pytest.raises(SerializationError, match=self.largest_record_error):
                store.patch(Security, "a", {"blob": blob})
            assert store.get(Security, "huge") is None
            bystanders.check()
            return
        store.put(rec)
        got = store.get(Security, "huge")
        assert got is not None
        same = type(got["blob"]) is bytes and got.pop("blob") == blob and got.pop("text") == text
        assert same, "a huge value came back changed"
        assert_same(dict(got), {k: v for k, v in rec.items() if k not in ("blob", "text")})
        store.patch(Security, "huge", {"blob": blob[:-1]})
        got = store.get(Security, "huge")
        assert got is not None
        same = got["blob"] == blob[:-1]
        assert same, "a huge patch came back changed"
        assert store.batch_delete(Security, ["huge"]) == 1
        bystanders.check()

    # ------------------------------------------------------------------ namespaces

    def test_namespaces_that_look_like_patterns_or_keys_see_only_their_own(self, bystanders: Bystanders) -> None:
        for suffix in ["*", "[?", ":Security:r:a", "%2A{x}", "\x00\n:"]:
            other = self.make(namespace=self.namespace + suffix)
            self.assert_holds(other, Security, [], among=[_key(r) for r in MINE if type(r) is Security])
            assert other.get(Security, "a") is None, repr(suffix)
            other.put(Security(ssm_id="a", v="other"))
            assert other.clear(Security) == self.cleared(1), repr(suffix)
        bystanders.check()
