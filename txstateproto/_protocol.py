"""
L{StateProtocol}: a Twisted protocol whose connection handler is a coroutine
state machine.

This module ties the transport, the receive buffer and the coroutine engine
together: reads as cancellable Deferreds satisfied from one buffer in arrival
order, writes with back-pressure (C{drain}), timers on C{self.clock}, side
tasks, connection-loss cancel, pause/unpause down to the socket, logging. It
must not know any framing beyond delimited lines and counted reads (those are
in L{txstateproto.protocols}), nor twistd and its options.

Flow of bytes
=============

C{dataReceived} appends to the L{ReceiveBuffer}, then satisfies queued reads
in order, each in a loop: firing a read resumes the handler synchronously,
and the handler's next read is usually satisfied from the buffer at once, so
one chunk holding many messages is handled in one C{dataReceived} with no
reactor turn per message. Reads issued when nothing is queued try the buffer
first and return an already-fired Deferred, which the engine takes without a
callback.

Writes
======

On a plain TCP connection (exactly Twisted's C{tcp.Server} or C{tcp.Client},
TLS not started), writes made while a chunk is handled go straight into the
transport's own send buffer (C{FileDescriptor._tempDataBuffer}), skipping
C{transport.write()}'s per-call checks and its registration with the reactor
for writing. The batch is then sent with the one C{send()} that the
transport's C{doWrite()} would make on the reactor's next turn (after an
C{epoll_ctl} to watch the socket for writing and before another to stop),
made on its socket directly. A request/response exchange then costs one
C{recv} and one C{send} per message.

When it is sent: the first connection to have a batch in a reactor turn
sends it at the end of its C{dataReceived}, and schedules a call for the end
of the turn (C{callLater(0)}: after every event of that poll is handled);
the other connections that get a batch in the same turn leave it in their
send buffers, and that call sends them one after another (a call cancelled
from outside before it ran, as trial's janitor cancels leftover calls, is
noticed by the next batch, which sends what it left). A lone exchange is
answered at once, and the reactor's next poll does not block (a call is
pending), which answers a client that waits for each reply sooner. When
many connections are ready together, their replies go out back to back
after all of them are read, as Twisted's own deferred write sends them (but
with no writer registration), so the peer on the other side of loopback,
woken by the first, finds the others ready instead of being woken once per
reply. Measured with C{bench/run.py}: see docs/benchmarks.md.

A partial send, C{EAGAIN} or an error leaves the rest where
C{doWrite()} leaves a partial send, for the reactor (the socket is
registered for writing then), whose own C{doWrite()} sends it or meets the
error again and reports it. The send is done only when nothing from an
earlier turn is queued ahead, the connection is not closing (nor its write
side), TLS is off, and this protocol is the transport's unpaused producer
(the cases in which C{doWrite()} would call nothing back);
otherwise the batch is registered for writing as C{write()} would have.

Ordering is kept: C{self.transport.write()} appends to the same buffer, and
C{start_tls} (which flips the transport's C{TLS} flag) sends the bytes
already buffered in plaintext before the handshake, every later write going
through TLS. Back-pressure is kept: a batch past C{_BATCH_MAX} bytes is
handed to the transport (which may pause us) at once, and so is one that
L{StateProtocol.drain} finds would take the transport's buffer past its
C{bufferSize}, where the transport's own C{write()} would have paused us; a
smaller one stays for the end of the turn, and C{drain} gives the answer the
transport would give (so a server that drains after every reply still has
its replies sent with the others of the turn). Every other transport (TLS
layers, wrappers, UNIX sockets, the IOCP reactor, test transports) takes the
ordinary C{transport.write()} path.

Memory is bounded whatever the peer sends: a pending line read fails as soon
as the buffer holds more than the limit without the delimiter, and when no
read can consume what is buffered (the handler is busy on a sub-request),
reading from the transport is paused once the buffer passes
C{receive_high_water}, so TCP flow control pushes back on the peer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator
from collections.abc import Coroutine as _AsyncBody
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import defer, interfaces, task, tcp
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txstateproto._buffer import ReceiveBuffer
from txstateproto._coroutine import Coroutine, DirectDeferred, FiredDeferred
from txstateproto._errors import (
    EndOfStreamError,
    FrameTooLongError,
    ProtocolError,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

__all__ = ["ConnectionState", "StateProtocol"]

_T = TypeVar("_T")

_log = Logger(namespace="txstateproto")

#: The transports whose send buffer StateProtocol writes into directly while
#: it handles a chunk, sending the batch at the end of C{dataReceived} (see
#: "Writes" in the module docstring): exactly Twisted's plain TCP connection
#: classes, not subclasses, so that the FileDescriptor internals relied on are
#: known. TLS (listenSSL, TLS endpoints: a TLSMemoryBIOProtocol in between),
#: other wrappers, UNIX sockets, the IOCP reactor's classes and test
#: transports all take the ordinary transport.write() path.
_DIRECT_TYPES = frozenset({tcp.Server, tcp.Client})

#: What the direct path uses of those classes (FileDescriptor's and
#: tcp.Connection's attributes, some private): a Twisted release lacking any
#: of them gets the ordinary path rather than an AttributeError.
_DIRECT_NEEDS = (
    "TLS",
    "_aborting",
    "_maybePauseProducer",
    "_tempDataBuffer",
    "_tempDataLen",
    "_writeDisconnected",
    "_writeDisconnecting",
    "bufferSize",
    "connected",
    "dataBuffer",
    "disconnecting",
    "offset",
    "producer",
    "producerPaused",
    "reactor",
    "socket",
    "startWriting",
)

# While one chunk is handled, a batch growing past this many bytes is handed to
# the transport at once, so that its back-pressure (pauseProducing) still
# reaches drain() in time. Twisted's FileDescriptor.bufferSize is 64 KiB too.
_BATCH_MAX = 65536

# write_line() concatenates lines shorter than this with the delimiter (one
# transport.write); longer ones go as two pieces to writeSequence rather than
# being copied.
_CONCAT_MAX = 65536


class ConnectionState(Enum):
    """
    Where a L{StateProtocol}'s connection is in its life.
    """

    #: Not connected yet: C{connectionMade} has not run.
    NOT_CONNECTED = "not connected"
    #: Connected; bytes flow both ways.
    CONNECTED = "connected"
    #: The peer shut its write side (half-close); we may still write.
    PEER_CLOSED = "peer closed"
    #: The connection is gone; C{disconnect_reason} says why.
    CLOSED = "closed"


class _Kind(Enum):
    """
    What a queued read is waiting for.
    """

    #: Bytes up to a delimiter (C{read_line}, C{read_until}).
    UNTIL = "until"
    #: A fixed count of bytes (C{read_exactly}).
    EXACTLY = "exactly"
    #: Whatever is buffered, at most a count (C{read_some}).
    SOME = "some"
    #: Anything buffered, then parsed in place (C{read_scanned}).
    SCAN = "scan"


# Module globals: a member reached through its Enum class costs about 100 ns
# on CPython 3.11, a module global about 10 (timeit), on every path that
# tests or sets a state or a read's kind.
_UNTIL = _Kind.UNTIL
_EXACTLY = _Kind.EXACTLY
_SOME = _Kind.SOME
_SCAN = _Kind.SCAN
_NOT_CONNECTED = ConnectionState.NOT_CONNECTED
_CONNECTED = ConnectionState.CONNECTED
_PEER_CLOSED = ConnectionState.PEER_CLOSED
_CLOSED = ConnectionState.CLOSED


class _Read(DirectDeferred[Any]):
    """
    A read that the buffer could not satisfy yet: the Deferred handed to the
    reader, carrying what it waits for.

    It is its own Deferred (rather than an object holding one) so that a
    queued read costs one allocation and makes no reference cycle: a
    canceller bound to a separate holder would tie the two together until
    the garbage collector ran.
    """

    __slots__ = (
        "_owner",
        "delimiter",
        "kind",
        "limit_name",
        "scan",
        "seen",
        "size",
        "timer",
    )

    #: The parser of a C{read_scanned} read; set on those reads only.
    scan: Callable[[bytes | bytearray, int, int], tuple[Any, int] | None]

    def __init__(
        self,
        kind: _Kind,
        size: int,
        delimiter: bytes,
        limit_name: str,
        seen: int,
        owner: StateProtocol,
    ) -> None:
        # What Deferred.__init__ and DirectDeferred's set, without their two
        # frames: a read that waits for bytes is made per message when one
        # message arrives per chunk (as _fired does for buffered reads).
        if self.debug:
            # Deferred debugging on: let __init__ record the creator's stack.
            Deferred.__init__(self, _cancel_read)
        else:
            # No callback list until one is needed (DirectDeferred's
            # docstring): a read waited on directly never gets a callback.
            self._chain = None
            self._canceller = _cancel_read
        self._waiter = None
        self.kind = kind
        self.size = size
        self.delimiter = delimiter
        self.limit_name = limit_name
        # The receive count at which the buffer last failed this read (-1:
        # not tried): until more bytes arrive, trying again is wasted work.
        self.seen = seen
        self.timer: IDelayedCall | None = None
        # The protocol whose queue holds this read, while it does (the
        # caller appends it to that queue).
        self._owner: StateProtocol | None = owner

    def _remove(self) -> None:
        """
        Leave the queue of reads and cancel the timeout, if any.
        """
        owner = self._owner
        if owner is not None:
            self._owner = None
            owner._unqueue(self)
        timer = self.timer
        if timer is not None:
            self.timer = None
            if timer.active():
                timer.cancel()

    def __repr__(self) -> str:
        """
        Say what the read waits for, for the conversation's C{repr}.
        """
        if self.kind is _UNTIL:
            wanted = f"until {self.delimiter!r} ({self.limit_name}={self.size})"
        else:
            wanted = f"{self.kind.value} {self.size}"
        state = "queued" if self._owner is not None else "done"
        return f"<read {wanted} {state} at 0x{id(self):x}>"

    __str__ = __repr__


def _cancel_read(read: Deferred[bytes]) -> None:
    """
    The canceller of a L{_Read}: leave the queue, so that later bytes go to
    the next reader and nothing is consumed for this one.

    If it was the first read in the queue, the next one may be satisfied by
    what is already buffered: it fails with L{CancelledError} first, then
    the reads behind it are given the buffer.
    """
    assert isinstance(read, _Read)
    owner = read._owner
    if owner is None:
        return
    was_head = owner._head_read is read
    read._remove()
    if was_head and owner._head_read is not None:
        read.errback(Failure(CancelledError()))
        owner._head_removed()


@implementer(interfaces.IHalfCloseableProtocol, interfaces.IPushProducer)
class StateProtocol(Protocol):
    """
    A protocol whose connection handler is a coroutine state machine.

    Subclass it and write C{start()}, a generator (or C{async def}) that
    reads as if it were blocking and hands over to the next state with
    L{noreturn}::

        class Greeter(StateProtocol):
            def start(self):
                self.write_line(b"HELLO")
                name = yield self.read_line(timeout=30)
                noreturn(self.chatting(name))

            def chatting(self, name):
                while True:
                    line = yield self.read_line()
                    if line == b"QUIT":
                        return
                    self.write_line(b"you said: " + line)

    Serve it with C{Factory.forProtocol(Greeter)} on any endpoint, or use it
    as a client with C{connectProtocol(endpoint, Greeter())}.

    C{start()} runs as a L{Coroutine} (L{conversation}) from
    C{connectionMade}. When it returns, queued writes are flushed and the
    connection is closed. If it raises, the failure is logged once, with
    the protocol class, the peer and the traceback, and the connection is
    closed; a L{ProtocolError} or a read's
    L{twisted.internet.defer.TimeoutError} (the peer sent something we
    cannot accept, or not in time) is logged as a warning without a
    traceback instead. Losing the connection cancels the conversation,
    cascading through whatever it waits on; the resulting L{CancelledError}
    (or the connection's loss raised by a read or L{drain} in clean-up code)
    is expected and not logged. The conversation's failure is consumed by
    the protocol after logging: callbacks added to L{conversation} later see
    C{None}.

    Afterwards nothing is left behind: no timer on L{clock}, no producer
    registered with the transport, and no reference cycle that would keep
    the protocol alive until the garbage collector runs.

    Limits and knobs, overridable on a subclass or an instance:

    @cvar delimiter: The line delimiter for L{read_line} and L{write_line}.
    @cvar max_line_length: The longest line L{read_line} accepts, without the
        delimiter; a longer one raises L{LineTooLongError}.
    @cvar max_frame_size: The largest count L{read_exactly} accepts; a larger
        one raises L{FrameTooLongError} before anything is buffered for it.
    @cvar receive_high_water: Once this many bytes are buffered and no read
        can consume them, reading from the transport is paused until reads
        bring the buffer under it again.
    @cvar idle_timeout: Seconds without receiving a byte after which the
        connection is closed, or C{None} (the default) for no limit.
    @cvar half_close: If true, the peer shutting its write side does not
        close the connection: reads that the buffer cannot satisfy raise
        L{EndOfStreamError} and writes still work. If false (the default),
        it closes the connection as usual.

    @ivar clock: The L{IReactorTime} used by L{sleep}, read timeouts and the
        idle timeout. Defaults to the global reactor; tests set a
        L{twisted.internet.task.Clock}.
    @ivar conversation: The L{Coroutine} running C{start()}, or C{None}
        before the connection is made. Wait on it, or pause or cancel it
        (see L{pause} to also stop reading from the socket).
    @ivar disconnect_reason: The L{Failure} passed to C{connectionLost}, or
        C{None} while connected.
    @ivar state: The L{ConnectionState}.
    """

    delimiter: bytes = b"\r\n"
    max_line_length: int = 16384
    max_frame_size: int = 16 * 1024 * 1024
    receive_high_water: int = 256 * 1024
    idle_timeout: float | None = None
    half_close: bool = False

    # The protocol's own state lives in slots, not in the instance dict
    # that Twisted's Protocol gives every subclass: CPython shares one key
    # table among a class's instance dicts only up to 30 keys, and past that
    # each instance gets a dict of its own (about 1.6 KB, a 5,000-connection
    # server's 8 MB). Out of the dict, these leave the keys to Protocol's
    # few and the subclass's own attributes.
    __slots__ = (
        "_batching",
        "_buffer",
        "_buffer_paused",
        "_clock",
        "_closed_waiters",
        "_direct",
        "_drains",
        "_head_read",
        "_idle_timer",
        "_last_received",
        "_more_reads",
        "_producer_registered",
        "_reading_paused",
        "_received",
        "_satisfying",
        "_tasks",
        "_user_paused",
        "_write_paused",
        "conversation",
        "disconnect_reason",
        "state",
    )

    conversation: Coroutine[Any] | None
    disconnect_reason: Failure | None
    state: ConnectionState

    _clock: interfaces.IReactorTime | None

    def __init__(self) -> None:
        """
        Make an unconnected protocol; the conversation starts in
        C{connectionMade}.
        """
        self.conversation = None
        self.disconnect_reason = None
        self.state = _NOT_CONNECTED
        self._clock = None
        self._buffer = ReceiveBuffer()
        # The queue of reads: its first, and a list of the others only
        # while there are others. Rarely more than one is queued (reads by
        # side tasks while the conversation waits), and an idle connection
        # has one: a list for it alone would cost 88 bytes (an empty deque
        # 768).
        self._head_read: _Read | None = None
        self._more_reads: list[_Read] | None = None
        # Counts dataReceived and readConnectionLost calls: see _Read.seen.
        self._received = 0
        self._satisfying = False
        # Made on first use: most connections never wait on drain() or
        # when_closed() or spawn a task, and each empty container costs an
        # idle connection 56 to 216 bytes.
        self._drains: list[Deferred[None]] | None = None
        self._write_paused = False
        self._user_paused = 0
        self._buffer_paused = False
        self._reading_paused = False
        self._tasks: set[Coroutine[Any]] | None = None
        self._closed_waiters: list[Deferred[None]] | None = None
        self._idle_timer: IDelayedCall | None = None
        self._last_received = 0.0
        self._producer_registered = False
        # The transport if it is a plain TCP connection we write into
        # directly (_DIRECT_TYPES), and whether a batch is being collected.
        self._direct: Any = None
        self._batching = False

    # -- configuration ------------------------------------------------------

    @property
    def clock(self) -> interfaces.IReactorTime:
        """
        The clock for timers: the reactor unless set (tests set a C{Clock}).
        """
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    @clock.setter
    def clock(self, clock: interfaces.IReactorTime) -> None:
        self._clock = clock

    # -- the handler --------------------------------------------------------

    def start(
        self,
    ) -> Generator[Any, Any, Any] | _AsyncBody[Any, Any, Any] | Deferred[Any]:
        """
        The initial state of the conversation; override it.

        Write it as a generator (C{yield} Deferreds) or an C{async def}
        (C{await} them), or return a L{Coroutine}. When it ends, the
        connection is closed after queued writes are flushed.

        @return: The body to run.
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} must define start(), the first state "
            f"of the conversation"
        )

    # -- Twisted's protocol hooks -------------------------------------------

    def connectionMade(self) -> None:
        """
        Register as the transport's producer, start the idle timer, and run
        C{start()} as the L{conversation}.
        """
        self.state = _CONNECTED
        transport = self.transport
        assert transport is not None
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._producer_registered = True
        if (
            type(transport) in _DIRECT_TYPES
            and isinstance(getattr(transport, "_tempDataBuffer", None), list)
            and all(hasattr(transport, name) for name in _DIRECT_NEEDS)
        ):
            self._direct = transport
        if self.idle_timeout is not None:
            self._last_received = self.clock.seconds()
            self._idle_timer = self.clock.callLater(self.idle_timeout, self._idle_check)
        try:
            body = self.start()
            conversation = body if isinstance(body, Coroutine) else None
            if conversation is None:
                if isinstance(body, Deferred):
                    conversation = Coroutine(_wait(body))
                else:
                    conversation = Coroutine(body)
        except Exception:
            self._log_crash(Failure(), "start()")
            self._close()
            return
        self.conversation = conversation
        # Called directly rather than as a callback: an idle connection then
        # keeps no callback entry (about 280 bytes) for it.
        if not conversation._wait_directly(self):
            conversation.addBoth(self._conversation_ended)
        if self.state is _CLOSED:
            # A synchronous transport delivered connectionLost while start()
            # ran, before there was a conversation to cancel.
            conversation.cancel()

    def dataReceived(self, data: bytes) -> None:
        """
        Buffer C{data} and satisfy the queued reads it completes, in order.

        On a plain TCP connection, what the handler writes meanwhile is
        collected and sent at the end, in one C{send()} when nothing is
        queued ahead of it (see "Writes" in the module docstring).

        @param data: The bytes the transport received.
        """
        direct = self._direct
        if (
            direct is not None
            and not self._batching
            and direct.connected
            and not direct._writeDisconnected
        ):
            # Neither flag can change until the batch is handed over (only
            # the reactor's doWrite() or connectionLost() set them), so
            # write() checks only TLS, which start_tls() may turn on
            # meanwhile.
            self._batching = True
        else:
            direct = None
        try:
            buffered = self._buffer.append(data)
            self._received += 1
            if self._idle_timer is not None:
                self._last_received = self.clock.seconds()
            high = self.receive_high_water
            if self._head_read is not None and not self._satisfying:
                self._satisfy()
                if buffered > high:
                    # The reads took some: what is left is what counts.
                    buffered = len(self._buffer)
            if buffered > high and not self._buffer_paused:
                self._check_buffer_pressure()
        finally:
            if direct is not None:
                self._batching = False
                if direct._tempDataLen:
                    # Now if first in this reactor turn, else at its end
                    # (see "Writes" in the module docstring).
                    turn = _TURN
                    reactor = turn.reactor
                    if reactor is None or not turn.call.active():
                        self._send_batch(direct)
                        if turn.waiting:
                            # Left by a turn whose call was cancelled from
                            # outside (trial's janitor cancels leftovers).
                            _end_turn()
                        # Scheduled even for a lone connection: measured,
                        # the poll that follows without blocking answers
                        # its next request sooner (bench/ab_echo.py).
                        reactor = turn.reactor = direct.reactor
                        turn.call = reactor.callLater(0, _end_turn)
                    elif reactor is direct.reactor:
                        turn.waiting.append(self)
                    else:
                        self._send_batch(direct)

    def readConnectionLost(self) -> None:
        """
        The peer shut its write side: fail reads that cannot be satisfied, or
        close, depending on L{half_close}.
        """
        if not self.half_close:
            self._close()
            return
        self.state = _PEER_CLOSED
        self._received += 1
        if self._head_read is not None and not self._satisfying:
            self._satisfy()

    def writeConnectionLost(self) -> None:
        """
        Our write side was shut; nothing to do (part of half-close).
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Record why, cancel the conversation and side tasks (cascading), and
        leave no timer or producer registration behind.

        Reads and L{drain}s that are still pending (issued by code other
        than the cancelled coroutines) fail with a copy of C{reason}'s
        exception.

        @param reason: Why the connection was lost.
        """
        self.state = _CLOSED
        self.disconnect_reason = reason
        timer = self._idle_timer
        if timer is not None:
            self._idle_timer = None
            if timer.active():
                timer.cancel()
        # Twisted's socket transports drop their producer before they call
        # us, and unregistering again is unsafe there: a TCP transport that
        # has started TLS forwards unregisterProducer() to a protocol it has
        # already deleted (AttributeError). Only a transport that still
        # names us as its producer (StringTransport, or a hand-made one
        # whose connectionLost is called by hand) is told.
        if self._producer_registered:
            self._producer_registered = False
            transport = self.transport
            if getattr(transport, "producer", None) is self:
                transport.unregisterProducer()  # type: ignore[union-attr]
        conversation = self.conversation
        if conversation is not None:
            conversation.cancel()
        for spawned in list(self._tasks or ()):
            spawned.cancel()
        # Reads and drains that no cancelled coroutine was waiting on: each
        # gets its own copy of the reason (see _closed_error).
        while self._head_read is not None:
            read = self._head_read
            read._remove()
            read.errback(self._closed_error())
        drains, self._drains = self._drains, None
        for d in drains or ():
            d.errback(self._closed_error())
        if conversation is None or conversation.called:
            self._fire_closed()

    # -- IPushProducer: the transport tells us its send buffer is full -------

    def pauseProducing(self) -> None:
        """
        The transport's send buffer is full: L{drain} will wait.
        """
        self._write_paused = True

    def resumeProducing(self) -> None:
        """
        The transport's send buffer has drained: fire waiting L{drain}s.

        A drain's waiter may write enough to fill the buffer again, in which
        case the transport pauses us at once and later drains keep waiting.
        """
        self._write_paused = False
        drains = self._drains
        while drains and not self._write_paused:
            drains.pop(0).callback(None)

    def stopProducing(self) -> None:
        """
        The transport is going away; C{connectionLost} does the clean-up.
        """

    # -- reads ----------------------------------------------------------------

    def read_line(self, timeout: float | None = None) -> Deferred[bytes]:
        """
        Read the next line, without its delimiter.

        @param timeout: Seconds to wait, or C{None} for no limit. A read the
            buffer satisfies at once schedules no timer.
        @return: A Deferred firing with the line. Cancelling it (or its
            timing out) removes the read and its timer; nothing is consumed
            from the buffer, and the bytes go to the next read.
        @raise LineTooLongError: (as the Deferred's failure) If more than
            C{max_line_length} bytes arrive without the delimiter.
        @raise twisted.internet.defer.TimeoutError: (as the failure) If no
            full line arrives within C{timeout}.
        @raise EndOfStreamError: (as the failure) If the peer half-closed
            before a full line arrived (only with L{half_close}).
        """
        buffer = self._buffer
        lines = buffer._lines
        if (
            lines
            and self._head_read is None
            and buffer._delimiter == self.delimiter
            and not Deferred.debug
        ):
            # The hottest path: a pipelining peer's next line, already split
            # (ReceiveBuffer.take_until's first case, inlined), handed over
            # in a Deferred made as _fired makes it. The receive pause is
            # not checked here: the search that splits the next window
            # checks it, so it lifts at most one window's bytes late.
            line = lines.pop()
            length = len(line)
            if length <= self.max_line_length:
                buffer._start += length + len(buffer._delimiter)
                d: Deferred[bytes] = _new_deferred(FiredDeferred)
                d.result = line
                return d
            # Over the limit: drop the list; the search below raises.
            buffer._lines = None
        if self._head_read is not None:
            return self._queue(
                _UNTIL,
                self.max_line_length,
                self.delimiter,
                "max_line_length",
                timeout,
                False,
            )
        if buffer._data:
            # The hot path, flattened: nothing queued ahead, a line buffered.
            try:
                data = buffer.take_until(self.delimiter, self.max_line_length)
            except ProtocolError as e:
                return fail(e)
            if data is not None:
                if self._buffer_paused:
                    self._check_buffer_pressure()
                return _fired(data)
        # The buffer cannot satisfy it (an empty buffer is not even
        # searched): wait. _queue, inlined: with one request per chunk, this
        # runs once per message.
        if self.state is not _CONNECTED:
            return fail(self._not_readable(_UNTIL, self.max_line_length))
        read = _Read(
            _UNTIL,
            self.max_line_length,
            self.delimiter,
            "max_line_length",
            self._received,
            self,
        )
        # Nothing was queued (checked above): it is the first.
        self._head_read = read
        if timeout is not None:
            read.timer = self.clock.callLater(
                timeout, self._read_timed_out, read, timeout
            )
        if self._buffer_paused:
            # A read that needs more than is buffered may lift the pause.
            self._check_buffer_pressure()
        return read

    def read_until(
        self,
        separator: bytes,
        max_length: int | None = None,
        timeout: float | None = None,
    ) -> Deferred[bytes]:
        """
        Read up to the next C{separator}, which is consumed but not returned.

        @param separator: The bytes to look for (not empty).
        @param max_length: The most bytes allowed before the separator;
            defaults to C{max_line_length}.
        @param timeout: Seconds to wait, or C{None} for no limit.
        @return: A Deferred firing with the bytes before the separator.
            Cancelling it removes the read and its timer; nothing is
            consumed.
        @raise LineTooLongError: (as the failure) If C{max_length} is
            exceeded; its C{limit_name} is C{"max_length"}.
        @raise twisted.internet.defer.TimeoutError: (as the failure) If the
            separator does not arrive within C{timeout}.
        @raise EndOfStreamError: (as the failure) If the peer half-closed
            before the separator arrived (only with L{half_close}).
        @raise ValueError: At once, if C{separator} is empty or C{max_length}
            is negative.
        """
        if not separator:
            raise ValueError("read_until() needs a non-empty separator")
        if max_length is None:
            max_length = self.max_line_length
        elif max_length < 0:
            raise ValueError(f"read_until() needs max_length >= 0, not {max_length}")
        return self._read(_UNTIL, max_length, separator, "max_length", timeout)

    def read_exactly(self, n: int, timeout: float | None = None) -> Deferred[bytes]:
        """
        Read exactly C{n} bytes.

        @param n: How many bytes; at most C{max_frame_size}.
        @param timeout: Seconds to wait, or C{None} for no limit.
        @return: A Deferred firing with C{n} bytes. Cancelling it removes the
            read and its timer; nothing is consumed.
        @raise FrameTooLongError: (as the failure) If C{n} exceeds
            C{max_frame_size}; nothing is buffered for it.
        @raise twisted.internet.defer.TimeoutError: (as the failure) If the
            C{n} bytes do not arrive within C{timeout}.
        @raise EndOfStreamError: (as the failure) If the peer half-closed
            first (only with L{half_close}); C{partial} holds what arrived.
        @raise ValueError: At once, if C{n} is negative.
        """
        if n < 0:
            raise ValueError(f"read_exactly() needs a count >= 0, not {n}")
        if n > self.max_frame_size:
            return fail(FrameTooLongError(self.max_frame_size, n))
        if self._head_read is None:
            # The hot path, flattened as in read_line: nothing queued ahead,
            # the bytes buffered (every counted read of a pipelined framing).
            data = self._buffer.take_exactly(n)
            if data is not None:
                if self._buffer_paused:
                    self._check_buffer_pressure()
                return _fired(data)
            # _queue, inlined as in read_line: a server waiting for the
            # first byte of each request runs this once per request.
            if self.state is not _CONNECTED:
                return fail(self._not_readable(_EXACTLY, n))
            read = _Read(_EXACTLY, n, b"", "max_frame_size", self._received, self)
            self._head_read = read
            if timeout is not None:
                read.timer = self.clock.callLater(
                    timeout, self._read_timed_out, read, timeout
                )
            if self._buffer_paused:
                self._check_buffer_pressure()
            return read
        return self._queue(_EXACTLY, n, b"", "max_frame_size", timeout, False)

    def read_some(
        self, max_bytes: int = 65536, timeout: float | None = None
    ) -> Deferred[bytes]:
        """
        Read whatever is buffered (at most C{max_bytes}), or the next chunk.

        @param max_bytes: The most bytes to return (at least 1).
        @param timeout: Seconds to wait, or C{None} for no limit.
        @return: A Deferred firing with 1 to C{max_bytes} bytes. Cancelling
            it removes the read and its timer.
        @raise twisted.internet.defer.TimeoutError: (as the failure) If
            nothing arrives within C{timeout}.
        @raise EndOfStreamError: (as the failure) If the peer half-closed and
            nothing is buffered (only with L{half_close}).
        @raise ValueError: At once, if C{max_bytes} is below 1.
        """
        if max_bytes < 1:
            raise ValueError(f"read_some() needs max_bytes >= 1, not {max_bytes}")
        return self._read(_SOME, max_bytes, b"", "max_bytes", timeout)

    def peek(self, n: int) -> bytes:
        """
        Look at up to the next C{n} buffered bytes without consuming them.

        This is for framings that decide how to read from what comes next
        (a type byte, a length prefix) and for reading a whole message in
        one counted read once its size is known. It never waits and never
        consumes: the bytes stay buffered for the next read.

        @param n: The most bytes to return; must be at least 0.
        @return: The first C{min(n, buffered)} bytes a read issued now would
            receive: C{b""} if nothing is buffered, or if other reads are
            queued (those will take the buffered bytes first, so what
            follows them is not known yet). A copy, never more than C{n}
            bytes, however much is buffered.
        @raise ValueError: If C{n} is negative.
        """
        if n < 0:
            raise ValueError(f"peek() needs a count >= 0, not {n}")
        if self._head_read is not None:
            return b""
        return self._buffer.peek(n)

    def take_scanned(
        self,
        scan: Callable[[bytes | bytearray, int, int], tuple[_T, int] | None],
        limit: int,
    ) -> _T | None:
        """
        Parse a whole message in place from the buffered bytes and consume
        it, if it is all there; never wait.

        This is the fast path for framings whose messages usually arrive
        whole (a pipelining peer): one call parses and consumes a message,
        with no Deferred and no copy of the buffer, and the framing falls
        back to ordinary reads when it returns C{None}.

        C{scan(data, start, stop)} is called with the buffer's own storage
        (C{bytes} or C{bytearray}, not a copy), the index of the first
        unread byte and C{stop}, at most C{start + limit}. It must look
        only at C{data[start:stop]}, must not modify C{data}, and must not
        keep C{data} or a view of it past the call. It returns
        C{(value, end)} to consume C{data[start:end]} and have
        C{take_scanned} return C{value} (which must not be C{None}), or
        C{None} to consume nothing: the message is not complete within
        C{stop}, or is of a form the scan leaves to the ordinary reads
        (errors among them, so that their wording lives in one place).

        C{limit} bounds the work of each call and the message size the fast
        path handles; the buffer's memory bounds are those of the reads,
        since nothing is kept for a scan that returns C{None}. A scan costs
        at most C{limit} bytes of looking per call: a framing that falls
        back to reads after a C{None} looks at each byte at most once more
        than its reads do.

        @param scan: The parser, as above.
        @param limit: The most bytes C{scan} may look at; at least 0.
        @return: The scan's C{value}, or C{None} if it returned C{None},
            nothing is buffered, or other reads are queued (the buffered
            bytes are theirs); nothing is consumed then.
        @raise ValueError: If C{limit} is negative, or the scan's C{end} is
            outside C{[start, stop]}; nothing is consumed.
        @raise Exception: Whatever C{scan} raises; nothing is consumed.
        """
        if self._head_read is not None:
            return None
        value = self._buffer.take_scanned(scan, limit)
        if value is not None and self._buffer_paused:
            self._check_buffer_pressure()
        return value

    def take_prefixed(self, size: int, max_length: int) -> bytes | None:
        """
        Take a whole length-prefixed message if it is buffered; never wait.

        The message is an unsigned big-endian length of C{size} bytes, then
        that many bytes (what Twisted's C{IntNStringReceiver} classes send).
        This is the fast path of L{read_frame
        <txstateproto.protocols.prefixed.read_frame>} for a pipelining peer:
        one call, no Deferred, no scan callback. Anything it does not take
        (not all buffered, or announcing more than C{max_length}) is left
        for counted reads, which wait for the rest or report the error.

        @param size: The prefix's size in bytes: 1, 2, 4 or 8.
        @param max_length: The longest body taken, in bytes.
        @return: The body, or C{None}: not all buffered, over C{max_length},
            or other reads are queued (the buffered bytes are theirs);
            nothing is consumed then.
        @raise ValueError: If C{size} is not 1, 2, 4 or 8.
        """
        if self._head_read is not None:
            if size not in (1, 2, 4, 8):
                raise ValueError(f"size must be 1, 2, 4 or 8, not {size!r}")
            return None
        value = self._buffer.take_prefixed(size, max_length)
        if value is not None and self._buffer_paused:
            self._check_buffer_pressure()
        return value

    def read_scanned(
        self,
        scan: Callable[[bytes | bytearray, int, int], tuple[_T, int] | None],
        limit: int,
        timeout: float | None = None,
    ) -> Deferred[_T | None]:
        """
        Wait until at least one byte is buffered, then L{take_scanned} once:
        a read that parses whatever arrives in place.

        This is the waiting half of a framing's fast path: a server whose
        client sends a request and waits for the reply (one message per
        chunk) gets each chunk parsed by C{scan} as it arrives, and resumes
        with the parsed value, with no counted read of a first byte and no
        second call to take the rest. When the scan takes nothing (the
        message is incomplete, or of a form the scan leaves to the ordinary
        reads), the Deferred fires with C{None}, nothing is consumed, and
        the caller must read the message its slower way (another
        C{read_scanned} would fire with C{None} again at once)::

            while True:
                commands = yield self.read_scanned(scan_whole_commands, 65536)
                if commands is None:
                    commands = [(yield read_command_slowly(self))]

        If bytes are buffered (and no other read is queued) the scan runs at
        once and the Deferred has already fired. C{scan} and C{limit} are as
        for L{take_scanned}; the scan runs when the read reaches the front
        of the queue and a byte is buffered, exactly once.

        @param scan: The parser, as for L{take_scanned}.
        @param limit: The most bytes C{scan} may look at; at least 0.
        @param timeout: Seconds to wait for the first byte, or C{None} for no
            limit.
        @return: A Deferred firing with the scan's value, or with C{None} if
            it took nothing. Cancelling it removes the read and its timer;
            nothing is consumed.
        @raise twisted.internet.defer.TimeoutError: (as the failure) If no
            byte arrives within C{timeout}.
        @raise EndOfStreamError: (as the failure) If the peer half-closed and
            nothing is buffered (only with L{half_close}).
        @raise ValueError: At once, if C{limit} is negative; as the failure,
            if the scan's C{end} is outside C{[start, stop]}.
        @raise Exception: (as the failure) Whatever C{scan} raises; nothing
            is consumed.
        """
        if limit < 0:
            raise ValueError(f"read_scanned() needs a limit >= 0, not {limit}")
        buffer = self._buffer
        if self._head_read is None:
            if buffer._start < len(buffer._data):
                try:
                    value = buffer.take_scanned(scan, limit)
                except Exception as e:
                    return fail(e)
                if value is not None and self._buffer_paused:
                    self._check_buffer_pressure()
                return _fired(value)
            # Nothing buffered: the buffer was tried.
            queued = self._queue(_SCAN, limit, b"", "limit", timeout, True)
        else:
            queued = self._queue(_SCAN, limit, b"", "limit", timeout, False)
        if type(queued) is _Read:
            queued.scan = scan
        return queued  # type: ignore[return-value]

    def _read(
        self,
        kind: _Kind,
        size: int,
        delimiter: bytes,
        limit_name: str,
        timeout: float | None,
    ) -> Deferred[bytes]:
        """
        Satisfy a read from the buffer at once, or queue it.
        """
        if self._head_read is not None:
            return self._queue(kind, size, delimiter, limit_name, timeout, False)
        # Nothing queued ahead of us: try the buffer.
        try:
            data = self._take(kind, size, delimiter, limit_name)
        except ProtocolError as e:
            return fail(e)
        if data is not None:
            if self._buffer_paused:
                self._check_buffer_pressure()
            return _fired(data)
        return self._queue(kind, size, delimiter, limit_name, timeout, True)

    def _queue(
        self,
        kind: _Kind,
        size: int,
        delimiter: bytes,
        limit_name: str,
        timeout: float | None,
        tried: bool,
    ) -> Deferred[bytes]:
        """
        Queue a read the buffer cannot satisfy now (C{tried}: it just failed
        to), or fail it if no more bytes can arrive.
        """
        if tried and self.state is not _CONNECTED:
            return fail(self._not_readable(kind, size))
        read = _Read(
            kind, size, delimiter, limit_name, self._received if tried else -1, self
        )
        if self._head_read is None:
            self._head_read = read
        else:
            self._enqueue(read)
        if timeout is not None:
            read.timer = self.clock.callLater(
                timeout, self._read_timed_out, read, timeout
            )
        if self._buffer_paused:
            # A read that needs more than is buffered may lift the pause.
            self._check_buffer_pressure()
        return read

    def _enqueue(self, read: _Read) -> None:
        """
        Queue C{read} behind the first queued read.
        """
        more = self._more_reads
        if more is None:
            self._more_reads = [read]
        else:
            more.append(read)

    def _unqueue_head(self) -> None:
        """
        Drop the first queued read; the next, if any, becomes the first.
        """
        more = self._more_reads
        if more:
            self._head_read = more.pop(0)
            if not more:
                self._more_reads = None
        else:
            self._head_read = None
            self._more_reads = None

    def _unqueue(self, read: _Read) -> None:
        """
        Drop C{read}, wherever it is in the queue.
        """
        if self._head_read is read:
            self._unqueue_head()
            return
        more = self._more_reads
        assert more is not None
        more.remove(read)
        if not more:
            self._more_reads = None

    def _take(
        self, kind: _Kind, size: int, delimiter: bytes, limit_name: str
    ) -> bytes | None:
        """
        Take what a read wants from the buffer, or None if not there yet.
        """
        buffer = self._buffer
        if kind is _UNTIL:
            return buffer.take_until(delimiter, size, limit_name)
        if kind is _EXACTLY:
            return buffer.take_exactly(size)
        return buffer.take_some(size)

    def _not_readable(self, kind: _Kind, size: int) -> Exception:
        """
        The error for a read that can never be satisfied: end of stream, or
        the connection is gone.
        """
        if self.state is _PEER_CLOSED:
            if kind is _EXACTLY:
                expected: int | None = size
            elif kind is _SOME:
                expected = 1
            else:
                expected = None
            return EndOfStreamError(self._buffer.take_all(), expected)
        return self._closed_error()

    def _closed_error(self) -> Exception:
        """
        A new exception saying why the connection is not open.

        A copy of C{disconnect_reason}'s exception, never the instance
        itself: raised in a handler, an exception takes a traceback that
        reaches the handler's frames and so this protocol, and the protocol
        holding it through C{disconnect_reason} would make a cycle (or, for
        Twisted's shared C{connectionDone}, keep the protocol alive for
        good).
        """
        reason = self.disconnect_reason
        if reason is not None and isinstance(reason.value, Exception):
            value = reason.value
            try:
                error = copy.copy(value)
            except Exception:
                error = ConnectionDone(str(value))
            else:
                error.__traceback__ = None
                error.__context__ = None
                error.__cause__ = None
            return error
        return ConnectionDone("the connection is not open")

    def _satisfy(self) -> None:
        """
        Fire queued reads, in order, while the buffer satisfies the first.
        """
        self._satisfying = True
        try:
            while True:
                read = self._head_read
                if read is None:
                    break
                if read.seen == self._received:
                    # Issued by the handler we just resumed, and the buffer
                    # could not satisfy it then: nothing has changed since.
                    break
                try:
                    kind: _Kind | None = read.kind
                    if kind is _UNTIL:
                        # _take's first case, inlined: a line read.
                        data = self._buffer.take_until(
                            read.delimiter, read.size, read.limit_name
                        )
                    elif kind is _EXACTLY:
                        # And its second: a counted read (a frame, or a
                        # server's wait for a request's first byte).
                        data = self._buffer.take_exactly(read.size)
                    elif kind is _SCAN:
                        buffer = self._buffer
                        if buffer._start < len(buffer._data):
                            data = buffer.take_scanned(read.scan, read.size)
                            if data is None:
                                # The scan took nothing: that is its answer.
                                kind = None
                        else:
                            data = None
                    else:
                        data = self._take(
                            read.kind, read.size, read.delimiter, read.limit_name
                        )
                except Exception as e:
                    if kind is not _SCAN and not isinstance(e, ProtocolError):
                        raise
                    read._remove()
                    read.errback(e)
                    continue
                if data is None and kind is not None:
                    if self.state is _PEER_CLOSED:
                        read._remove()
                        read.errback(self._not_readable(read.kind, read.size))
                        continue
                    break
                # read._remove(), inlined: it is the head of the queue.
                read._owner = None
                if self._more_reads is None:
                    self._head_read = None
                else:
                    self._unqueue_head()
                timer = read.timer
                if timer is not None:
                    read.timer = None
                    if timer.active():
                        timer.cancel()
                # Resumes the handler, which may read again at once (from
                # the buffer) or queue another read, picked up by this loop.
                waiter = read._waiter
                if waiter is None or read._chain or read.paused or read.called:
                    read.callback(data)
                else:
                    # DirectDeferred.callback's common case, inlined: the
                    # handler waits on this read directly.
                    read._waiter = None
                    read.called = True
                    read.result = data
                    waiter._on_fired(data, read)
        finally:
            self._satisfying = False
        if self._buffer_paused:
            self._check_buffer_pressure()

    def _read_timed_out(self, read: _Read, timeout: float) -> None:
        """
        Fail a read that waited too long.
        """
        was_head = self._head_read is read
        read.timer = None
        read._remove()
        read.errback(defer.TimeoutError(f"read timed out after {timeout} seconds"))
        if was_head:
            self._head_removed()

    def _head_removed(self) -> None:
        """
        The first queued read left without taking anything: let the reads
        behind it try what is buffered now, rather than wait for more bytes.
        """
        if self._head_read is not None and not self._satisfying:
            self._satisfy()

    # -- back-pressure on the receive side ------------------------------------

    def _check_buffer_pressure(self) -> None:
        """
        Pause reading while too much is buffered for the reads in hand.
        """
        needed = self.receive_high_water
        head = self._head_read
        if head is not None:
            if head.kind is _EXACTLY:
                needed = max(needed, head.size)
            elif head.kind is _UNTIL:
                needed = max(needed, head.size + len(head.delimiter))
        full = len(self._buffer) > needed
        if full != self._buffer_paused:
            self._buffer_paused = full
            self._apply_reading_pause()

    def _apply_reading_pause(self) -> None:
        """
        Pause or resume reading from the transport to match our reasons.
        """
        should_pause = bool(self._user_paused) or self._buffer_paused
        if should_pause == self._reading_paused:
            return
        if self.state is _CLOSED or self.transport is None:
            return
        self._reading_paused = should_pause
        if should_pause:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        else:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    # -- writes ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Queue C{data} for sending. Writes after the connection is lost are
        dropped, as Twisted's transports do.

        On a plain TCP connection, what is written while a received chunk is
        handled is sent in one C{send()} when that chunk's handling ends,
        without waiting for the next reactor turn; elsewhere (and for writes
        made at other times) C{transport.write()} is used. Either way the
        order of all writes, C{self.transport}'s included, is kept.

        @param data: The bytes to send.
        @raise TypeError: If C{data} is not C{bytes}.
        """
        if self._batching:
            direct = self._direct
            if type(data) is bytes and not direct.TLS:
                # What FileDescriptor.write does, less its per-call checks,
                # producer test and writer registration, which _send_batch
                # does once for the whole chunk.
                if data:
                    direct._tempDataBuffer.append(data)
                    size = direct._tempDataLen + len(data)
                    direct._tempDataLen = size
                    if size > _BATCH_MAX:
                        self._send_batch(direct)
                return
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def write_line(self, line: bytes) -> None:
        """
        Queue C{line} followed by L{delimiter}, sent as L{write} sends.

        @param line: The line, without its delimiter.
        @raise TypeError: If C{line} is not C{bytes}.
        """
        if self._batching:
            # write()'s direct path, inlined: this is every reply's path.
            direct = self._direct
            if type(line) is bytes and not direct.TLS and len(line) < _CONCAT_MAX:
                data = line + self.delimiter
                direct._tempDataBuffer.append(data)
                size = direct._tempDataLen + len(data)
                direct._tempDataLen = size
                if size > _BATCH_MAX:
                    self._send_batch(direct)
                return
        transport = self.transport
        if transport is not None:
            if len(line) < _CONCAT_MAX:
                # One write of a concatenation costs a fraction of
                # writeSequence's per-piece checks and loops.
                transport.write(line + self.delimiter)
            else:
                # Long lines: avoid copying them only to add a delimiter.
                transport.writeSequence((line, self.delimiter))

    def drain(self) -> Deferred[None]:
        """
        Wait until the transport's send buffer is below its low-water mark.

        Use it between large writes so that a slow reader on the other end
        throttles the handler instead of growing our memory::

            for chunk in chunks:
                self.write(chunk)
                yield self.drain()

        @return: A Deferred firing with C{None} at once if the transport is
            accepting writes, otherwise when it is. Cancelling it is safe.
        @raise twisted.internet.error.ConnectionDone: (or whatever the
            connection was lost with, as the failure) If the connection is
            gone, since queued bytes can no longer be sent.
        """
        if self.state is _CLOSED:
            return fail(self._closed_error())
        if self._batching:
            direct = self._direct
            collected = direct._tempDataLen
            if (
                collected
                and collected + len(direct.dataBuffer) - direct.offset
                > direct.bufferSize
            ):
                # Past the transport's high-water mark, where its own
                # write() would pause us: hand the batch over, so that its
                # back-pressure decides the answer. Below it the answer is
                # the transport's current one, and the batch stays for the
                # end of the turn (sent with the others of the turn).
                self._send_batch(direct)
        if not self._write_paused:
            return _fired(None)
        # A bound method, not a closure over the list: the list would hold
        # the Deferred and the Deferred the list, a cycle per drain.
        d: Deferred[None] = Deferred(self._cancel_drain)
        if self._drains is None:
            self._drains = []
        self._drains.append(d)
        return d

    def _send_batch(self, direct: Any) -> None:
        """
        Hand what was written into a plain TCP transport's buffer to the
        transport: send it now if that is safe, else register for writing
        as C{FileDescriptor.write} would have.

        Sending now is the C{send()} that C{doWrite()} would make on the
        next reactor turn (through C{writeSomeData()}), made on the
        transport's socket directly: one system call and no Python frame of
        Twisted's. If it took everything, nothing is left to do: no writer
        registration, no reactor turn. Otherwise (a partial send, C{EAGAIN},
        or an error: any C{OSError} counts as nothing sent) the rest is left
        exactly as C{doWrite()} leaves a partial send (in C{dataBuffer} from
        C{offset}) and the writer is registered, so the reactor sends it
        when the socket is writable, or its own C{doWrite()} meets the error
        again and reports it, as it would have.

        It is done only when nothing is queued ahead from an earlier turn,
        TLS is off, the connection is not closing (not even its write side),
        and we are the transport's unpaused streaming producer: the cases in
        which C{doWrite()}, having sent everything, would only have called
        C{stopWriting()} on a writer that was never registered.
        """
        if (
            not direct.TLS
            and direct.connected
            and not direct.disconnecting
            and not direct._writeDisconnecting
            and not direct._writeDisconnected
            and not direct._aborting
            and direct.producer is self
            and not direct.producerPaused
            and len(direct.dataBuffer) == direct.offset
        ):
            pieces = direct._tempDataBuffer
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            try:
                sent = direct.socket.send(data)
            except OSError:
                # EAGAIN, ENOBUFS, or an error that the reactor's doWrite()
                # will meet again and report.
                sent = 0
            if sent == len(data):
                pieces.clear()
                direct._tempDataLen = 0
                return
            # What doWrite() leaves after a partial send (or none).
            direct.dataBuffer = data
            direct.offset = sent
            direct._tempDataBuffer = []
            direct._tempDataLen = 0
        direct._maybePauseProducer()
        direct.startWriting()

    def _cancel_drain(self, d: Deferred[None]) -> None:
        """
        Forget a cancelled L{drain}.
        """
        drains = self._drains
        if drains and d in drains:
            drains.remove(d)

    # -- time, side tasks, pause ----------------------------------------------

    def sleep(self, seconds: float) -> Deferred[None]:
        """
        Wait C{seconds} on L{clock}.

        @param seconds: How long to wait.
        @return: A Deferred firing with C{None}; cancelling it cancels the
            timer, so a cancelled conversation leaves no DelayedCall behind.
        """
        return task.deferLater(self.clock, seconds, lambda: None)

    def spawn(
        self,
        body: Generator[Any, Any, Any] | _AsyncBody[Any, Any, Any] | Coroutine[Any],
    ) -> Coroutine[Any]:
        """
        Run a side task tied to this connection (a heartbeat, a second reader).

        It is cancelled, cascading, when the connection is lost or the main
        conversation ends, or at once if the connection is already closed.
        If it fails (other than by that cancel or by the lost connection),
        the failure is logged like a crash of the conversation and the
        connection is closed.

        Waiting on the returned Coroutine gives the task's result. Its
        failures are consumed by the protocol (logged or expected), so a
        waiter sees C{None} if the task failed or was cancelled.

        @param body: A generator or coroutine object, or a L{Coroutine}.
        @return: The side task's L{Coroutine}; cancelling it cancels the task
            alone, silently.
        """
        spawned = body if isinstance(body, Coroutine) else Coroutine(body)
        if spawned.called:
            spawned.addErrback(self._task_failed, spawned)
            return spawned
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(spawned)
        spawned.addBoth(self._task_ended, spawned)
        if self.state is _CLOSED:
            spawned.cancel()
        return spawned

    def pause(self) -> None:
        """
        Pause the conversation and stop reading from the transport, so TCP
        flow control pushes back on the peer.

        Cascades into whatever the conversation waits on (see
        L{Coroutine.pause}); a result that arrives meanwhile is held. Each
        call needs a matching L{unpause}. Reading stays paused as long as
        either this or the receive buffer's high-water mark asks for it,
        and the transport is told only when that changes. Losing the
        connection cancels the conversation even while paused.
        """
        self._user_paused += 1
        if self.conversation is not None:
            self.conversation.pause()
        self._apply_reading_pause()

    def unpause(self) -> None:
        """
        Undo one L{pause}; on the last, resume reading and the conversation.
        """
        if not self._user_paused:
            return
        self._user_paused -= 1
        self._apply_reading_pause()
        if self.conversation is not None:
            self.conversation.unpause()

    def when_closed(self) -> Deferred[None]:
        """
        Wait until the connection is closed and the conversation has ended
        (its clean-up included).

        @return: A Deferred firing with C{None}; at once if that has already
            happened. Cancelling it only ends this wait.
        """
        d: Deferred[None] = Deferred()
        if self.state is _CLOSED and (
            self.conversation is None or self.conversation.called
        ):
            d.callback(None)
        else:
            if self._closed_waiters is None:
                self._closed_waiters = []
            self._closed_waiters.append(d)
        return d

    # -- endings ----------------------------------------------------------------

    def _conversation_ended(self, result: object) -> object:
        """
        The conversation is over: log a failure, end side tasks, close.

        Successful results pass through to callbacks added later; failures
        are consumed here, having been logged (or being the expected cancel
        of a lost connection).
        """
        if isinstance(result, Failure):
            if self._lost_connection_ended(result):
                pass
            elif result.check(ProtocolError, defer.TimeoutError):
                # The peer sent something we cannot accept, or not soon
                # enough: worth a line in the log, not a traceback.
                _log.warn(
                    "{protocol} closing connection with {peer}: {error}",
                    protocol=type(self).__qualname__,
                    peer=self._peer(),
                    error=result.getErrorMessage(),
                    error_type=result.type,
                )
            elif not result.check(CancelledError):
                self._log_crash(result, "conversation")
            _release(result)
        for spawned in list(self._tasks or ()):
            spawned.cancel()
        self._close()
        if self.state is _CLOSED:
            self._fire_closed()
        return None if isinstance(result, Failure) else result

    def _on_fired(self, result: object, d: Deferred[Any]) -> object:
        """
        The conversation ended (called by it directly: see L{DirectDeferred}).
        """
        return self._conversation_ended(result)

    def _lost_connection_ended(self, failure: Failure) -> bool:
        """
        Say whether a coroutine's failure is the expected result of the
        connection being lost: the cancel that C{connectionLost} delivered,
        or the loss itself, raised by a read or drain in clean-up code.
        """
        if self.state is not _CLOSED:
            return False
        if failure.check(CancelledError):
            return True
        reason = self.disconnect_reason
        return reason is not None and failure.check(reason.type) is not None

    def _task_ended(self, result: object, spawned: Coroutine[Any]) -> object:
        """
        A side task ended: forget it, and close on an unexpected failure.

        A result passes on to callbacks added later; a failure is consumed.
        """
        if self._tasks is not None:
            self._tasks.discard(spawned)
        if isinstance(result, Failure):
            self._task_failed(result, spawned)
            return None
        return result

    def _task_failed(self, failure: Failure, spawned: Coroutine[Any]) -> None:
        """
        Log a side task's failure (unless it is the expected end of a lost
        connection or a cancel) and close the connection.
        """
        if not failure.check(CancelledError) and not self._lost_connection_ended(
            failure
        ):
            self._log_crash(failure, f"side task {spawned!r}")
            self._close()
        _release(failure)

    def _log_crash(self, failure: Failure, what: str) -> None:
        """
        Log an unexpected failure once, with the protocol and the peer.
        """
        _log.failure(
            "{protocol} {what} with {peer} failed",
            failure=failure,
            protocol=type(self).__qualname__,
            what=what,
            peer=self._peer(),
        )
        _release(failure)

    def _close(self) -> None:
        """
        Close the connection after queued writes are flushed.
        """
        transport = self.transport
        if transport is None or self.state is _CLOSED:
            return
        if self._producer_registered:
            # A transport with a registered producer waits for it to be
            # unregistered before it closes.
            self._producer_registered = False
            transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()

    def _fire_closed(self) -> None:
        """
        Fire L{when_closed} waiters.
        """
        waiters, self._closed_waiters = self._closed_waiters, None
        for d in waiters or ():
            d.callback(None)

    def _idle_check(self) -> None:
        """
        Close the connection if nothing arrived for C{idle_timeout} seconds.
        """
        timeout = self.idle_timeout
        if timeout is None or self.state is _CLOSED:
            self._idle_timer = None
            return
        elapsed = self.clock.seconds() - self._last_received
        if elapsed >= timeout:
            self._idle_timer = None
            _log.info(
                "{protocol} closing connection with {peer}: idle for {timeout} s",
                protocol=type(self).__qualname__,
                peer=self._peer(),
                timeout=timeout,
            )
            self._close()
            return
        # Bytes arrived meanwhile: sleep the remainder instead of resetting
        # the timer on every chunk, which is the hot path.
        self._idle_timer = self.clock.callLater(timeout - elapsed, self._idle_check)

    def _peer(self) -> object:
        """
        The peer's address for logs, or a placeholder.
        """
        transport = self.transport
        if transport is None:
            return "<no transport>"
        try:
            return transport.getPeer()
        except Exception:
            return "<unknown peer>"

    def __repr__(self) -> str:
        """
        Name the class, the peer, the state, buffered bytes and the
        conversation.
        """
        peer = self._peer() if self.transport is not None else None
        return (
            f"<{type(self).__qualname__} peer={peer} state={self.state.value} "
            f"buffered={len(self._buffer)} conversation={self.conversation!r}>"
        )


_new_deferred = Deferred.__new__


class _Turn:
    """
    The batches left for the end of the reactor turn: see "Writes" in the
    module docstring.

    @ivar reactor: The reactor whose turn it is, from the first batch sent
        in it until L{_end_turn} runs; C{None} between turns.
    @ivar call: The reactor's call of L{_end_turn} for that turn.
    @ivar waiting: The protocols whose batches wait, in arrival order.
    """

    __slots__ = ("call", "reactor", "waiting")

    def __init__(self) -> None:
        self.reactor: Any = None
        self.call: Any = None
        self.waiting: list[StateProtocol] = []


_TURN = _Turn()


def _end_turn() -> None:
    """
    Send the batches left for the end of this reactor turn, in the order
    they were made. A connection lost meanwhile is skipped (its bytes go
    nowhere, as with any transport); anything else that changed since (the
    connection closing, TLS started, a pause) is for L{_send_batch}'s own
    checks, which fall back to the transport's ordinary write path. One
    batch's unexpected error is logged and does not keep the others back.
    """
    turn = _TURN
    waiting = turn.waiting
    turn.waiting = []
    turn.reactor = None
    for proto in waiting:
        direct = proto._direct
        if direct is not None and direct.connected and direct._tempDataLen:
            try:
                proto._send_batch(direct)
            except Exception:
                _log.failure("sending {protocol!r}'s replies", protocol=proto)


def _fired(data: _T) -> Deferred[_T]:
    """
    L{succeed} without a call of C{Deferred.__init__}: a read the buffer
    satisfies returns one of these per message, and L{drain} one per call
    when the transport takes more, which makes its cost a measurable share
    of a pipelined line's. A L{FiredDeferred}: one store,
    no callback list unless something adds a callback.
    """
    if Deferred.debug:
        # Deferred debugging on: let __init__ record the creator's stack.
        return succeed(data)
    d: Deferred[_T] = _new_deferred(FiredDeferred)
    d.result = data
    return d


def _release(failure: Failure) -> None:
    """
    Drop a consumed failure's traceback (keeping its text for the log).

    An exception raised in a handler holds a traceback whose frames hold
    the handler's locals (C{self} among them) and the engine's, one of which
    holds the exception again: a cycle that would keep the protocol alive
    until the garbage collector ran. Twisted does the same for failures a
    Deferred keeps (L{Failure.cleanFailure}).
    """
    failure.cleanFailure()


def _wait(d: Deferred[Any]) -> Generator[Any, Any, Any]:
    """
    A body that waits for a Deferred that C{start()} returned.
    """
    return (yield d)
