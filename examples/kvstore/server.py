"""
L{KVStoreProtocol}: one Redis client connection, as a state machine.

This module owns the connection's states (serving commands, queuing a
C{MULTI} transaction), reply batching, C{QUIT} and protocol errors. It reads
commands with L{txstateproto.protocols.resp.read_command} and encodes
replies with L{txstateproto.protocols.resp.encode_reply}; what each command
does is in L{examples.kvstore.commands}, the data in L{examples.kvstore.store}.

Replies in batches
==================
A pipelining client (redis-benchmark C{-P 16}, a redis-py pipeline) sends
many commands in one TCP segment. The serving loop waits for input with
L{txstateproto.protocols.resp.wait_commands}: a bare read, resumed by the
engine without a callback chain, that takes every command wholly buffered
in one scan of the chunk as it arrives (no Deferred per command). It runs
them one after another, appending each encoded reply to a list, joins the
list and makes one transport write before it waits again. So a segment of
N commands costs one scan, one engine resume and one write, and the
client gets its replies in one segment. What the scan does not take (an
incomplete command, quoted lines, long arguments, errors) is read by
L{read_commands}, with L{read_command}'s exact rules and errors. A batch
holds at most L{KVStoreProtocol.max_pending_replies} commands, and after
each write the loop waits for L{StateProtocol.drain}: a client that sends
without reading its replies stops being read, instead of growing our
memory. Commands taken after C{MULTI}, C{EXEC} or C{DISCARD} in the same
batch are handed to the next state, in order.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from examples.kvstore.commands import (
    COMMANDS,
    OK,
    PONG,
    QUEUED,
    Command,
    CommandError,
    Session,
    arity_error,
    lookup,
    run,
    unknown_command,
)
from examples.kvstore.store import Store
from txstateproto import StateProtocol, noreturn
from txstateproto.protocols.resp import (
    ErrorReply,
    RESPProtocolError,
    encode_reply,
    read_command,
    read_commands,
    wait_commands,
)

__all__ = ["KVStoreProtocol"]

log = Logger()

#: The store of every connection that is not given another: one per process.
_SHARED_STORE = Store()

_OK_BYTES = b"+OK\r\n"
_PONG_BYTES = b"+PONG\r\n"

#: The null reply by RESP version.
_NULL = {2: b"$-1\r\n", 3: b"_\r\n"}


class KVStoreProtocol(StateProtocol):
    """
    A Redis-protocol server connection over an in-memory L{Store}.

    The handler has two states: L{serving} runs each command as it comes,
    and L{transaction} (entered by C{MULTI}) queues commands until C{EXEC}
    runs them or C{DISCARD} drops them; each hands over to the other with
    L{noreturn}. C{QUIT} replies C{+OK} and closes, dropping whatever was
    pipelined after it; input Redis rejects gets Redis's C{-ERR Protocol
    error: ...} and the connection is closed. Keys expire on L{clock}.

    Serve it with C{Factory.forProtocol(KVStoreProtocol)}, or with twistd::

        twistd -n stateproto --protocol examples.kvstore.KVStoreProtocol \\
            --listen tcp:6380

    @cvar store: The key space; by default one L{Store} shared by every
        connection in the process. Set it on a subclass or an instance to
        give connections another one.
    @cvar max_bulk_length: The longest argument accepted, in bytes (Redis's
        C{proto-max-bulk-len}).
    @cvar max_pending_replies: Replies kept for one write at most; when
        that many are waiting, they are written and the loop waits for the
        transport to accept more (L{drain}).
    @cvar max_queued_commands: The most commands one C{MULTI} may queue; a
        command past it is refused with an error and the transaction is
        aborted at C{EXEC}, so a client cannot grow our memory without
        bound.

    @ivar session: The connection's negotiated RESP version, name and id.
    """

    store: Store = _SHARED_STORE
    max_bulk_length: int = 512 * 1024 * 1024
    max_pending_replies: int = 1024
    max_queued_commands: int = 100_000

    def __init__(self) -> None:
        """
        Make a connection in RESP2, as every Redis connection starts.
        """
        super().__init__()
        self.session = Session()
        self._out: list[bytes] = []
        # Commands taken from the buffer by one state and left for the
        # next (those after MULTI, EXEC or DISCARD in one batch).
        self._taken: list[list[bytes]] = []

    #### The states

    def start(self) -> Generator[Any, Any, None]:
        """
        The first state: serve commands.
        """
        return self.serving()

    def serving(self) -> Generator[Any, Any, None]:
        """
        Run each command as it arrives, replying in batches (see the module
        docstring); C{MULTI} hands over to L{transaction}.

        Cancelled (the connection lost, or the server shutting down) while
        waiting for a command: the cancel propagates and nothing is written.
        """
        store = self.store
        session = self.session
        out = self._out
        table = COMMANDS
        clock = self.clock
        limit = self.max_pending_replies
        max_bulk = self.max_bulk_length
        # The time of the current batch, in ms; -1 until a command needs it.
        now = -1
        while True:
            batch = self._taken
            if batch:
                # Taken by the other state before it handed over.
                self._taken = []
            else:
                if out:
                    # _flush() inlined (no generator per batch): nothing is
                    # pending, so a cancelled drain just propagates. While
                    # a chunk is handled, the write only joins the others
                    # of the reactor turn.
                    self.write(b"".join(out))
                    out.clear()
                    writable = self.drain()
                    if not writable.called or writable.result is not None:
                        yield writable
                # The hot path: every command wholly buffered, taken in one
                # scan of the chunk as it arrives (at once if it is
                # buffered), resumed without a callback chain.
                batch = yield wait_commands(self, max_bulk, limit)
                # Commands that arrive together run at one instant.
                now = -1
                if not batch:
                    # Buffered, but incomplete, odd or bad: read_commands
                    # has read_command's exact rules and errors.
                    pending = read_commands(self, max_bulk, limit)
                    if pending.called and type(pending.result) is list:
                        # Buffered: take it without a trip through the engine.
                        batch = pending.result
                    else:
                        try:
                            batch = yield pending
                        except RESPProtocolError as e:
                            self._refuse(e)
                            return
            for index, args in enumerate(batch):
                command = table.get(args[0])
                if command is None:
                    command = lookup(args[0])
                    if command is None:
                        out.append(encode_reply(unknown_command(args)))
                        continue
                arity = command.arity
                if len(args) != arity and (arity > 0 or len(args) < -arity):
                    out.append(encode_reply(arity_error(command, args)))
                    continue
                handler = command.handler
                if handler is None:
                    if command.name == "multi":
                        out.append(_OK_BYTES)
                        # The rest of the batch is the transaction's.
                        self._taken = batch[index + 1 :]
                        noreturn(self.transaction())
                    if command.name == "quit":
                        self._close_with(_OK_BYTES)
                        return
                    out.append(
                        encode_reply(
                            ErrorReply(f"ERR {command.name.upper()} without MULTI")
                        )
                    )
                    continue
                if now < 0:
                    now = int(clock.seconds() * 1000)
                    if store.expires:
                        # (Only keys with a deadline can be due.)
                        store.expire_due(now)
                try:
                    reply = handler(store, session, args, now)
                except CommandError as e:
                    out.append(encode_reply(ErrorReply(e.message)))
                    continue
                if type(reply) is bytes:
                    out.append(b"$%d\r\n%s\r\n" % (len(reply), reply))
                elif reply is OK:
                    out.append(_OK_BYTES)
                elif reply is PONG:
                    # PING_INLINE's reply, encoded once.
                    out.append(_PONG_BYTES)
                elif type(reply) is int:
                    out.append(b":%d\r\n" % reply)
                elif reply is None:
                    out.append(_NULL[session.protocol])
                else:
                    out.append(encode_reply(reply, session.protocol))

    def transaction(self) -> Generator[Any, Any, None]:
        """
        The C{MULTI} state: queue commands (C{+QUEUED}) until C{EXEC} runs
        them all at one instant and replies with the array of their
        replies, or C{DISCARD} drops them; then back to L{serving}.

        An unknown command or a wrong argument count is refused at once and
        makes C{EXEC} abort the transaction (C{-EXECABORT}), as in Redis.
        """
        out = self._out
        limit = self.max_pending_replies
        queued: list[tuple[Command, list[bytes]]] = []
        failed = False
        # Commands serving took from the buffer after MULTI: these first.
        taken = self._taken
        self._taken = []
        next_taken = 0
        while True:
            if next_taken < len(taken):
                args = taken[next_taken]
                next_taken += 1
            else:
                pending = read_command(self, self.max_bulk_length)
                if out and (not pending.called or len(out) >= limit):
                    yield from self._flush(pending)
                try:
                    args = yield pending
                except RESPProtocolError as e:
                    self._refuse(e)
                    return
            command = lookup(args[0])
            if command is None:
                failed = True
                out.append(encode_reply(unknown_command(args)))
                continue
            error = arity_error(command, args)
            if error is not None:
                failed = True
                out.append(encode_reply(error))
                continue
            if command.name == "exec":
                if failed:
                    reply: object = ErrorReply(
                        "EXECABORT Transaction discarded because of previous errors."
                    )
                else:
                    reply = self._execute(queued)
                del queued
                out.append(encode_reply(reply, self.session.protocol))
                self._taken = taken[next_taken:]
                noreturn(self.serving())
            if command.name == "discard":
                del queued
                out.append(_OK_BYTES)
                self._taken = taken[next_taken:]
                noreturn(self.serving())
            if command.name == "quit":
                self._close_with(_OK_BYTES)
                return
            if command.name == "multi":
                out.append(
                    encode_reply(ErrorReply("ERR MULTI calls can not be nested"))
                )
                continue
            if len(queued) >= self.max_queued_commands:
                failed = True
                out.append(
                    encode_reply(
                        ErrorReply(
                            f"ERR transaction exceeds max_queued_commands="
                            f"{self.max_queued_commands}"
                        )
                    )
                )
                continue
            queued.append((command, args))
            out.append(encode_reply(QUEUED))

    #### Helpers

    def _execute(self, queued: list[tuple[Command, list[bytes]]]) -> list[object]:
        """
        Run queued commands at one instant and collect their replies.

        @param queued: The commands and their arguments, in order.
        @return: The replies, errors included as L{ErrorReply} values.
        """
        store = self.store
        now = int(self.clock.seconds() * 1000)
        store.expire_due(now)
        return [
            run(command, store, self.session, args, now) for command, args in queued
        ]

    def _flush(self, pending: Deferred[Any] | None = None) -> Generator[Any, Any, None]:
        """
        Write the waiting replies in one write, then wait until the
        transport takes more.

        @param pending: The command read already issued, if any; if the
            wait is cancelled (the connection is gone), it is cancelled too
            and its outcome discarded, so no failure is left unhandled.
        """
        out = self._out
        self.write(b"".join(out))
        out.clear()
        drained = self.drain()
        if drained.called and drained.result is None:
            # The transport takes more: no trip through the engine.
            return
        try:
            yield drained
        except BaseException:
            if pending is not None:
                pending.addErrback(_discard)
                pending.cancel()
            raise

    def _refuse(self, error: RESPProtocolError) -> None:
        """
        Answer input Redis rejects as Redis does; the caller then ends the
        conversation, which closes the connection.

        @param error: What was wrong.
        """
        log.info(
            "closing {peer}: {message}",
            peer=self.transport and self.transport.getPeer(),
            message=error.message,
        )
        self._close_with(error.reply)

    def _close_with(self, last: bytes) -> None:
        """
        Write the waiting replies and C{last} in one write; the caller then
        ends the conversation, which closes the connection once they are
        sent and drops anything the client sent after.

        @param last: The final reply.
        """
        out = self._out
        out.append(last)
        self.write(b"".join(out))
        out.clear()


def _discard(failure: Failure) -> None:
    """
    Swallow the outcome of a read abandoned because the connection went.

    @param failure: Its failure.
    """
