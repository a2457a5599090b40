"""Coverage-guided fuzzing of what decodes stored bytes and key text (optional; not run in CI).

tests/test_fuzz.py is the bounded run CI makes with hypothesis; this harness runs the
same properties under atheris (libFuzzer) for as long as you let it, steered by
coverage of the codec and the key decoders.  The first input byte picks the target:
record decoding (``decode_record``, ``decode_head``, ``split_record`` + ``join_record``),
key bytes (``decode_key``), Redis key text (``key_bytes``), or the Redis / memcached
headers.  A target may return a value or raise the documented error; any other
exception, or a decoded value ``put`` would refuse, is a crash, and libFuzzer keeps the
input that caused it::

    .venv/bin/pip install atheris
    .venv/bin/python benchmarks/fuzz_atheris.py -max_total_time=60 -max_len=512 corpus/
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports():
    from stockstore import _codec
    from stockstore._keys import decode_key, encode_key
    from stockstore.backends import memcache, redis
    from stockstore.errors import InvalidKeyError, SerializationError

_STORABLE = (type(None), bool, int, float, str, bytes, list, dict, dt.datetime, dt.date, decimal.Decimal)


def _storable(tag: Any, attrs: Any) -> None:
    """Raise AssertionError unless *tag* and *attrs* are what `encode_record` accepts."""
    assert type(tag) is str, tag
    assert type(attrs) is dict, attrs
    todo: list[Any] = [attrs]
    while todo:
        value = todo.pop()
        assert type(value) in _STORABLE, f"decoded a {type(value).__qualname__}"
        if type(value) is int:
            assert -(2**63) <= value < 2**63, value
        elif type(value) is list:
            todo.extend(value)
        elif type(value) is dict:
            assert all(type(k) is str for k in value), "a non-str dict key"
            todo.extend(value.values())


def _records(data: bytes) -> None:
    for decode in (_codec.decode_record, _codec.decode_head):
        with contextlib.suppress(SerializationError):
            _storable(*decode(data))
    try:
        tag, pairs = _codec.split_record(data)
    except SerializationError:
        return
    with contextlib.suppress(SerializationError):
        _storable(*_codec.decode_record(_codec.join_record(tag, [(n.encode(), v) for n, v in pairs])))


def _keys(data: bytes) -> None:
    try:
        key = decode_key(data)
    except SerializationError:
        return
    assert encode_key(key) == data, data


def _key_text(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        key = redis.key_bytes(text)
    except (SerializationError, InvalidKeyError):
        return
    assert redis.key_text(key) == text, text


def _judged(parse: Callable[..., Any]) -> Callable[..., Any]:
    """*parse* with no server run to compare a header's stamp to, where it takes one."""
    return functools.partial(parse, run=None) if "run" in inspect.signature(parse).parameters else parse


def _headers(data: bytes) -> None:
    for unpack in (_judged(redis._stored), memcache._unpack):
        try:
            stored = unpack(data)
        except SerializationError:
            continue
        if stored is not None and stored.payload is not None:
            _records(stored.payload)
    fields = {b"\xff": data[:40], data[40:44]: data[44:]}
    with contextlib.suppress(SerializationError):
        _judged(redis.RedisHashStore._from_hash)(fields)


TARGETS: list[Callable[[bytes], None]] = [_records, _keys, _key_text, _headers]


def one_input(data: bytes) -> None:
    if data:
        TARGETS[data[0] % len(TARGETS)](data[1:])


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
