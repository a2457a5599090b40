"""Big write commands packed into Redis's wire form (RESP) here, and sent on a connection of the client's pool.

With hiredis installed, redis-py packs each command with hiredis's ``pack_command``,
which copies every argument into a growing buffer: for an ``MSET`` of 2,000 values
of 1.7 KB it took about 8 µs a value here, five times a ``b"".join`` of the same
pieces, and more than the rest of a record's write.  So the write path of
`RedisMsgpackStore` packs its ``MSET`` here: a value may come in pieces (a header
and the codec's bytes), which are never joined into one value first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

import redis
from redis.exceptions import ResponseError

Arg = bytes | str | int | tuple[bytes, ...]
"""A command's argument: bytes, a str (UTF-8), an int, or a value in pieces sent one after another."""


def pack(commands: Sequence[Sequence[Arg]]) -> bytes:
    """*commands* in RESP, one after another: what a pipeline sends."""
    out: list[bytes] = []
    put = out.append
    for command in commands:
        put(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, tuple):
                put(b"$%d\r\n" % sum(map(len, arg)))
                out.extend(arg)
                put(b"\r\n")
                continue
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            put(b"$%d\r\n" % len(data))
            put(data)
            put(b"\r\n")
    return b"".join(out)


def send(client: redis.Redis, commands: Sequence[Sequence[Arg]]) -> list[Any]:
    """Send *commands* in one write and read their replies, an error reply in its command's place.

    As redis-py's pipelines do: the client's retry policy re-sends the whole
    write on a connection lost before the replies came (a pooled connection the
    server closed, say), so the commands sent this way must be ones that may be
    applied twice (``MSET`` and ``SET`` of the same values).
    """
    packed = pack(commands)
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    try:
        replies: list[Any] = connection.retry.call_with_retry(
            lambda: _exchange(connection, packed, len(commands)), lambda _: connection.disconnect()
        )
        return replies
    finally:
        pool.release(connection)


def sendable(client: Any) -> TypeGuard[redis.Redis]:
    """Whether `send` may take a connection of *client*'s pool: one server, not a single-connection client."""
    return isinstance(client, redis.Redis) and client.connection is None


def joined(command: Sequence[Arg]) -> tuple[Any, ...]:
    """*command* with each value in pieces joined: for a client `send` cannot use."""
    return tuple(b"".join(arg) if isinstance(arg, tuple) else arg for arg in command)


def _exchange(connection: Any, packed: bytes, count: int) -> list[Any]:
    connection.send_packed_command([packed])
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(connection.read_response())
        except ResponseError as exc:  # the reply is read whole: the connection stays in step
            replies.append(exc)
    return replies
