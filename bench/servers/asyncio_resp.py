"""
A minimal RESP server on asyncio streams, the peer of the kvstore example in
C{bench/redis.py}: what a Python programmer writes with C{readuntil} and
C{readexactly}, replies coalesced while more input is buffered.

It serves the commands the benchmark sends (PING inline and multibulk, SET,
GET, and the C{CONFIG GET} redis-benchmark asks at start) plus ECHO, DEL and
INCR, over a plain dict: no expiry, no types but strings. Unknown commands
get Redis's error. It prints C{PORT <n> LOOP <class>} once listening, like
the other servers here, and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal

from _common import BACKLOG, announce, parse_args

_DATA: dict[bytes, bytes] = {}
_CONFIG = {b"save": b"", b"appendonly": b"no"}


def _bulk(value: bytes) -> bytes:
    """
    A bulk string reply.
    """
    return b"$%d\r\n%s\r\n" % (len(value), value)


def execute(args: list[bytes]) -> bytes:
    """
    Run one command and return its encoded reply.

    @param args: The command name and its arguments.
    @return: The RESP2 reply.
    """
    name = args[0].upper()
    if name == b"GET" and len(args) == 2:
        value = _DATA.get(args[1])
        return b"$-1\r\n" if value is None else _bulk(value)
    if name == b"SET" and len(args) == 3:
        _DATA[args[1]] = args[2]
        return b"+OK\r\n"
    if name == b"PING":
        return _bulk(args[1]) if len(args) == 2 else b"+PONG\r\n"
    if name == b"ECHO" and len(args) == 2:
        return _bulk(args[1])
    if name == b"DEL" and len(args) >= 2:
        return b":%d\r\n" % sum(_DATA.pop(k, None) is not None for k in args[1:])
    if name == b"INCR" and len(args) == 2:
        number = int(_DATA.get(args[1], b"0")) + 1
        _DATA[args[1]] = b"%d" % number
        return b":%d\r\n" % number
    if name == b"CONFIG" and len(args) == 3 and args[1].upper() == b"GET":
        value = _CONFIG.get(args[2].lower())
        if value is None:
            return b"*0\r\n"
        return b"*2\r\n" + _bulk(args[2].lower()) + _bulk(value)
    quoted = "".join(f"'{a.decode('latin-1')}' " for a in args[1:])
    return (
        f"-ERR unknown command '{args[0].decode('latin-1')}', with args "
        f"beginning with: {quoted}\r\n"
    ).encode("latin-1")


async def read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    """
    Read one command, multibulk or inline.

    @return: The arguments, or C{None} at the end of the stream.
    """
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError:
            return None
        if line[:1] != b"*":
            args = line.split()
            if args:
                return args
            continue
        count = int(line[1:-2])
        args = []
        for _ in range(count):
            header = await reader.readuntil(b"\r\n")
            length = int(header[1:-2])
            data = await reader.readexactly(length + 2)
            args.append(data[:-2])
        return args


async def serve_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """
    Answer commands until the client closes; replies to commands that
    arrived together go out in one write.
    """
    out: list[bytes] = []
    try:
        while True:
            args = await read_command(reader)
            if args is None:
                break
            out.append(execute(args))
            # StreamReader has no public "bytes buffered" query; _buffer is
            # what readuntil() itself consults. Coalesce while input waits.
            if not reader._buffer:  # type: ignore[attr-defined]
                writer.write(b"".join(out))
                out.clear()
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    """
    Listen on 127.0.0.1 and serve until SIGTERM or SIGINT.

    @param port: The port, or 0 for any free one.
    """
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set_result, None)
    server = await asyncio.start_server(
        serve_client, "127.0.0.1", port, backlog=BACKLOG
    )
    announce(server.sockets[0].getsockname()[1], loop)
    async with server:
        await stop


def main() -> None:
    """
    Run on the stdlib event loop.
    """
    options = parse_args(__doc__ or "")
    asyncio.run(serve(options.port))


if __name__ == "__main__":
    main()
