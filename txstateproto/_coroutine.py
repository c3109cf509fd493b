"""
The coroutine engine: L{coroutine}, L{Coroutine}, L{noreturn} and L{TailCall}.

This module knows nothing of protocols, transports, buffers, the reactor or
clocks: time reaches it only as Deferreds it is handed. It may import only
Twisted's Deferred machinery and L{txstateproto._errors}.

Theory of operation
===================

A L{Coroutine} is a L{Deferred} that drives a I{body}: a generator object or an
C{async def} coroutine object. The body hands the engine a Deferred (C{yield d}
or C{await d}); the engine suspends the body until C{d} fires, then sends the
result in (or throws the failure in) and goes on.

The trampoline
--------------
The engine is a loop (L{Coroutine._run}), not recursion. It keeps a stack of
I{frames}: the outermost body at the bottom, and above it every plain
generator the body yielded (a nested call), innermost last. One pass of the
loop sends a value into, or throws an exception into, the innermost frame and
looks at what comes out:

  - a Deferred that has already fired: its result goes straight back in, with
    no callback and no recursion (so a million fired Deferreds in a row cost
    constant stack);
  - a Deferred that has not fired: the engine records it as the one thing it
    now waits on (C{_waiting}), adds one callback, and returns; the callback
    re-enters the loop;
  - a generator or coroutine object: pushed as a new innermost frame;
  - C{return value} (C{StopIteration}): the frame is popped and the value is
    sent into the frame below, or fires the Coroutine if none is left;
  - an exception: the frame is popped and the exception is thrown into the
    frame below, or fails the Coroutine;
  - the L{TailCall} signal raised by L{noreturn}: the frame has ended (its
    C{finally} blocks ran) and is popped, which frees its locals at once; the
    tail-call target replaces it. A generator target is pushed; a Deferred
    target is waited on with its result going to the frame below; a decorated
    coroutine that has not started yet is I{adopted}: its body is pushed onto
    this stack and the other Coroutine becomes an alias that fires with this
    one's result. Nothing grows, however long the chain.

For adoption to be possible, a decorated coroutine called I{while another body
is running} (that is, from inside a body) does not start at once: it is
I{pending} and starts when the running body next yields, returns or makes a
tail call. C{noreturn(other(...))} therefore runs flat: C{other}'s body never
started on the Python stack of the caller.

Cancel and pause cascade
------------------------
C{cancel()} cancels the one Deferred being waited on. If that is a Coroutine,
its own cancel does the same one level down, and so on: the innermost
Deferred's canceller runs first. Each level's failure then comes back up as
that level's wait firing, and is thrown into the innermost frame of the level
above, whose exception propagates through its frames: C{finally} blocks run
innermost first. A wait that still I{succeeds} after being cancelled (a
canceller that calls back) is turned into L{CancelledError}, so the body never
runs on as if nothing happened. Cancel from inside the running body is
recorded and delivered at its next C{yield}.

C{pause()} pauses the Deferred being waited on (which, for a Coroutine,
cascades) and holds any result that arrives until C{unpause()}. The engine
remembers exactly which Deferred I{it} paused and unpauses that one, once,
so a Deferred shared with other waiters is never left paused for them.
C{cancel()} overrides pause: it drops this Coroutine's pauses first, so that
clean-up can run.
"""

from __future__ import annotations

import functools
import sys
import types
import weakref
from collections.abc import Callable, Generator
from collections.abc import Coroutine as _AsyncBody
from enum import Enum
from typing import (
    Any,
    NoReturn,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    final,
    overload,
)

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from txstateproto._errors import (
    NoreturnOutsideCoroutineError,
    TailCallSwallowedError,
)

__all__ = ["Coroutine", "TailCall", "coroutine", "noreturn"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: What a coroutine body is: a generator object or an C{async def} coroutine
#: object.
_Body = Generator[Any, Any, Any] | _AsyncBody[Any, Any, Any]

_BODY_TYPES = (types.GeneratorType, types.CoroutineType)
_STEP_TYPES = frozenset(_BODY_TYPES)
# The commonest step, tested by identity before the set: a set lookup costs
# about 80 callgrind instructions, an identity test a few.
_GENERATOR = types.GeneratorType

# Code flags of functions whose frames the engine does not drive itself when
# they run nested inside a body through `yield from` or `await`.
_SUSPENDABLE_CODE = (
    0x20  # CO_GENERATOR
    | 0x80  # CO_COROUTINE
    | 0x100  # CO_ITERABLE_COROUTINE
    | 0x200  # CO_ASYNC_GENERATOR
)


class _Nothing:
    """The type of L{_NOTHING}."""

    def __repr__(self) -> str:
        return "<nothing>"


#: Marks "no result held" (None is a valid result).
_NOTHING = _Nothing()

#: The Coroutine whose body is executing right now, if any. Twisted runs one
#: reactor thread, so one variable is enough; it is saved and restored around
#: every body step so nested engines see their own.
_running: Coroutine[Any] | None = None


class _State(Enum):
    """
    Where a L{Coroutine}'s body is in its life.
    """

    #: Created while another body was running; starts when that body next
    #: yields, returns or makes a tail call.
    PENDING = "pending"
    #: The engine is executing the body right now.
    RUNNING = "running"
    #: The body is suspended on a Deferred, or holds a result until unpaused.
    WAITING = "waiting"
    #: The body has ended; the Deferred has its result (or will have it when
    #: unpaused).
    FINISHED = "finished"
    #: Merged into the Coroutine that tail-called it; fires with its result.
    ADOPTED = "adopted"


# Exact types seen to be Deferred subclasses (other than Coroutine), so that
# _dispatch tests them with a set lookup instead of ABC isinstance calls.
_DEFERRED_TYPES: set[type] = {Deferred}

# Module constants: a member looked up through its Enum class costs about
# 100 ns on CPython 3.11, a module global about 10 (timeit), on every path
# that tests or sets a state.
_PENDING = _State.PENDING
_RUNNING = _State.RUNNING
_WAITING = _State.WAITING
_FINISHED = _State.FINISHED
_ADOPTED = _State.ADOPTED

# Exact DirectDeferred subclasses (other than Coroutine) seen to be waited
# on directly, so that _run suspends on them without _dispatch's calls.
_DIRECT_TYPES: set[type] = set()

# Deferred's metaclass is ABCMeta (it is an Awaitable), so isinstance(x,
# Deferred) costs ~220 ns where a plain class check costs ~60: the hot paths
# test exact types first. Results of these types are never Deferreds.
_PLAIN_RESULTS = frozenset(
    {bytes, str, int, float, bool, type(None), tuple, list, dict}
)


def _consume(result: object) -> object:
    """
    End a Deferred's interest in a result the engine has taken.

    Failures are swallowed (the engine re-raises them in the body, so they
    must not also be logged as unhandled); successful results are passed on
    unchanged, because an C{async def} body's C{await} reads them back from
    the Deferred itself.
    """
    if isinstance(result, Failure):
        return None
    return result


def _describe(body: _Body) -> str:
    """
    Say which function a body runs and where it is, for C{repr}.
    """
    frame = _frame_of(body)
    name = _name(body)
    if frame is None:
        return f"{name}()"
    code = frame.f_code
    return f"{name}() at {code.co_filename}:{frame.f_lineno}"


def _frame_of(body: _Body) -> types.FrameType | None:
    """
    Return the frame object of a body (None once it has ended).
    """
    if isinstance(body, types.GeneratorType):
        return body.gi_frame
    frame: types.FrameType | None = body.cr_frame  # type: ignore[union-attr]
    return frame


def _name(body: _Body) -> str:
    """
    Return the qualified name of the function a body runs.
    """
    name: str = getattr(body, "__qualname__", type(body).__name__)
    return name


def _close_target(target: object) -> None:
    """
    Close a tail-call target that will never run, so Python does not warn
    that a coroutine was never awaited.
    """
    if isinstance(target, _BODY_TYPES):
        target.close()
    elif isinstance(target, Coroutine) and target._state is _PENDING:
        target.cancel()
        target.addErrback(_trap_cancelled)


def _trap_cancelled(failure: Failure) -> None:
    """
    Swallow the L{CancelledError} of a Coroutine that was never started.
    """
    failure.trap(CancelledError)


class TailCall(BaseException):
    """
    The signal L{noreturn} raises to end the current body and hand over to
    the next step.

    It derives from L{BaseException}, like L{GeneratorExit}, so that
    C{except Exception:} in user code does not catch it; a bare C{except:} or
    C{except BaseException:} does, and should re-raise it::

        try:
            ...
        except TailCall:
            raise
        except BaseException:
            ...

    If a body swallows it anyway and goes on, the engine fails the
    L{Coroutine} with L{TailCallSwallowedError} at the body's next C{yield} or
    C{return}. There is no public constructor: only L{noreturn} raises one
    (the target it hands over to is kept by the engine, not by the signal),
    so a tail call cannot be forged by raising this class by hand.
    """

    __slots__ = ()

    def __init__(self, *args: object) -> None:
        raise TypeError(
            "TailCall has no public constructor; call noreturn(next_step) "
            "inside a coroutine body instead"
        )


@final
class _TailCallSignal(TailCall):
    """
    What L{noreturn} raises: a L{TailCall} with L{BaseException}'s own
    constructor.

    C{raise _TailCallSignal} makes and initialises the instance in C, with no
    Python frame; a new instance per tail call costs less than re-raising one
    preallocated signal, which needed its traceback and context cleared by
    two attribute stores on every hand-over. The instance (and, through its
    traceback, the ended frame's locals) is freed when the engine's handler
    ends, before the next state runs.
    """

    __slots__ = ()

    __init__ = BaseException.__init__


class _Waiter(Protocol):
    """
    What waits on a L{DirectDeferred}: a L{Coroutine}, or whatever else
    takes a Deferred's result first (a protocol, its conversation's end).
    """

    def _on_fired(self, result: object, d: Deferred[Any]) -> object:
        """
        Take the result, as a callback would: failures are handled here,
        successes are passed on (see L{_consume}).
        """


def _get_callbacks(self: Any) -> list[Any]:
    """
    The callback list, made empty the first time it is asked for: what
    L{Deferred}'s own methods read and append to.
    """
    chain: list[Any] | None = self._chain
    if chain is None:
        chain = self._chain = []
    return chain


def _set_callbacks(self: Any, chain: list[Any]) -> None:
    """
    Replace the callback list, as L{Deferred.__init__} and
    C{inlineCallbacks}' cancellation do.
    """
    self._chain = chain


#: C{_callbacks} of L{DirectDeferred} and L{FiredDeferred}: a property over
#: their C{_chain}, which holds C{None} until a callback list is needed.
_LAZY_CALLBACKS = property(_get_callbacks, _set_callbacks)


class DirectDeferred(Deferred[_T]):
    """
    A L{Deferred} that resumes a L{Coroutine} waiting on it without a
    callback.

    A Coroutine that yields one of these, unfired and with no callbacks of
    its own, registers itself in C{_waiter} instead of adding a callback:
    firing it then calls the Coroutine directly, with none of the
    callback-chain machinery and without the per-wait allocations of
    C{addBoth} (which idle connections pay for while they wait). Whatever
    else happens to it keeps Deferred semantics: a callback added after the
    Coroutine began to wait runs after the Coroutine has taken the result
    (with what the Coroutine leaves, as for a callback added after
    C{inlineCallbacks} took one), and a paused one holds its result until
    unpaused. Subclasses (a protocol's queued read, L{Coroutine} itself)
    fire it with C{callback}/C{errback} as any Deferred.

    The callback list is made only when something needs it: C{_callbacks}
    is a property over the C{_chain} slot, which holds C{None} until a
    callback is added (or Twisted's own code reads the list, which it then
    gets, empty, to append to). A Deferred waited on directly, which never
    gets a callback, saves the list (56 bytes) for as long as it waits. Code
    of this module tests C{_chain} itself (C{None} or an empty list: no
    callbacks), which is cheaper than the property and makes no list.

    A subclass whose C{__init__} does not call this one's (to save its
    frame) must set, in place of what L{Deferred.__init__} sets::

        self._chain = None          # not self._callbacks = []
        self._waiter = None
        self._canceller = canceller  # if it has one; the default is None

    and, when L{Deferred.debug} is on, call C{Deferred.__init__(self,
    canceller)} instead, which records the creator's stack (its
    C{self._callbacks = []} goes through the property's setter).
    """

    __slots__ = ("_chain", "_waiter")

    #: None unless given: Coroutines and reads made without one do not
    #: store it.
    _canceller: Callable[[Deferred[Any]], None] | None = None

    def __init__(
        self, canceller: Callable[[Deferred[Any]], None] | None = None
    ) -> None:
        """
        @param canceller: As for L{Deferred}.
        """
        self._chain: list[Any] | None = None
        self._waiter: _Waiter | None = None
        if self.debug:
            # Deferred debugging on: let Deferred record the creator's stack.
            Deferred.__init__(self, canceller)
        elif canceller is not None:
            self._canceller = canceller

    _callbacks = _LAZY_CALLBACKS

    def callback(self, result: _T | Failure) -> None:
        """
        Fire with C{result}, resuming a Coroutine that waits on this first.

        @param result: As for L{Deferred.callback}.
        @raise twisted.internet.defer.AlreadyCalledError: If already fired.
        """
        waiter = self._waiter
        if waiter is None:
            super().callback(result)
            return
        self._waiter = None
        if self.called or self._chain or self.paused or isinstance(result, Failure):
            self._resume_waiter(waiter, result)
            return
        # _resume_waiter's common case, inlined: this is how every queued
        # read resumes its handler.
        self.called = True
        self.result = result
        waiter._on_fired(result, self)

    def errback(self, fail: Failure | BaseException | None = None) -> None:
        """
        Fail with C{fail}, resuming a Coroutine that waits on this first.

        @param fail: As for L{Deferred.errback}.
        @raise twisted.internet.defer.AlreadyCalledError: If already fired.
        """
        waiter = self._waiter
        if waiter is None:
            super().errback(fail)
            return
        self._waiter = None
        if not isinstance(fail, Failure):
            # As Deferred.errback: None means the exception being handled.
            fail = Failure() if fail is None else Failure(fail)
        self._resume_waiter(waiter, fail)

    def _wait_directly(self, waiter: _Waiter) -> bool:
        """
        Make C{waiter} the first to get the result, called directly.

        @return: C{False}, having done nothing, if that cannot keep Deferred
            semantics (already fired, paused, callbacks or another direct
            waiter already there): the caller adds a callback instead.
        """
        if self.called or self.paused or self._waiter is not None or self._chain:
            return False
        self._waiter = waiter
        return True

    def _resume_waiter(self, waiter: _Waiter, result: object) -> None:
        """
        Give C{result} to the Coroutine waiting on this, as its callback
        (the first in the chain) would.
        """
        if self.called:
            # Deferred.callback's own error, before anything runs.
            Deferred.callback(self, cast(_T, result))
        if self._chain or self.paused:
            # Callbacks added since, or a pause: the chain runs as usual,
            # with the Coroutine's callback first, as if it had been added
            # when the wait began.
            Deferred.addBoth(self, waiter._on_fired, self)
            chain = self._callbacks
            chain.insert(0, chain.pop())
            Deferred.callback(self, cast(_T, result))
            return
        # What the chain would leave behind: fired, with the result the
        # Coroutine's callback passes on.
        self.called = True
        self.result = _consume(result)
        waiter._on_fired(result, self)


class FiredDeferred(Deferred[_T]):
    """
    A L{Deferred} made fired, with a plain result: what a read the buffer
    satisfies at once returns, one per message of a pipelining peer.

    Made with C{Deferred.__new__} and one store (C{d.result = value}),
    without L{Deferred.__init__}: C{called} and C{_canceller} are this
    class's constants, and the callback list is made only if something asks
    for it (C{_callbacks} is a property over C{_chain}, as in
    L{DirectDeferred}), so a result the engine takes straight from it costs
    no list. Everything else is a L{Deferred}'s: callbacks added to it run at
    once with its result, C{cancel} does nothing, C{await} and C{yield} give
    the result.

    Only for results that are neither a L{Failure} nor a L{Deferred}; with
    L{Deferred.debug} on, callers use L{succeed} instead, which records the
    creator's stack.
    """

    #: Made fired; Deferred's own methods set it on the instance if ever
    #: they must (never: it is never un-fired).
    called = True

    #: None: there is nothing to cancel.
    _canceller = None

    #: The callback list once something has asked for it.
    _chain: list[Any] | None = None

    _callbacks = _LAZY_CALLBACKS


@final
class Coroutine(DirectDeferred[_T]):
    """
    A L{Deferred} that runs a coroutine body and fires with its result.

    Obtain one by calling a function decorated with L{coroutine}, or directly
    as C{Coroutine(body)} for a generator or C{async def} coroutine object
    that is already made. It behaves as any Deferred does (callbacks,
    errbacks, chaining, C{.result} once fired); what it adds is that
    L{cancel}, L{pause} and L{unpause} reach through to whatever the body is
    waiting on, however deeply nested.

    Inside the body, C{x = yield d} (or C{x = await d}) waits for the
    Deferred C{d} and gives its result, or raises its failure there. Yielding
    another Coroutine waits for it the same way; yielding a plain generator
    object runs it as a nested call, on this Coroutine's own stack; C{yield
    None} is a checkpoint (it resumes at once unless paused or cancelled);
    yielding anything else raises L{TypeError} at the C{yield}. C{return
    value} fires the Coroutine with C{value}; an uncaught exception fails it
    with that exception's L{Failure}. Returning a Deferred from the outermost
    body waits for it, as C{noreturn(d)} would.

    @note: When created while another coroutine body is running (from inside
        a body), the new body starts when the running body next yields,
        returns or makes a tail call, not at once. This is what lets
        C{noreturn(other(...))} run in constant stack.
    """

    # Slots rather than the instance dict that Deferred gives every
    # subclass: an idle connection's Coroutine keeps its state in the object
    # itself, and the dict (whose values array Python allocates with room
    # for every key any instance ever set) holds only Deferred's own
    # attributes, set when it fires.
    __slots__ = (
        "_aliases",
        "_cancel_due",
        "_cancelled",
        "_frames",
        "_held",
        "_owner",
        "_paused_wait",
        "_pauses",
        "_pending",
        "_state",
        "_tail_target",
        "_waiting",
    )

    def __init__(self, body: _Body) -> None:
        """
        Run C{body} as a coroutine.

        @param body: A generator object or an C{async def} coroutine object
            (not a function: call it first).
        @raise TypeError: If C{body} is neither.
        """
        if not isinstance(body, _BODY_TYPES):
            raise TypeError(
                f"Coroutine() takes a generator or coroutine object, not "
                f"{type(body).__name__!r}; call the generator function (or "
                f"async def) first, or decorate it with @coroutine"
            )
        # DirectDeferred's, inlined (see its docstring): a Coroutine is made
        # per decorated call, where one more frame is a measurable share.
        self._chain = None
        self._waiter = None
        if self.debug:
            Deferred.__init__(self)
        self._frames: list[_Body] = [body]
        self._waiting: Deferred[Any] | None = None
        self._paused_wait: Deferred[Any] | None = None
        self._held: object = _NOTHING
        self._pauses = 0
        self._cancelled = False
        self._cancel_due = False
        # What noreturn() hands over to while its TailCall is in flight.
        self._tail_target: object = None
        self._pending: list[Coroutine[Any]] | None = None
        self._owner: Coroutine[Any] | None = None
        self._aliases: weakref.WeakSet[Coroutine[Any]] | None = None
        owner = _running
        if owner is None:
            self._state = _RUNNING
            self._run(None, None)
        else:
            self._state = _PENDING
            self._owner = owner
            if owner._pending is None:
                owner._pending = [self]
            else:
                owner._pending.append(self)

    # -- the trampoline -----------------------------------------------------

    def _start(self) -> None:
        """
        Start a pending body (called by the Coroutine it was created under).
        """
        self._unlink_pending()
        if self._pauses:
            # Paused before it ever ran: it starts on unpause.
            self._state = _WAITING
            self._held = None
            return
        self._state = _RUNNING
        self._run(None, None)

    def _unlink_pending(self) -> None:
        """
        Leave the pending list of the Coroutine this one was created under.
        """
        owner = self._owner
        self._owner = None
        if owner is not None and owner._pending and self in owner._pending:
            owner._pending.remove(self)

    def _start_pending(self) -> None:
        """
        Start every body created while this one ran, in creation order.
        """
        pending = self._pending
        while pending:
            pending[0]._start()

    def _run(self, value: object, failure: BaseException | Failure | None) -> None:
        """
        Drive the body from its current frame until it suspends or ends.

        @param value: What to send into the innermost frame.
        @param failure: What to throw into it instead, if not None.
        """
        global _running
        frames = self._frames
        if not frames:
            # A tail call into a Deferred ended the outermost frame: its
            # result is the Coroutine's.
            self._finish(value, failure)
            return
        outer = _running
        _running = self
        finished = False
        # The innermost frame, kept in step with frames[-1] by every path
        # that changes the stack, so the hot paths do not index the list.
        body = frames[-1]
        # What a tail call (or `return d`) hands over to; checked by type.
        target: Any
        try:
            while True:
                try:
                    if failure is None:
                        yielded = body.send(value)
                    elif isinstance(failure, Failure):
                        yielded = failure.throwExceptionIntoGenerator(body)
                    else:
                        yielded = body.throw(failure)
                except TailCall:
                    # Caught first: a tail call is a state machine's every
                    # transition. Leaving this handler frees the signal and,
                    # through its traceback, the ended frame's locals.
                    target = self._tail_target
                    self._tail_target = None
                    if (
                        type(target) is _GENERATOR or type(target) in _STEP_TYPES
                    ) and not (self._pending or self._cancel_due):
                        # The hot path: the next state replaces the ended
                        # one, which is freed at once.
                        frames[-1] = body = target
                        value = failure = None
                        continue
                    frames.pop()
                except StopIteration as stop:
                    frames.pop()
                    value, failure = stop.value, None
                    if (
                        self._tail_target is not None
                        or frames
                        or not isinstance(value, Deferred)
                    ):
                        if self._tail_target is not None:
                            failure = self._swallowed(body)
                        if self._pending:
                            self._start_pending()
                        if not frames:
                            finished = True
                            break
                        body = frames[-1]
                        continue
                    # `return d` from the outermost body: wait for it, as
                    # noreturn(d) would.
                    target = value
                    if self._pending:
                        self._start_pending()
                except BaseException as exc:
                    frames.pop()
                    value, failure = None, exc
                    if self._tail_target is not None:
                        failure = self._swallowed(body)
                    if self._pending:
                        self._start_pending()
                    if not frames:
                        finished = True
                        break
                    body = frames[-1]
                    continue
                else:
                    if self._tail_target is not None:
                        frames.pop()
                        _close_target(body)
                        value, failure = None, self._swallowed(body)
                        if self._pending:
                            self._start_pending()
                        if not frames:
                            finished = True
                            break
                        body = frames[-1]
                        continue
                    if (
                        (type(yielded) is FiredDeferred or type(yielded) is Deferred)
                        and yielded.called
                        and not yielded.paused
                        and not (self._pauses or self._cancel_due or self._pending)
                    ):
                        # The hot path, inlined: an already-fired plain
                        # Deferred (a read the buffer satisfied) is taken
                        # without a callback, a call or a tuple.
                        value = yielded.result
                        if type(value) in _PLAIN_RESULTS or (
                            type(value) is not Failure
                            and not isinstance(value, Deferred)
                        ):
                            # The body may have just caught what was thrown
                            # into it: send this result, throw nothing.
                            failure = None
                            continue
                    if (
                        type(yielded) in _DIRECT_TYPES
                        and not yielded.called
                        and yielded._waiter is None
                        and not yielded._chain
                        and not yielded.paused
                        and not (self._pauses or self._cancel_due or self._pending)
                    ):
                        # The hot path of a read that must wait for bytes:
                        # _dispatch, _wait_for and _wait_directly inlined.
                        self._waiting = yielded
                        yielded._waiter = self
                        self._state = _WAITING
                        break
                    value, failure, suspend = self._dispatch(yielded, frames)
                    if suspend:
                        self._state = _WAITING
                        break
                    body = frames[-1]
                    continue

                # A tail call into `target`, the ended frame popped.
                value, failure = None, None
                if isinstance(target, _BODY_TYPES):
                    frames.append(target)
                elif isinstance(target, Coroutine) and target._state is _PENDING:
                    self._adopt(target)
                elif isinstance(target, Deferred):
                    if self._pending:
                        self._start_pending()
                    value, failure, suspend = self._wait_for(target)
                    if suspend:
                        self._state = _WAITING
                        break
                    if not frames:
                        finished = True
                        break
                    body = frames[-1]
                    continue
                else:
                    # No tail call in flight: this TailCall was caught
                    # and raised again later, not raised by noreturn().
                    failure = NoreturnOutsideCoroutineError(
                        f"{_name(body)}() raised a TailCall that noreturn() "
                        f"did not just raise (one caught earlier and raised "
                        f"again?); only noreturn() makes a tail call"
                    )
                    if self._pending:
                        self._start_pending()
                    if not frames:
                        finished = True
                        break
                    body = frames[-1]
                    continue
                if self._pending:
                    self._start_pending()
                if self._cancel_due:
                    self._cancel_due = False
                    failure = CancelledError()
                    # The new state has not started: close it so its first
                    # line never runs, and raise in the frame below, if any.
                    _close_target(frames.pop())
                    if not frames:
                        finished = True
                        break
                body = frames[-1]
        finally:
            _running = outer
        if finished:
            self._finish(value, failure)

    def _dispatch(
        self, yielded: object, frames: list[_Body]
    ) -> tuple[object, BaseException | Failure | None, bool]:
        """
        Act on what the innermost frame yielded.

        @return: C{(value, failure, suspend)}: what to send or throw in next,
            or C{suspend=True} when the engine must return and wait.
        """
        kind = type(yielded)
        if kind is not Coroutine and kind in _DEFERRED_TYPES:
            # A Deferred (or a known subclass such as a protocol's queued
            # read) that is not a Coroutine: skip the ABC isinstance checks.
            if self._pending:
                self._start_pending()
            return self._wait_for(yielded)  # type: ignore[arg-type]
        if isinstance(yielded, Coroutine) and yielded._state is _PENDING:
            yielded._start()
        if self._pending:
            self._start_pending()
        if isinstance(yielded, Deferred):
            _DEFERRED_TYPES.add(kind)
            return self._wait_for(yielded)
        if isinstance(yielded, _BODY_TYPES):
            frames.append(yielded)
            if self._cancel_due:
                # Cancelled before the nested call began: it never runs.
                frames.pop()
                yielded.close()
                self._cancel_due = False
                return None, CancelledError(), False
            if self._pauses:
                return self._hold(None)
            return None, None, False
        if yielded is None:
            if self._cancel_due:
                self._cancel_due = False
                return None, CancelledError(), False
            if self._pauses:
                return self._hold(None)
            return None, None, False
        return (
            None,
            TypeError(
                f"a coroutine body may yield a Deferred, a Coroutine, a "
                f"generator or None, not {type(yielded).__name__!r} "
                f"({yielded!r:.60})"
            ),
            False,
        )

    def _hold(
        self, result: object
    ) -> tuple[object, BaseException | Failure | None, bool]:
        """
        Keep C{result} until this Coroutine is unpaused, and suspend.
        """
        self._held = result
        return None, None, True

    def _wait_for(
        self, d: Deferred[Any]
    ) -> tuple[object, BaseException | Failure | None, bool]:
        """
        Make C{d} the one thing this Coroutine waits on.

        @return: As L{_dispatch}: the result at once if C{d} has one and
            nothing stops us from taking it, else C{suspend=True}.
        """
        if self._cancel_due:
            self._cancel_due = False
            return None, self._cancel_deferred(d), False
        if not self._pauses and d.called and not d.paused:
            # The hot path: already fired, take the result without a
            # callback (and without recursion).
            result = d.result
            if isinstance(result, Failure):
                d.addErrback(_consume)
                return None, result, False
            if not isinstance(result, Deferred):
                return result, None, False
        self._waiting = d
        if self._pauses:
            # Pause first, so the callback below cannot run before unpause.
            d.pause()
            self._paused_wait = d
        elif isinstance(d, DirectDeferred) and d._wait_directly(self):
            # Resumed by a direct call when it fires: no callback to add.
            if type(d) is not Coroutine:
                _DIRECT_TYPES.add(type(d))
            return None, None, True
        d.addBoth(self._on_fired, d)
        held = self._held
        if held is not _NOTHING and not self._pauses:
            # It fired while we were adding the callback (a chained result).
            self._held = _NOTHING
            if isinstance(held, Failure):
                return None, held, False
            return held, None, False
        return None, None, True

    def _on_fired(self, result: object, d: Deferred[Any]) -> object:
        """
        The callback on the Deferred being waited on: resume the body.
        """
        if d is not self._waiting:
            # A wait we abandoned (its cancel did not fire it); it is ours
            # to swallow.
            return _consume(result)
        self._waiting = None
        if self._state is not _WAITING or self._pauses:
            # Only here can _paused_wait be d: it is set only while this
            # Coroutine holds a pause, and cleared when the last is undone.
            if self._paused_wait is d:
                self._paused_wait = None
            self._held = result
            return _consume(result)
        # _resume, inlined: every wait that did not fire at once ends here.
        self._state = _RUNNING
        if isinstance(result, Failure):
            if self._cancel_due:
                self._cancel_due = False
            self._run(None, result)
            return None
        if self._cancel_due:
            # Cancelled: the body must not run on as if nothing happened,
            # even if what it waited on succeeded.
            self._cancel_due = False
            self._run(None, CancelledError())
        else:
            self._run(result, None)
        return result

    def _resume(self, result: object) -> None:
        """
        Resume the suspended body with the result of what it waited on.
        """
        self._state = _RUNNING
        if isinstance(result, Failure):
            failure: BaseException | Failure | None = result
            value: object = None
        else:
            failure, value = None, result
        if self._cancel_due:
            # Cancelled: the body must not run on as if nothing happened,
            # even if what it waited on succeeded.
            self._cancel_due = False
            if failure is None:
                failure = CancelledError()
        self._run(value, failure)

    def _adopt(self, child: Coroutine[Any]) -> None:
        """
        Take over a pending Coroutine's body as the new innermost frame.
        """
        child._unlink_pending()
        self._frames.append(child._frames.pop())
        child._state = _ADOPTED
        child._owner = self
        if _getrefcount(child) > _ADOPTED_UNHELD_REFS:
            # Someone else holds it, so it must fire with this one's result.
            # One held by no one (noreturn(step(...)), the common case) is
            # freed when _run lets go of it: an alias entry, its weak
            # reference and the callback that removes it are then wasted.
            if self._aliases is None:
                self._aliases = weakref.WeakSet()
            self._aliases.add(child)

    def _swallowed(self, body: _Body) -> TailCallSwallowedError:
        """
        Build the error for a tail call the body caught and went on from.

        Every remaining frame is closed: the Coroutine fails outright.
        """
        target = self._tail_target
        self._tail_target = None
        _close_target(target)
        name = getattr(target, "__qualname__", type(target).__name__)
        while self._frames:
            self._frames.pop().close()
        return TailCallSwallowedError(
            f"{_name(body)}() caught the TailCall raised by "
            f"noreturn({name}(...)) and went on; re-raise TailCall in bare "
            f"'except:' / 'except BaseException:' clauses"
        )

    def _finish(self, value: object, failure: BaseException | Failure | None) -> None:
        """
        Fire this Coroutine, and every Coroutine it adopted, with the result.
        """
        self._state = _FINISHED
        self._waiting = None
        aliases = self._aliases
        self._aliases = None
        result: object
        if failure is None:
            result = value
        elif isinstance(failure, Failure):
            result = failure
        else:
            result = Failure(failure)
        for alias in list(aliases) if aliases else ():
            alias._state = _FINISHED
            alias._owner = None
            if isinstance(result, Failure):
                alias.errback(result)
            else:
                alias.callback(result)
        if isinstance(result, Failure):
            self.errback(result)
        else:
            self.callback(cast(_T, result))

    def _cancel_deferred(self, d: Deferred[Any]) -> BaseException | Failure:
        """
        Cancel a Deferred the body handed us after it was cancelled, and say
        what to throw into the body.
        """
        outcome: list[object] = []

        def capture(result: object) -> None:
            outcome.append(result)

        d.addBoth(capture)
        try:
            d.cancel()
        except BaseException as exc:
            return exc
        if outcome and isinstance(outcome[0], Failure):
            return outcome[0]
        return CancelledError()

    # -- cancel and pause ---------------------------------------------------

    def cancel(self) -> None:
        """
        Stop the body: cancel what it waits on and raise in it.

        The Deferred the body is waiting on is cancelled; if it is a
        Coroutine, that cascades the same way, so the innermost canceller
        runs first. Then L{CancelledError} (or whatever failure the cancelled
        wait produced) is raised at each suspended C{yield}, innermost first,
        so C{finally} and C{except CancelledError} blocks run inner to outer.
        A body may catch it and still C{yield} for asynchronous clean-up;
        uncaught, the Coroutine fails with L{CancelledError}.

        Because L{CancelledError} derives from L{Exception}, a broad handler
        catches it too; let it through explicitly::

            try:
                reply = yield backend.lookup(key)
            except CancelledError:
                raise
            except Exception:
                reply = b"ERR backend unavailable"

        The contract: idempotent (only the first call has an effect); a no-op
        on a finished Coroutine; allowed from inside the running body, where
        it takes effect at the body's next C{yield}. Cancelling a paused
        Coroutine drops its pauses first, so that clean-up can run. An
        exception raised by clean-up code becomes the Coroutine's failure; it
        never escapes from C{cancel()}.
        """
        state = self._state
        if state is _FINISHED:
            super().cancel()
            return
        if state is _ADOPTED:
            if self._owner is not None:
                self._owner.cancel()
            return
        if self._cancelled:
            return
        self._cancelled = True
        if state is _PENDING:
            self._unlink_pending()
            self._frames.pop().close()
            self._drop_pauses()
            self._finish(None, CancelledError())
            return
        self._cancel_due = True
        if state is _RUNNING:
            # Delivered at the body's next yield.
            return
        self._drop_pauses()
        if self._cancel_delivered():
            # Unpausing what we waited on resumed the body, which saw the
            # cancel.
            return
        held = self._held
        if held is not _NOTHING:
            self._held = _NOTHING
            self._resume(held)
            return
        waiting = self._waiting
        if waiting is None:
            return
        error: BaseException | None = None
        try:
            waiting.cancel()
        except BaseException as exc:
            error = exc
        if self._cancel_delivered():
            # It fired, and the body has already been resumed and told.
            return
        if error is None and isinstance(waiting, Coroutine) and not waiting.called:
            # It is running asynchronous clean-up; wait for it to finish.
            return
        # It did not fire (paused by someone else) or its canceller raised:
        # abandon it and raise in the body now.
        self._waiting = None
        if self._paused_wait is waiting:
            self._paused_wait = None
        self._cancel_due = False
        self._state = _RUNNING
        self._run(None, error if error is not None else CancelledError())

    def _cancel_delivered(self) -> bool:
        """
        Say whether the body has been resumed since C{cancel()} asked for it.

        (A method rather than a field test so that type checkers do not
        assume the field kept the value C{cancel()} just gave it.)
        """
        return not self._cancel_due

    def _drop_pauses(self) -> None:
        """
        Undo every pause this Coroutine made, as C{cancel()} requires.
        """
        if self._pauses:
            self.paused -= self._pauses
            self._pauses = 0
        paused_wait = self._paused_wait
        if paused_wait is not None:
            self._paused_wait = None
            paused_wait.unpause()

    def pause(self) -> None:
        """
        Stop the body at its current wait until L{unpause} is called.

        Cascades: the Deferred the body is waiting on is paused too (a nested
        Coroutine stops at its next C{yield}). If what the body waits on
        fires meanwhile, the result is held until unpaused. Called from
        inside the running body, it takes effect at the next C{yield}. Pauses
        count: each needs its own L{unpause}. As for any Deferred, the
        Coroutine's own callbacks also wait while it is paused.
        """
        state = self._state
        if state is _ADOPTED and self._owner is not None:
            self._owner.pause()
            return
        if state is _FINISHED:
            super().pause()
            return
        self._pauses += 1
        super().pause()
        if self._pauses == 1 and state is _WAITING:
            waiting = self._waiting
            if waiting is not None and self._paused_wait is None:
                self._paused_wait = waiting
                waiting.pause()

    def unpause(self) -> None:
        """
        Undo one L{pause}; on the last one, the body goes on.

        Unpauses exactly the Deferred this Coroutine paused, then resumes the
        body with any result held meanwhile. An C{unpause()} without a
        matching C{pause()} does nothing.
        """
        state = self._state
        if state is _ADOPTED and self._owner is not None:
            self._owner.unpause()
            return
        if not self.paused:
            return
        if self._pauses:
            self._pauses -= 1
            if not self._pauses and state is not _FINISHED:
                self.paused -= 1
                paused_wait = self._paused_wait
                if paused_wait is not None:
                    self._paused_wait = None
                    # May fire our callback, which resumes the body.
                    paused_wait.unpause()
                elif self._held is not _NOTHING and self._state is _WAITING:
                    held = self._held
                    self._held = _NOTHING
                    self._resume(held)
                return
        super().unpause()

    # -- introspection ------------------------------------------------------

    def __repr__(self) -> str:
        """
        Name the function the body runs now, where, and what it waits on.
        """
        state = self._state
        if state is _FINISHED:
            return super().__repr__()
        parts = [f"<Coroutine at 0x{id(self):x} {state.value}"]
        if state is _ADOPTED:
            parts.append(f" into {self._owner!r}")
        elif self._frames:
            parts.append(f" in {_describe(self._frames[-1])}")
            if len(self._frames) > 1:
                parts.append(f" (called from {_name(self._frames[0])}())")
        if self._waiting is not None:
            parts.append(f" waiting on {self._waiting!r}")
        if self._pauses:
            parts.append(f" paused({self._pauses})")
        if self._cancelled:
            parts.append(" cancelled")
        parts.append(">")
        return "".join(parts)

    __str__ = __repr__


@overload
def coroutine(
    function: Callable[_P, Generator[Any, Any, _T]],
) -> Callable[_P, Coroutine[_T]]: ...


@overload
def coroutine(
    function: Callable[_P, _AsyncBody[Any, Any, _T]],
) -> Callable[_P, Coroutine[_T]]: ...


def coroutine(function: Callable[_P, Any]) -> Callable[_P, Coroutine[Any]]:
    """
    Decorate a generator function or C{async def} so that calling it runs it
    as a L{Coroutine}.

    Called from outside any coroutine body, the body starts at once and runs
    to its first wait; called from inside a body, it starts when that body
    next yields, returns or makes a tail call (see L{Coroutine}).

    Example::

        @coroutine
        def relay(source, sink):
            try:
                while True:
                    item = yield source.next_item()
                    yield sink.put(item)
            finally:
                source.close()

    Cancelling the returned Coroutine cancels the pending C{next_item()} or
    C{put()}, then raises L{CancelledError} at that C{yield}, so the
    C{finally} block runs.

    @param function: A generator function or C{async def} function.
    @return: A function with the same signature returning a L{Coroutine}.
    @raise TypeError: When the decorated function is called, if it returned
        something other than a generator or coroutine object.
    """
    if not callable(function):
        raise TypeError(f"@coroutine needs a function, not {function!r}")

    @functools.wraps(function)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> Coroutine[Any]:
        body = function(*args, **kwargs)
        if not isinstance(body, _BODY_TYPES):
            raise TypeError(
                f"@coroutine function {function.__qualname__}() returned "
                f"{type(body).__name__!r}; it must be a generator function "
                f"(with a yield) or an async def"
            )
        return Coroutine(body)

    return run


def _check_noreturn(
    engine: Coroutine[Any] | None, next_step: object, frame: types.FrameType | None
) -> None:
    """
    Validate a L{noreturn} call that is not the common case, raising the
    error that explains what is wrong (or returning if it is fine after all,
    as for a plain helper function called by the body).
    """
    if not isinstance(next_step, (*_BODY_TYPES, Deferred)):
        raise TypeError(
            f"noreturn() takes a generator, a coroutine object or a Deferred, "
            f"not {type(next_step).__name__!r}; call the next state's "
            f"function and pass what it returns"
        )
    if engine is None or engine._state is not _RUNNING or not engine._frames:
        _close_target(next_step)
        raise NoreturnOutsideCoroutineError(
            "noreturn() was called outside a coroutine body; it can only end "
            "a body run by @coroutine or Coroutine()"
        )
    if engine._tail_target is not None:
        _close_target(next_step)
        raise TailCallSwallowedError(
            "noreturn() was called again after an earlier tail call in this "
            "body was caught and swallowed; re-raise TailCall in bare "
            "'except:' / 'except BaseException:' clauses"
        )
    top = _frame_of(engine._frames[-1])
    while frame is not None and frame is not top:
        if frame.f_code.co_flags & _SUSPENDABLE_CODE:
            _close_target(next_step)
            raise NoreturnOutsideCoroutineError(
                f"noreturn() was called in {frame.f_code.co_name}(), which "
                f"runs inside {_name(engine._frames[-1])}() through "
                f"'yield from' or 'await' rather than as a frame of the "
                f"engine; write 'yield {frame.f_code.co_name}(...)' in a "
                f"generator body, or decorate it with @coroutine"
            )
        frame = frame.f_back
    if frame is None:
        _close_target(next_step)
        raise NoreturnOutsideCoroutineError(
            "noreturn() was called outside the running coroutine body (from "
            "a callback it triggered?); call it in the body itself"
        )


def noreturn(next_step: _Body | Deferred[Any]) -> NoReturn:
    """
    End the current coroutine body at once and continue with C{next_step}: a
    tail call.

    The current function's C{finally} blocks run and its frame and locals are
    released before C{next_step} starts; the L{Coroutine} that was running it
    fires with C{next_step}'s eventual result. A chain of any length of such
    hand-overs runs in constant stack and memory::

        def greeting(self):
            name = yield self.read_line()
            noreturn(self.chatting(name))   # greeting's frame is gone

    @param next_step: A generator or C{async def} coroutine object (call the
        function, do not decorate it), a Coroutine (a pending one is adopted
        and runs on this stack), or any Deferred (its result becomes this
        body's result).
    @raise TailCall: Always; the engine catches it. Do not catch it yourself
        (it is a L{BaseException} for that reason).
    @raise NoreturnOutsideCoroutineError: If called outside a coroutine body,
        or inside a generator or coroutine that the body runs by itself
        (C{yield from}, C{await}) rather than through the engine.
    @raise TypeError: If C{next_step} is none of the above.
    """
    # Not None when the check below passes: every _run sets it before it
    # resumes a body, and _check_noreturn raises if it is None.
    engine: Coroutine[Any] = _running  # type: ignore[assignment]
    # The common case costs a few identity checks. The caller's caller is
    # an engine's trampoline itself: the caller is the body that the
    # innermost _run (whose Coroutine is _running, and RUNNING while it
    # resumes a body) resumed, not a frame run through 'yield from'/'await'
    # or a helper. Cheaper than comparing frames with the innermost body's;
    # _check_noreturn is exact.
    if (
        (
            type(next_step) is not _GENERATOR
            and type(next_step) not in _STEP_TYPES
            and not isinstance(next_step, Deferred)
        )
        or _getframe(2).f_code is not _RUN_CODE
        or engine._tail_target is not None
    ):
        _check_noreturn(engine, next_step, sys._getframe(1))
    engine._tail_target = next_step
    raise _TailCallSignal


# The references to a Coroutine that _adopt counts when nothing else holds
# it: _run's `target`, _adopt's `child` and getrefcount's own argument.
_ADOPTED_UNHELD_REFS = 3


def _no_refcount(obj: object) -> int:
    """
    Stand in for C{sys.getrefcount} where there is none (not CPython):
    always "held", so every adopted Coroutine gets its alias entry.
    """
    return sys.maxsize


_getrefcount: Callable[[object], int] = getattr(sys, "getrefcount", _no_refcount)

# What noreturn()'s fast path compares its caller's caller with: a body that
# the trampoline resumed directly. Every other resumption (Failure's
# throwExceptionIntoGenerator, close() through _close_target, 'yield from')
# takes the exact check in _check_noreturn.
_RUN_CODE = Coroutine._run.__code__
_getframe = sys._getframe
