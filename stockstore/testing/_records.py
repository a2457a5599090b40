"""The storable classes and the values the suite stores: one of each kind a user has.

Every class here is an ordinary user class (`Record` subclasses, dataclasses, a plain
class); the suite never relies on anything but what the docs promise (Values in Concepts) for them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import struct
from typing import Any, ClassVar

from .._record import Record

# ---------------------------------------------------------------------------- storable classes


class Security(Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["ssm_id"]


class Listing(Record):
    """Composite primary key and one alternate key."""

    __stockstore_keys__: ClassVar[list[Any]] = [("exchange", "ticker"), "isin"]


class Bond(Security):
    pass


class Callable_(Bond):
    pass


class Equity(Security):
    pass


class InitCounter:
    """How often the classes below ran ``__init__`` / ``__post_init__``: rebuilding one must not."""

    calls = 0


@dataclasses.dataclass
class Quote:
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol", ("exchange", "ticker")]
    symbol: str
    exchange: str
    ticker: str
    price: float

    def __post_init__(self) -> None:
        InitCounter.calls += 1


@dataclasses.dataclass(frozen=True)
class FrozenQuote:
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol"]
    symbol: str
    price: Any

    def __post_init__(self) -> None:
        InitCounter.calls += 1


@dataclasses.dataclass(slots=True)
class SlotQuote:
    __stockstore_keys__: ClassVar[list[Any]] = ["symbol"]
    symbol: str
    price: Any

    def __post_init__(self) -> None:
        InitCounter.calls += 1


class Plain:
    __stockstore_keys__: ClassVar[list[Any]] = ["ident"]

    def __init__(self, ident: Any, **attrs: Any) -> None:
        InitCounter.calls += 1
        self.ident = ident
        vars(self).update(attrs)


class Counter(Record):
    __stockstore_keys__: ClassVar[list[Any]] = ["n"]


# ---------------------------------------------------------------------------- values

UTC = dt.UTC
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
NEG = dt.timezone(-dt.timedelta(hours=9, minutes=45))

VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "int_zero": 0,
    "int_one": 1,
    "float_one": 1.0,
    "float_zero": 0.0,
    "neg_zero": -0.0,
    "nan": math.nan,
    "neg_nan": -math.nan,
    "inf": math.inf,
    "neg_inf": -math.inf,
    "float_max": 1.7976931348623157e308,
    "float_subnormal": 5e-324,
    "float_third": 1 / 3,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "int64_neg_max": -(2**63 - 1),
    "int_2_62_plus_1": 2**62 + 1,
    "str_empty": "",
    "str_unicode": "é€😀\u200b\x00 :*{\n",
    "bytes_empty": b"",
    "bytes": bytes(range(256)),
    "datetime_naive": dt.datetime(2024, 2, 29, 23, 59, 58, 999999),
    "datetime_utc": dt.datetime(2024, 2, 29, 23, 59, 58, 1, tzinfo=UTC),
    "datetime_ist": dt.datetime(1999, 12, 31, 12, 0, tzinfo=IST),
    "datetime_negative_offset": dt.datetime(1970, 1, 1, tzinfo=NEG),
    "datetime_min": dt.datetime.min,
    "datetime_max": dt.datetime.max,
    "date": dt.date(2024, 2, 29),
    "date_min": dt.date.min,
    "decimal": decimal.Decimal("1.10"),
    "decimal_neg_zero": decimal.Decimal("-0.00"),
    "decimal_nan": decimal.Decimal("NaN"),
    "decimal_inf": decimal.Decimal("-Infinity"),
    "decimal_exponent": decimal.Decimal("1E+30"),
    "decimal_long": decimal.Decimal("3.14159265358979323846264338327950288419716939937510"),
    "list_empty": [],
    "dict_empty": {},
    "tuple": (1, 1.0, "1", (2, (3,))),
    "nested": {"a": [1, 2.0, {"b": [None, True, b"x", {"c": -0.0}]}], "": {"": []}, "d": dt.date(2000, 1, 1)},
    "list_mixed": [1, 1.0, True, None, "1", b"1", decimal.Decimal("1"), dt.date(2001, 1, 1)],
}


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


def _unsupported() -> dict[str, Any]:
    """Values no store may accept (`SerializationError` before anything is written)."""
    values: dict[str, Any] = {
        "set": {1, 2},
        "frozenset": frozenset(),
        "object": object(),
        "int_2_63": 2**63,
        "int_below_min": -(2**63) - 1,
        "dict_int_keys": {1: "a"},
        "dict_tuple_keys": {(1,): "a"},
        "complex": 1j,
        "bytearray": bytearray(b"x"),
        "int_enum": Colour.RED,
        "str_subclass": Text("x"),
        "timedelta": dt.timedelta(1),
        "time": dt.time(1),
        "nested_set": {"a": [1, {"b": {2}}]},
        "nested_big_int": [[2**64]],
        "nested_int_key": {"a": {"b": {3: 4}}},
        "record": Security(ssm_id="x"),
        "function": len,
    }
    try:
        import numpy as np
    except ImportError:  # numpy is optional; its scalars are tested where it is installed
        return values
    values.update(
        {
            "numpy_longdouble": np.longdouble(1) / 3,  # a Python float would lose its digits
            "numpy_complex": np.complex128(1j),
            "numpy_array": np.zeros(2),
            "numpy_uint64_past_int64": np.uint64(2**63),  # refused as the int it equals is
        }
    )
    return values


UNSUPPORTED = _unsupported()


def numpy_scalars(np: Any) -> dict[str, tuple[Any, Any]]:
    """numpy scalars every store takes (given numpy, the module), each with the Python value it comes back as.

    The Python values are worked out without numpy: float32 and float16 through
    struct, so "the float it equals" is checked, not assumed.
    """
    payload = 0x7FF8_0000_0000_0123  # a quiet NaN with a payload: its bits must survive
    return {
        "float64": (np.float64(1 / 3), 1 / 3),
        "float64_neg_zero": (np.float64(-0.0), -0.0),
        "float64_nan_payload": (
            np.frombuffer(struct.pack("<Q", payload), dtype="<f8")[0],
            struct.unpack("<d", struct.pack("<Q", payload))[0],
        ),
        "float64_max": (np.float64(1.7976931348623157e308), 1.7976931348623157e308),
        "float32": (np.float32(0.1), struct.unpack("<f", struct.pack("<f", 0.1))[0]),
        "float32_neg_inf": (np.float32("-inf"), -math.inf),
        "float32_neg_zero": (np.float32(-0.0), -0.0),
        "float16": (np.float16(0.1), struct.unpack("<e", struct.pack("<e", 0.1))[0]),
        "int8": (np.int8(-128), -128),
        "int16": (np.int16(-32768), -32768),
        "int32": (np.int32(2**31 - 1), 2**31 - 1),
        "int64_min": (np.int64(-(2**63)), -(2**63)),
        "int64_max": (np.int64(2**63 - 1), 2**63 - 1),
        "uint8": (np.uint8(255), 255),
        "uint16": (np.uint16(65535), 65535),
        "uint32": (np.uint32(2**32 - 1), 2**32 - 1),
        "uint64": (np.uint64(2**63 - 1), 2**63 - 1),  # past int64 it is refused, as a Python int is
        "bool_true": (np.bool_(True), True),
        "bool_false": (np.bool_(False), False),
    }


HOSTILE_KEYS: list[Any] = [
    "",
    " ",
    "a b",
    ":",
    "a:b",
    "*",
    "a*",
    "{",
    "{a}",
    "}",
    "\n",
    "a\nb",
    "\r\n",
    "\x00",
    "a\x00b",
    "é",
    "e\u0301",
    "😀",
    "'",
    '"',
    "';DROP TABLE x;--",
    "%",
    "_",
    "\\",
    "/",
    "NULL",
    "None",
    "1",
    "01",
    "1.0",
    "-1",
    "x" * 5000,
    "ü" * 3000,
    1,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**31,
    2**32,
]


def make_storable(cls: type, key: Any, price: Any) -> Any:
    """An instance of one of the `STORABLE` classes, keyed *key*."""
    if cls is Security:
        return Security(ssm_id=key, price=price)
    if cls is Quote:
        return Quote(symbol=key, exchange="X", ticker=f"T{key}", price=price)
    if cls is Plain:
        return Plain(key, price=price)
    return cls(symbol=key, price=price)


STORABLE = [Security, Quote, FrozenQuote, SlotQuote, Plain]
