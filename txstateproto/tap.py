"""
The C{twistd stateproto} subcommand: its L{Options} and L{makeService}.

This module owns the command line (C{--listen}, C{--protocol}, the timeouts
and the connection limit), the service tree twistd runs, and graceful
shutdown. It may import L{txstateproto._protocol} and L{txstateproto._builtin};
it must not know any framing, and nothing in the library imports it. The
dropin in C{twisted/plugins/txstateproto_plugin.py} names this module as a
string only, so that Twisted's plugin scans never import it.

The server is built from Twisted parts: one endpoint service per C{--listen}
(the endpoint strings are parsed by L{endpoints.serverFromString}, so C{tcp:},
C{tcp6:}, C{unix:}, C{ssl:}, C{systemd:} and the C{haproxy:} wrapper all
work), under one L{MultiService}, with the reactor's own signal handling.

Graceful shutdown
=================
Twisted stops listening on C{stopService} but leaves live connections to
the reactor's final C{disconnectAll}, and never times out a stop Deferred,
so L{makeService}'s service adds this on C{stopService} (which twistd calls
on SIGTERM or SIGINT):

  1. stop accepting and stop listening, at once;
  2. cancel every live conversation, so that each handler's cancel cascade
     and C{finally} blocks run (a handler that catches the cancel may still
     write a goodbye and C{drain()} it: the connection closes only when the
     conversation ends, after queued writes are flushed);
  3. wait for the connections to close, up to C{--shutdown-timeout}, then
     abort those left; a second SIGTERM or SIGINT meanwhile aborts them at
     once (the reactor's own handlers would only log that it is already
     stopping);
  4. log a summary. twistd then stops the reactor and, after a signal,
     re-raises it, as it always does.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer, endpoints
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python import reflect, usage

from txstateproto._builtin import BUILTINS, DEFAULT_BUILTIN
from txstateproto._protocol import ConnectionState, StateProtocol

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import (
        IAddress,
        IDelayedCall,
        IListeningPort,
        IReactorTime,
        IStreamServerEndpoint,
    )

__all__ = ["Options", "makeService"]

_log = Logger(namespace="txstateproto.tap")

#: What C{--protocol} names: called with no arguments, it makes the
#: protocol for one connection.
_ProtocolMaker = Callable[[], StateProtocol]

#: The endpoint C{--listen} defaults to.
_DEFAULT_LISTEN = "tcp:8000"

#: The default C{--shutdown-timeout}, in seconds.
_DEFAULT_SHUTDOWN_TIMEOUT = 10.0


def _resolve_protocol(name: str) -> _ProtocolMaker:
    """
    Find what C{--protocol NAME} names: a built-in's short name, or a dotted
    path to a L{StateProtocol} subclass or to a callable that makes one.

    Dotted paths are imported with the current directory on C{sys.path}
    (first, as C{python -m} has it), so that a module beside the user
    resolves without installing it.

    @param name: The name given on the command line.
    @return: A callable making one protocol per connection.
    @raise usage.UsageError: If C{name} is neither a built-in nor an
        importable dotted path, or names something that cannot make a
        L{StateProtocol}; the one-line message names what was tried. An
        error raised by the imported module itself (other than a missing
        import) propagates, with its traceback.
    """
    builtin = BUILTINS.get(name)
    if builtin is not None:
        return builtin
    tried = f"not a built-in ({', '.join(sorted(BUILTINS))})"
    if "." not in name:
        raise usage.UsageError(
            f"--protocol {name!r}: {tried} and not a dotted path "
            f"(module.Class); nothing to import"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found = reflect.namedAny(name)  # type: ignore[no-untyped-call]
    except (reflect.ModuleNotFound, reflect.ObjectNotFound):
        raise usage.UsageError(
            f"--protocol {name!r}: {tried}, and {_missing(name)} (with {cwd} on "
            f"sys.path)"
        ) from None
    except (reflect.InvalidName, ImportError, AttributeError) as e:
        # An ImportError raised inside the named module (a dependency it
        # lacks) or a malformed name.
        raise usage.UsageError(
            f"--protocol {name!r}: {tried}, and importing it failed (with "
            f"{cwd} on sys.path): {e}"
        ) from None
    if isinstance(found, type):
        if issubclass(found, StateProtocol):
            return found
        raise usage.UsageError(
            f"--protocol {name!r}: {found.__module__}.{found.__qualname__} "
            f"is a class but not a txstateproto.StateProtocol subclass"
        )
    if callable(found):
        maker: _ProtocolMaker = found
        return maker
    raise usage.UsageError(
        f"--protocol {name!r}: found a {type(found).__name__}, not a "
        f"StateProtocol subclass or a callable making one"
    )


def _missing(name: str) -> str:
    """
    Say which part of a dotted name could not be found, after
    L{reflect.namedAny} imported what it could.
    """
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in sys.modules:
            return f"module {prefix!r} has no attribute {parts[i]!r}"
    return f"no module named {parts[0]!r}"


def _number(
    option: str,
    value: object,
    convert: Callable[[str], float],
    minimum: float,
    strict: bool,
) -> float:
    """
    Check one numeric option, for L{Options.postOptions}.

    @raise usage.UsageError: If C{value} is not a number above (or, unless
        C{strict}, equal to) C{minimum}.
    """
    kind = "a whole number" if convert is int else "a number of seconds"
    bound = f"above {minimum:g}" if strict else f"of at least {minimum:g}"
    try:
        number = convert(str(value))
    except ValueError:
        number = None
    if (
        number is None
        or number != number  # NaN
        or number in (float("inf"), float("-inf"))
        or number < minimum
        or (strict and number == minimum)
    ):
        raise usage.UsageError(f"--{option} needs {kind} {bound}, not {value!r}")
    return number


class Options(usage.Options):
    """
    The command line of C{twistd stateproto}.

    After parsing, C{self["listen"]} holds the endpoint strings (at least
    one), C{self["endpoints"]} the parsed endpoints in the same order,
    C{self["protocol_maker"]} what C{--protocol} resolved to, and the
    numeric options hold numbers (C{None} where not given).

    Errors are L{usage.UsageError}s naming the option and the value. Parsed
    as twistd's subcommand, an error is instead printed to standard error
    as one line and the process exits with status 2, as command-line tools
    do for usage errors, rather than after twistd's whole usage text.

    @ivar stderr: Where the one-line error goes under twistd.
    """

    synopsis = "[--listen ENDPOINT ...] [--protocol NAME] [options]"

    longdesc = (
        "Serve a txstateproto StateProtocol handler on Twisted server "
        "endpoints. --protocol takes a built-in's short name ("
        + ", ".join(sorted(BUILTINS))
        + ") or a dotted path, resolved from the current directory too, to a "
        "StateProtocol subclass or to a callable making one. On SIGTERM or "
        "SIGINT the server stops listening, cancels every conversation, waits "
        "for them up to --shutdown-timeout, aborts the rest and exits. "
        "Endpoint strings: tcp:8000, tcp6:port=8000:interface=\\:\\:1, "
        "unix:/path, ssl:8443:privateKey=key.pem:certKey=cert.pem, "
        "systemd:domain=INET:index=0, haproxy:tcp:8000. Example: twistd -n "
        "stateproto --listen tcp:8000 --listen unix:/tmp/echo.sock "
        "--protocol examples.echo_server.EchoServer"
    )

    optParameters: ClassVar[list[list[Any]]] = [
        [
            "protocol",
            "p",
            DEFAULT_BUILTIN,
            "The handler: a built-in's short name, or module.Class (a "
            "StateProtocol subclass, or a callable making one).",
        ],
        [
            "idle-timeout",
            None,
            None,
            "Close a connection after this many seconds without receiving "
            "a byte (default: the handler's idle_timeout).",
        ],
        [
            "max-connections",
            None,
            None,
            "Refuse connections beyond this many open at once: they are "
            "closed as soon as accepted, and counted in the log "
            "(default: no limit).",
        ],
        [
            "shutdown-timeout",
            None,
            str(_DEFAULT_SHUTDOWN_TIMEOUT),
            "On shutdown, seconds to wait for cancelled conversations to end "
            "before aborting their connections.",
        ],
    ]

    stderr: TextIO | None = None

    def __init__(self) -> None:
        """
        Start with no C{--listen} given.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on a Twisted server endpoint string (repeatable; default tcp:8000).
        """
        self["listen"].append(description)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse C{options}; under twistd, report an error on one line and
        exit with status 2.

        @param options: The arguments (C{sys.argv[1:]} if C{None}).
        @raise usage.UsageError: On a bad option or value, unless parsed as
            twistd's subcommand.
        @raise SystemExit: With status 2 instead, as twistd's subcommand.
        """
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            if self.parent is None:
                raise
            stderr = self.stderr if self.stderr is not None else sys.stderr
            stderr.write(f"twistd stateproto: error: {e}\n")
            stderr.flush()
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        """
        Check the numbers, resolve C{--protocol} and parse the endpoints.

        @raise usage.UsageError: Naming the option and the value at fault.
        """
        if self["idle-timeout"] is not None:
            self["idle-timeout"] = _number(
                "idle-timeout", self["idle-timeout"], float, 0, True
            )
        if self["max-connections"] is not None:
            self["max-connections"] = int(
                _number("max-connections", self["max-connections"], int, 1, False)
            )
        self["shutdown-timeout"] = _number(
            "shutdown-timeout", self["shutdown-timeout"], float, 0, False
        )
        self["protocol_maker"] = _resolve_protocol(self["protocol"])
        if not self["listen"]:
            self["listen"] = [_DEFAULT_LISTEN]
        from twisted.internet import reactor

        parsed = []
        for description in self["listen"]:
            try:
                parsed.append(
                    endpoints.serverFromString(  # type: ignore[no-untyped-call]
                        reactor, description
                    )
                )
            except Exception as e:
                # Any parser or key-file error: it is the user's string at
                # fault, and the message says what is wrong with it.
                hint = ""
                if description.startswith("systemd:") and isinstance(
                    e, (IndexError, KeyError)
                ):
                    hint = (
                        " (no such socket inherited from systemd: LISTEN_PID, "
                        "LISTEN_FDS and LISTEN_FDNAMES say which there are)"
                    )
                raise usage.UsageError(
                    f"--listen {description!r}: {type(e).__name__}: {e}{hint}"
                ) from None
        self["endpoints"] = parsed


def _describe(address: IAddress) -> str:
    """
    An address as a person would write it: C{127.0.0.1:8000}, C{[::1]:8000},
    C{/path/to.sock}.
    """
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            return name.decode("utf-8", "replace")
        return str(name)
    return str(address)


class _Refused(Protocol):
    """
    What a connection beyond C{--max-connections} gets: closed as soon as it
    is made, without a byte written, so the client reads end of file.
    """

    def connectionMade(self) -> None:
        """
        Close at once.
        """
        assert self.transport is not None
        self.transport.loseConnection()


class _ServerFactory(Factory):
    """
    Makes one protocol per connection, enforces C{--max-connections},
    applies C{--idle-timeout}, and keeps the live protocols for shutdown.

    @ivar live: The protocols whose connection is open or whose
        conversation has not ended.
    @ivar served: How many connections were handed to a protocol.
    @ivar refused: How many were refused by C{max_connections}.
    @ivar aborted: How many were aborted at shutdown (its timeout, or a
        second signal).
    """

    noisy = False

    def logPrefix(self) -> str:
        """
        What Twisted's ports call us in their own log lines.
        """
        return "stateproto"

    def __init__(
        self,
        maker: _ProtocolMaker,
        name: str,
        idle_timeout: float | None,
        max_connections: int | None,
        clock: IReactorTime,
    ) -> None:
        self._maker = maker
        self._name = name
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._clock = clock
        self._accepting = True
        self._all_closed: Deferred[None] | None = None
        self._abort_timer: IDelayedCall | None = None
        self.live: set[StateProtocol] = set()
        self.served = 0
        self.refused = 0
        self.aborted = 0

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        """
        Make the protocol for a new connection, or refuse it.

        @param addr: The peer's address.
        @return: A L{StateProtocol}; a protocol that closes at once if
            C{max_connections} are open; or C{None} (Twisted then drops the
            connection) while shutting down or if the handler could not be
            made.
        """
        if not self._accepting:
            return None
        limit = self._max_connections
        if limit is not None and len(self.live) >= limit:
            self.refused += 1
            _log.warn(
                "refused connection from {peer}: max_connections={limit} "
                "reached ({refused} refused so far)",
                peer=_describe(addr),
                limit=limit,
                refused=self.refused,
            )
            return _Refused()
        try:
            made: object = self._maker()
        except Exception:
            _log.failure(
                "could not make a {name} protocol for {peer}",
                name=self._name,
                peer=_describe(addr),
            )
            return None
        if not isinstance(made, StateProtocol):
            _log.error(
                "--protocol {name} made {made!r}, not a StateProtocol; "
                "dropping the connection from {peer}",
                name=self._name,
                made=made,
                peer=_describe(addr),
            )
            return None
        protocol = made
        protocol.factory = self
        if self._idle_timeout is not None:
            protocol.idle_timeout = self._idle_timeout
        self.live.add(protocol)
        self.served += 1
        protocol.when_closed().addCallback(self._closed, protocol)
        return protocol

    def _closed(self, ignored: None, protocol: StateProtocol) -> None:
        """
        A connection closed and its conversation ended: forget it, and end
        a shutdown waiting for the last one.
        """
        self.live.discard(protocol)
        if not self.live and self._all_closed is not None:
            self._finish_shutdown()

    def shut_down(self, timeout: float) -> Deferred[None]:
        """
        Refuse new connections, cancel every live conversation, and abort
        the connections still open after C{timeout} seconds.

        @param timeout: Seconds to wait before aborting.
        @return: A Deferred firing with C{None} when every connection has
            closed or been aborted. Cancelling it aborts at once.
        """
        self._accepting = False
        d: Deferred[None] = defer.Deferred(
            lambda ignored: self._abort_all("as the shutdown was cancelled")
        )
        self._all_closed = d
        if not self.live:
            self._finish_shutdown()
            return d
        self._abort_timer = self._clock.callLater(
            timeout, self._abort_all, f"after shutdown_timeout={timeout:g} s"
        )
        for protocol in list(self.live):
            conversation = protocol.conversation
            if conversation is not None and not conversation.called:
                conversation.cancel()
            elif protocol.state is not ConnectionState.CLOSED:
                # No conversation yet (a wrapper such as haproxy: has not
                # connected it) or it already ended: just close.
                transport = protocol.transport
                if transport is not None:
                    transport.loseConnection()
        return d

    def abort_now(self, why: str) -> None:
        """
        During a shutdown, abort every connection still open without
        waiting for the timeout; otherwise do nothing.

        @param why: Why, for the log.
        """
        if self._all_closed is not None:
            self._abort_all(why)

    def _abort_all(self, why: str) -> None:
        """
        Abort every connection still open, and end the shutdown (which
        cancels the timeout's timer unless it is what called us).
        """
        left = list(self.live)
        self.aborted += len(left)
        if left:
            _log.warn(
                "aborting {count} connections still open {why}",
                count=len(left),
                why=why,
            )
        for protocol in left:
            self.live.discard(protocol)
            transport = protocol.transport
            if transport is None:
                continue
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()
        self._finish_shutdown()

    def _finish_shutdown(self) -> None:
        """
        Fire the shutdown Deferred, once.
        """
        timer, self._abort_timer = self._abort_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        d, self._all_closed = self._all_closed, None
        if d is not None and not d.called:
            d.callback(None)


class _ListeningService(StreamServerEndpointService):
    """
    Listens on one C{--listen} endpoint, and logs the address actually
    bound (so C{tcp:0} is usable).

    Failing to listen raises from C{startService}, so twistd reports it and
    exits instead of running a server that serves nothing.
    """

    _raiseSynchronously = True

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: _ServerFactory,
        description: str,
        name: str,
    ) -> None:
        super().__init__(endpoint, factory)  # type: ignore[no-untyped-call]
        self._description = description
        self._protocol_name = name

    def privilegedStartService(self) -> None:
        """
        Start listening, and log where once listening.
        """
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        waiting = self._waitingForPort
        assert waiting is not None
        waiting.addCallback(self._listening)

    def _listening(self, port: IListeningPort | None) -> IListeningPort | None:
        """
        Log the bound address.
        """
        if port is not None:
            _log.info(
                "{protocol} listening on {address} ({description})",
                protocol=self._protocol_name,
                address=_describe(port.getHost()),
                description=self._description,
            )
        return port


class _Server(MultiService):
    """
    The service L{makeService} returns: the listening services as children,
    and graceful shutdown in L{stopService}.
    """

    def __init__(
        self,
        factory: _ServerFactory,
        shutdown_timeout: float,
        reactor: IReactorThreads | None,
    ) -> None:
        """
        @param reactor: The running reactor, whose signal handlers a
            shutdown takes over (see L{_abort_on_next_signal}), or C{None}
            to leave signals alone.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.factory = factory
        self.shutdown_timeout = shutdown_timeout
        self._reactor = reactor
        self._saved_handlers: dict[int, Any] = {}

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, cancel every conversation, wait for them up to the
        shutdown timeout, abort the rest, and log a summary.

        @return: A Deferred firing with C{None} when all that is done.
        """
        factory = self.factory
        # Before the log line, so that a signal sent once it is seen aborts.
        self._abort_on_next_signal()
        _log.info(
            "shutting down: no longer listening; cancelling {count} live "
            "conversations (shutdown_timeout={timeout} s)",
            count=len(factory.live),
            timeout=self.shutdown_timeout,
        )
        stopped: Deferred[Any] = super().stopService()  # type: ignore[no-untyped-call]
        closed = factory.shut_down(self.shutdown_timeout)
        both = defer.gatherResults([stopped, closed], consumeErrors=True)
        return both.addCallback(self._stopped)

    def _abort_on_next_signal(self) -> None:
        """
        Until the shutdown ends, make SIGINT and SIGTERM abort what is left
        at once, as users of Ctrl-C expect of a second press.

        The reactor's own handlers would try to stop the reactor again,
        which is already stopping, and log a C{ReactorNotRunning}
        traceback. Only handlers the reactor installed are replaced (not a
        default or ignored disposition), only from the main thread, and
        they are put back when the shutdown ends.
        """
        reactor = self._reactor
        if reactor is None or threading.current_thread() is not threading.main_thread():
            return
        factory = self.factory

        def abort(signum: int, frame: object) -> None:
            # Like the reactor's handlers: do the work in the reactor loop.
            name = signal.Signals(signum).name
            reactor.callFromThread(factory.abort_now, f"on a second signal ({name})")

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                self._saved_handlers[signum] = previous
                signal.signal(signum, abort)

    def _stopped(self, ignored: object) -> None:
        """
        Put the signal handlers back, and log the summary.
        """
        saved, self._saved_handlers = self._saved_handlers, {}
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        factory = self.factory
        _log.info(
            "stopped: {served} connections served, {refused} refused by "
            "max_connections, {aborted} aborted",
            served=factory.served,
            refused=factory.refused,
            aborted=factory.aborted,
        )


def makeService(options: Options, clock: IReactorTime | None = None) -> MultiService:
    """
    Make the service C{twistd stateproto} runs.

    @param options: Parsed L{Options}.
    @param clock: The clock for the shutdown timeout; the reactor by
        default.
    @return: A L{MultiService} with one listening service per C{--listen}
        endpoint. Its C{stopService} shuts down gracefully (see this
        module's docstring) and returns a Deferred that fires once every
        connection has closed or been aborted.
    """
    running: IReactorThreads | None = None
    if clock is None:
        from twisted.internet import reactor

        clock = reactor
        # Every reactor twistd offers runs threads; one that does not keeps
        # the reactor's own signal handling through the whole shutdown.
        running = IReactorThreads(reactor, None)
    name: str = options["protocol"]
    factory = _ServerFactory(
        options["protocol_maker"],
        name,
        options["idle-timeout"],
        options["max-connections"],
        clock,
    )
    server = _Server(factory, options["shutdown-timeout"], running)
    for description, endpoint in zip(
        options["listen"], options["endpoints"], strict=True
    ):
        listening = _ListeningService(endpoint, factory, description, name)
        listening.setServiceParent(server)  # type: ignore[no-untyped-call]
    return server
