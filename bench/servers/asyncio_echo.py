"""
Line echo with asyncio streams on the stdlib event loop, as the asyncio
documentation writes it (C{readline}, C{write}, C{await drain()}).
"""

from __future__ import annotations

import asyncio
import signal

from _common import BACKLOG, announce, parse_args


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """
    Echo every line back until the peer closes.
    """
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line)
            await writer.drain()
    except ConnectionError:
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
    server = await asyncio.start_server(echo, "127.0.0.1", port, backlog=BACKLOG)
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
