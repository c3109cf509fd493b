"""
A line echo server, written the way txstateproto's README teaches: a greeting
state, an echo state with a per-line timeout, a goodbye when the server shuts
down, and clean-up in C{finally}.

Run it from the checkout root and talk to it with C{nc localhost 8000}:

    twistd -n stateproto --protocol examples.echo_server.EchoServer
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from txstateproto import ConnectionState, StateProtocol, noreturn

log = Logger()


#### The handler: one method per state


class EchoServer(StateProtocol):
    """
    Greet, then echo each line back until C{QUIT}, a quiet minute, or the
    end of the connection.

    @cvar line_timeout: Seconds the peer may take to send each line.
    """

    # nc ends lines with "\n", telnet with "\r\n": read up to "\n" and
    # strip a trailing "\r" below, so both work.
    delimiter = b"\n"
    line_timeout = 60.0

    def start(self) -> Generator[Any, Any, None]:
        """
        The greeting state: say hello, then hand over to L{echoing}.
        """
        self.write_line(b"HELLO: I echo lines; QUIT to leave")
        yield self.drain()
        noreturn(self.echoing())  # a tail call: this state's frame is freed

    def echoing(self) -> Generator[Any, Any, None]:
        """
        The echo state: echo lines until C{QUIT} or a line timeout.
        """
        lines = 0
        try:
            while True:
                try:
                    line = yield self.read_line(timeout=self.line_timeout)
                except defer.TimeoutError:
                    self.write_line(b"TIMEOUT: no line for a while, bye")
                    return  # the handler ends: the connection closes
                line = line.removesuffix(b"\r")
                if line == b"QUIT":
                    self.write_line(b"BYE")
                    return
                lines += 1
                self.write_line(line)
                yield self.drain()  # a client that does not read slows us
        except defer.CancelledError:
            if self.state is ConnectionState.CONNECTED:
                # Cancelled while still connected: the server is shutting
                # down. Say goodbye; the socket closes once it is sent.
                self.write_line(b"BYE: server shutting down")
                yield self.drain()
            raise
        finally:
            # Runs however the state ends: QUIT, timeout, lost connection,
            # shutdown.
            log.info("echo session ended after {lines} lines", lines=lines)
