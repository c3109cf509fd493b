"""
What every benchmark server shares: the command line, the file limit, and how
it tells the driver its port.

Each server is a separate script run as its own process by C{bench/run.py}.
It listens on 127.0.0.1 (port 0 unless C{--port} is given: the kernel picks a
free one), prints C{PORT <n> LOOP <reactor or event loop class>} on stdout once it
accepts connections, and runs
until SIGTERM or SIGINT. It must stay free of measurement code: the driver
reads its memory from C{/proc} and drives it with C{lineblast}.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet.protocol import Protocol

__all__ = [
    "BACKLOG",
    "announce",
    "exit_on_eof",
    "parse_args",
    "raise_file_limit",
    "serve_twisted",
]

#: The listen backlog: high enough that 5,000 idle connections opened in
#: windows of 256 never overflow the accept queue (each framework's default,
#: 50 for Twisted and 100 for asyncio, would make the kernel drop SYNs).
BACKLOG = 1024


def parse_args(description: str) -> argparse.Namespace:
    """
    Parse the common command line and raise the file limit.

    @param description: What the server is, for C{--help}.
    @return: The options (C{port}, C{exit_on_eof}).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--exit-on-eof",
        action="store_true",
        help="stop (as on SIGTERM) when standard input reaches its end: the "
        "driver holds a pipe open, so a driver that dies takes the server along",
    )
    options = parser.parse_args()
    raise_file_limit()
    if options.exit_on_eof:
        exit_on_eof()
    return options


def exit_on_eof() -> None:
    """
    Send ourselves SIGTERM once standard input reaches its end.

    The driver starts each server in a session of its own, so a signal for
    its terminal's process group does not reach the server; this way a
    driver that is killed still leaves no server behind. A daemon thread
    blocks reading standard input; on end of input it raises SIGTERM, which
    every server handles by stopping its reactor or event loop.
    """

    def wait() -> None:
        while sys.stdin.buffer.read(65536):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="exit-on-eof", daemon=True).start()


def raise_file_limit() -> None:
    """
    Raise the soft limit on open files to the hard limit, so that thousands of
    idle connections fit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(port: int, loop: object) -> None:
    """
    Tell the driver which port we listen on, and on which event loop.

    @param port: The listening port.
    @param loop: The reactor or event loop; its class is reported.
    """
    kind = type(loop)
    sys.stdout.write(f"PORT {port} LOOP {kind.__module__}.{kind.__qualname__}\n")
    sys.stdout.flush()


def serve_twisted(protocol: type[Protocol], description: str) -> None:
    """
    Serve C{protocol} on 127.0.0.1 with Twisted's default reactor until
    SIGTERM.

    @param protocol: The protocol class; one instance per connection.
    @param description: What the server is, for C{--help}.
    """
    from twisted.internet import reactor
    from twisted.internet.address import IPv4Address
    from twisted.internet.protocol import ServerFactory

    options = parse_args(description)
    factory = ServerFactory()
    factory.protocol = protocol
    listening = reactor.listenTCP(
        options.port,
        factory,
        backlog=BACKLOG,
        interface="127.0.0.1",
    )
    address = listening.getHost()
    assert isinstance(address, IPv4Address)
    announce(address.port, reactor)
    reactor.run()
