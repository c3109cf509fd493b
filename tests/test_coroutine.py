"""
Tests for L{txstateproto._coroutine}: the engine, tail calls, and the
cancel/pause cascade.
"""

from __future__ import annotations

import gc
import sys
import traceback
import tracemalloc
import weakref
from collections.abc import Generator
from typing import Any

from twisted.internet import task
from twisted.internet.defer import (
    AlreadyCalledError,
    CancelledError,
    Deferred,
    fail,
    inlineCallbacks,
    succeed,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txstateproto import (
    Coroutine,
    NoreturnOutsideCoroutineError,
    TailCall,
    TailCallSwallowedError,
    coroutine,
    noreturn,
)
from txstateproto._coroutine import DirectDeferred, FiredDeferred


class Big:
    """
    A stand-in for a large per-state object whose release we can observe.
    """


def sleep(clock: task.Clock, seconds: float) -> Deferred[None]:
    """
    A cancellable sleep on a test clock.
    """
    return task.deferLater(clock, seconds, lambda: None)


class BasicsTests(SynchronousTestCase):
    """
    A Coroutine runs its body and behaves as a Deferred.
    """

    def test_is_a_deferred_with_the_return_value(self) -> None:
        """
        A decorated generator returns a Coroutine firing with its return value.
        """

        @coroutine
        def body() -> Generator[Any, Any, int]:
            yield None
            return 42

        c = body()
        self.assertIsInstance(c, Coroutine)
        self.assertIsInstance(c, Deferred)
        self.assertEqual(self.successResultOf(c), 42)

    def test_starts_at_once(self) -> None:
        """
        Calling a decorated function outside any body runs it to its first wait.
        """
        events = []

        @coroutine
        def body() -> Generator[Any, Any, None]:
            events.append("started")
            yield Deferred()

        c = body()
        self.assertEqual(events, ["started"])
        self.assertNoResult(c)

    def test_yield_gives_result_and_raises_failure(self) -> None:
        """
        C{yield d} gives d's result, and raises d's failure at the yield.
        """
        d1: Deferred[int] = Deferred()
        d2: Deferred[int] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, tuple[int, str]]:
            x = yield d1
            try:
                yield d2
            except ZeroDivisionError as e:
                return x, str(e)
            return x, "no error"

        c = body()
        d1.callback(1)
        d2.errback(ZeroDivisionError("boom"))
        self.assertEqual(self.successResultOf(c), (1, "boom"))

    def test_async_def(self) -> None:
        """
        An async def body awaits Deferreds and Coroutines and returns a value.
        """
        d: Deferred[int] = Deferred()
        e: Deferred[int] = Deferred()

        @coroutine
        async def inner() -> int:
            return (await e) + 1

        @coroutine
        async def outer() -> int:
            x = await d
            y = await inner()
            try:
                await fail(ValueError("v"))
            except ValueError:
                pass
            return x + y

        c = outer()
        d.callback(10)
        self.assertNoResult(c)
        e.callback(5)
        self.assertEqual(self.successResultOf(c), 16)

    def test_async_def_resumed_after_pause_gets_value(self) -> None:
        """
        An awaited result that arrives while paused reaches the await on unpause.
        """
        d: Deferred[int] = Deferred()

        @coroutine
        async def body() -> int:
            return await d

        c = body()
        c.pause()
        d.callback(7)
        self.assertNoResult(c)
        c.unpause()
        self.assertEqual(self.successResultOf(c), 7)

    def test_uncaught_exception_fails_with_failure(self) -> None:
        """
        An uncaught exception fails the Coroutine with a Failure of it.
        """

        @coroutine
        def body() -> Generator[Any, Any, None]:
            yield None
            raise KeyError("k")

        f = self.failureResultOf(body(), KeyError)
        self.assertIsInstance(f, Failure)

    def test_traceback_has_user_frames(self) -> None:
        """
        The failure's traceback shows the user's functions, not only the engine.
        """

        def inner_helper() -> Generator[Any, Any, None]:
            yield succeed(None)
            raise ValueError("deep")

        @coroutine
        def outer_body() -> Generator[Any, Any, None]:
            yield inner_helper()

        f = self.failureResultOf(outer_body(), ValueError)
        text = "".join(traceback.format_tb(f.getTracebackObject()))
        self.assertIn("inner_helper", text)
        self.assertIn("outer_body", text)

    def test_nested_generator_runs_as_a_call(self) -> None:
        """
        Yielding a plain generator runs it and gives its return value.
        """

        def add_one(d: Deferred[int]) -> Generator[Any, Any, int]:
            x = yield d
            return x + 1

        d: Deferred[int] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, int]:
            y = yield add_one(d)
            return y * 2

        c = body()
        d.callback(1)
        self.assertEqual(self.successResultOf(c), 4)

    def test_yield_coroutine_waits_for_it(self) -> None:
        """
        Yielding a Coroutine waits for its result.
        """
        d: Deferred[str] = Deferred()

        @coroutine
        def child() -> Generator[Any, Any, str]:
            return (yield d) + "!"

        @coroutine
        def parent() -> Generator[Any, Any, str]:
            return (yield child())

        c = parent()
        d.callback("hi")
        self.assertEqual(self.successResultOf(c), "hi!")

    def test_yield_none_is_a_checkpoint(self) -> None:
        """
        C{yield None} resumes at once with None.
        """

        @coroutine
        def body() -> Generator[Any, Any, list[Any]]:
            return [(yield None), (yield)]

        self.assertEqual(self.successResultOf(body()), [None, None])

    def test_yield_other_raises_type_error(self) -> None:
        """
        Yielding something that is not waitable raises TypeError at the yield.
        """

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                yield 5
            except TypeError as e:
                return str(e)
            return "no error"

        self.assertIn("not 'int'", self.successResultOf(body()))

    def test_decorating_a_plain_function_fails_on_call(self) -> None:
        """
        A decorated function that returns no generator raises TypeError.
        """

        @coroutine
        def plain() -> int:
            return 1

        with self.assertRaises(TypeError) as cm:
            plain()
        self.assertIn("plain()", str(cm.exception))

    def test_coroutine_needs_a_body(self) -> None:
        """
        C{Coroutine()} refuses a function or any non-body object.
        """

        def gen() -> Generator[Any, Any, None]:
            yield None

        with self.assertRaises(TypeError):
            Coroutine(gen)  # type: ignore[arg-type]

    def test_million_fired_deferreds_constant_stack(self) -> None:
        """
        Yielding 1,000,000 already-fired Deferreds in a row does not recurse.
        """

        @coroutine
        def body() -> Generator[Any, Any, int]:
            total = 0
            for i in range(1_000_000):
                total += yield succeed(i)
            return total

        self.assertEqual(self.successResultOf(body()), sum(range(1_000_000)))

    def test_fired_failure_is_consumed(self) -> None:
        """
        A failure taken from an already-fired Deferred is not left unhandled.
        """
        d: Deferred[None] = fail(ValueError("x"))

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                yield d
            except ValueError:
                return "caught"
            return "no"

        self.assertEqual(self.successResultOf(body()), "caught")
        self.assertIsNone(d.result)

    def test_pending_when_called_inside_a_body(self) -> None:
        """
        A coroutine called inside a body starts when that body next yields.
        """
        events = []

        @coroutine
        def child() -> Generator[Any, Any, None]:
            events.append("child")
            yield None

        @coroutine
        def parent() -> Generator[Any, Any, None]:
            c = child()
            events.append("parent")
            yield None
            events.append("after yield")
            yield c

        self.successResultOf(parent())
        self.assertEqual(events, ["parent", "child", "after yield"])


class TailCallTests(SynchronousTestCase):
    """
    C{noreturn} hands over to the next step and frees the old frame at once.
    """

    def test_factorial_by_tail_calls(self) -> None:
        """
        10,000-deep recursion by tail calls works at the default recursion limit.
        """

        def fact(n: int, result: int = 1) -> Generator[Any, Any, int]:
            if n <= 1:
                return result
            noreturn(fact(n - 1, n * result))
            yield  # make it a generator

        self.assertEqual(sys.getrecursionlimit(), 1000)
        expected = 1
        for i in range(2, 10_001):
            expected *= i
        self.assertEqual(coroutine(fact)(10000).result, expected)

    def test_million_sync_tail_calls_constant_memory(self) -> None:
        """
        1,000,000 synchronous tail calls grow traced memory by under 1 MB.
        """

        def step(n: int) -> Generator[Any, Any, str]:
            if n == 0:
                return "done"
            noreturn(step(n - 1))
            yield

        tracemalloc.start()
        try:
            c = Coroutine(step(1_000_000))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(self.successResultOf(c), "done")
        self.assertLess(peak, 1_000_000)

    def test_million_waiting_tail_calls_constant_memory(self) -> None:
        """
        1,000,000 tail calls that each wait on a Deferred stay in constant memory.
        """
        waits: list[Deferred[None]] = []

        def step(n: int) -> Generator[Any, Any, str]:
            if n == 0:
                return "done"
            d: Deferred[None] = Deferred()
            waits.append(d)
            yield d
            noreturn(step(n - 1))

        tracemalloc.start()
        try:
            c = Coroutine(step(1_000_000))
            while waits:
                waits.pop().callback(None)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(self.successResultOf(c), "done")
        self.assertLess(peak, 1_000_000)

    def test_old_state_locals_freed_at_tail_call(self) -> None:
        """
        A state's big local is freed before the next state's first line runs.
        """
        seen = []

        def first() -> Generator[Any, Any, str]:
            big = Big()
            ref = weakref.ref(big)
            yield succeed(None)
            noreturn(second(ref))

        def second(ref: weakref.ref[Big]) -> Generator[Any, Any, str]:
            seen.append(ref() is None)
            yield None
            return "ok"

        gc.disable()
        try:
            self.assertEqual(self.successResultOf(Coroutine(first())), "ok")
        finally:
            gc.enable()
        self.assertEqual(seen, [True])

    def test_finally_runs_before_next_state(self) -> None:
        """
        The old state's finally block runs before the next state starts.
        """
        events = []

        def a() -> Generator[Any, Any, None]:
            try:
                yield None
                noreturn(b())
            finally:
                events.append("a finally")

        def b() -> Generator[Any, Any, str]:
            events.append("b starts")
            yield None
            return "b"

        self.assertEqual(self.successResultOf(Coroutine(a())), "b")
        self.assertEqual(events, ["a finally", "b starts"])

    def test_tail_call_into_async_def(self) -> None:
        """
        An async def coroutine object is a valid tail-call target.
        """
        d: Deferred[int] = Deferred()

        async def after() -> int:
            return (await d) * 3

        @coroutine
        def before() -> Generator[Any, Any, int]:
            yield None
            noreturn(after())

        c = before()
        d.callback(2)
        self.assertEqual(self.successResultOf(c), 6)

    def test_async_def_body_tail_calls(self) -> None:
        """
        An async def body can itself make a tail call.
        """

        async def count(n: int) -> int:
            if n == 0:
                return 99
            noreturn(count(n - 1))

        self.assertEqual(self.successResultOf(Coroutine(count(5000))), 99)

    def test_tail_call_into_deferred(self) -> None:
        """
        noreturn(d) makes d's result the Coroutine's result.
        """
        d: Deferred[str] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, str]:
            yield None
            noreturn(d)

        c = body()
        self.assertNoResult(c)
        d.callback("later")
        self.assertEqual(self.successResultOf(c), "later")

    def test_tail_call_in_nested_frame_replaces_only_it(self) -> None:
        """
        A tail call in a nested generator ends that call, not its caller.
        """

        def sub() -> Generator[Any, Any, str]:
            yield None
            noreturn(sub2())

        def sub2() -> Generator[Any, Any, str]:
            yield None
            return "sub2"

        @coroutine
        def body() -> Generator[Any, Any, str]:
            x = yield sub()
            return x + " then body"

        self.assertEqual(self.successResultOf(body()), "sub2 then body")

    def test_decorated_tail_calls_sync(self) -> None:
        """
        100,000 tail calls into decorated coroutines run flat.
        """

        @coroutine
        def step(n: int) -> Generator[Any, Any, str]:
            if n == 0:
                return "done"
            noreturn(step(n - 1))
            yield

        self.assertEqual(self.successResultOf(step(100_000)), "done")

    def test_decorated_tail_calls_async(self) -> None:
        """
        100,000 waiting tail calls into decorated coroutines fire without overflow.
        """
        clock = task.Clock()

        @coroutine
        def step(n: int) -> Generator[Any, Any, str]:
            if n == 0:
                return "done"
            yield sleep(clock, 0)
            noreturn(step(n - 1))

        c = step(100_000)
        for _ in range(100_001):
            clock.advance(0)
        self.assertEqual(self.successResultOf(c), "done")

    def test_adopted_coroutine_still_fires(self) -> None:
        """
        A pending Coroutine taken over by a tail call fires with the result.
        """
        held = []

        @coroutine
        def target() -> Generator[Any, Any, str]:
            yield None
            return "t"

        @coroutine
        def body() -> Generator[Any, Any, str]:
            t = target()
            held.append(t)
            yield None
            noreturn(t)

        @coroutine
        def body2() -> Generator[Any, Any, str]:
            t = target()
            held.append(t)
            noreturn(t)
            yield

        self.assertEqual(self.successResultOf(body()), "t")
        self.assertEqual(self.successResultOf(body2()), "t")
        self.assertEqual(self.successResultOf(held[1]), "t")

    def test_adopted_coroutine_alias_only_when_held(self) -> None:
        """
        A pending Coroutine adopted by a tail call gets an alias entry (so
        that it fires with the result) only if something else holds it; one
        held by no one leaves no entry behind, and both chains fire.
        """
        gate: Deferred[str] = Deferred()
        held: list[Coroutine[str]] = []

        @coroutine
        def unheld(n: int) -> Generator[Any, Any, str]:
            if n:
                noreturn(unheld(n - 1))
            return (yield gate)

        @coroutine
        def kept(n: int) -> Generator[Any, Any, str]:
            if n:
                child = kept(n - 1)
                held.append(child)
                noreturn(child)
            return (yield gate)

        first = unheld(3)
        second = kept(2)
        self.assertIsNone(first._aliases)
        self.assertIsNotNone(second._aliases)
        self.assertEqual(len(second._aliases or ()), 2)
        gate.callback("v")
        self.assertEqual(self.successResultOf(first), "v")
        self.assertEqual(self.successResultOf(second), "v")
        self.assertEqual([self.successResultOf(c) for c in held], ["v", "v"])

    def test_tail_call_into_started_coroutine(self) -> None:
        """
        A tail call into an already running Coroutine waits for it.
        """
        d: Deferred[int] = Deferred()

        @coroutine
        def other() -> Generator[Any, Any, int]:
            return (yield d)

        running = other()

        @coroutine
        def body() -> Generator[Any, Any, int]:
            yield None
            noreturn(running)

        c = body()
        d.callback(3)
        self.assertEqual(self.successResultOf(c), 3)

    def test_tail_call_not_caught_by_except_exception(self) -> None:
        """
        C{except Exception:} does not catch the tail-call signal.
        """

        def nxt() -> Generator[Any, Any, str]:
            yield None
            return "next"

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                noreturn(nxt())
            except Exception:
                return "caught"
            yield

        self.assertEqual(self.successResultOf(body()), "next")

    def test_swallowed_tail_call_then_yield(self) -> None:
        """
        A bare except that swallows the signal fails the Coroutine at the yield.
        """
        events = []

        def nxt() -> Generator[Any, Any, str]:
            events.append("nxt ran")
            yield None
            return "next"

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                noreturn(nxt())
            except:  # noqa: E722
                pass
            yield None
            events.append("went on")
            return "wrong"

        f = self.failureResultOf(body(), TailCallSwallowedError)
        self.assertIn("body() caught the TailCall", str(f.value))
        self.assertEqual(events, [])

    def test_swallowed_tail_call_then_return(self) -> None:
        """
        A bare except that swallows the signal fails the Coroutine at the return.
        """

        @coroutine
        def body() -> Generator[Any, Any, str]:
            yield None
            try:
                noreturn(succeed(1))
            except BaseException:
                pass
            return "wrong"

        self.failureResultOf(body(), TailCallSwallowedError)

    def test_fired_deferred_after_catching_a_thrown_failure(self) -> None:
        """
        A body that catches a failure thrown into it and then yields an
        already-fired Deferred gets that Deferred's result, not the old
        failure again.
        """
        d: Deferred[int] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, tuple[str, int]]:
            try:
                yield d
            except ValueError:
                caught = "caught"
            after = yield succeed(2)
            return (caught, after)

        c = body()
        d.errback(ValueError("boom"))
        self.assertEqual(self.successResultOf(c), ("caught", 2))

    def test_swallowed_tail_call_target_is_freed(self) -> None:
        """
        The target of a swallowed tail call is closed and not kept alive by
        the engine once the Coroutine has failed.
        """

        def nxt() -> Generator[Any, Any, str]:
            yield None
            return "next"

        targets = [nxt()]
        ref = weakref.ref(targets[0])

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                noreturn(targets.pop())
            except BaseException:
                pass
            yield None
            return "wrong"

        d = body()
        self.failureResultOf(d, TailCallSwallowedError)
        gc.collect()
        self.assertIsNone(ref())

    def test_tail_call_in_finally_of_a_state_ending_by_tail_call(self) -> None:
        """
        A C{finally} block of a state that is ending by a tail call may run
        another coroutine that makes tail calls of its own; both chains
        reach their own targets.
        """

        def count(n: int) -> Generator[Any, Any, int]:
            if n:
                noreturn(count(n - 1))
            return n * 10 + 7
            yield

        inner: list[Coroutine[int]] = []

        def second() -> Generator[Any, Any, str]:
            yield None
            return "second"

        @coroutine
        def first() -> Generator[Any, Any, str]:
            yield None
            try:
                noreturn(second())
            finally:
                inner.append(Coroutine(count(3)))

        self.assertEqual(self.successResultOf(first()), "second")
        self.assertEqual(self.successResultOf(inner[0]), 7)

    def test_noreturn_in_a_finally_run_by_close_is_refused(self) -> None:
        """
        A state that swallowed a tail call is closed by the engine; a
        C{noreturn} in its C{finally} then is not taken for a tail call of
        the body: the Coroutine fails with the swallowed-tail-call error and
        the second target is closed, never run.
        """
        ran: list[str] = []

        def never() -> Generator[Any, Any, None]:
            ran.append("never")
            yield None

        @coroutine
        def body() -> Generator[Any, Any, None]:
            try:
                try:
                    noreturn(succeed(1))
                except BaseException:
                    pass
                yield None
            finally:
                try:
                    noreturn(never())
                except NoreturnOutsideCoroutineError:
                    ran.append("refused")

        self.failureResultOf(body(), TailCallSwallowedError)
        self.assertEqual(ran, ["refused"])

    def test_noreturn_outside_coroutine(self) -> None:
        """
        noreturn outside any body raises a clear error.
        """

        def gen() -> Generator[Any, Any, None]:
            yield None

        with self.assertRaises(NoreturnOutsideCoroutineError) as cm:
            noreturn(gen())
        self.assertIn("outside a coroutine body", str(cm.exception))

    def test_noreturn_in_yield_from_subgenerator(self) -> None:
        """
        noreturn in a generator run by C{yield from} raises a clear error.
        """

        def sub() -> Generator[Any, Any, None]:
            noreturn(succeed(1))
            yield

        @coroutine
        def body() -> Generator[Any, Any, None]:
            yield from sub()

        f = self.failureResultOf(body(), NoreturnOutsideCoroutineError)
        self.assertIn("sub()", str(f.value))

    def test_noreturn_from_plain_helper(self) -> None:
        """
        noreturn may be called by a plain function the body calls.
        """

        def nxt() -> Generator[Any, Any, str]:
            yield None
            return "next"

        def switch() -> None:
            noreturn(nxt())

        @coroutine
        def body() -> Generator[Any, Any, str]:
            yield None
            switch()
            return "not reached"

        self.assertEqual(self.successResultOf(body()), "next")

    def test_noreturn_bad_target(self) -> None:
        """
        noreturn refuses things that are not a step.
        """

        @coroutine
        def body() -> Generator[Any, Any, str]:
            yield None
            try:
                noreturn(5)  # type: ignore[arg-type]
            except TypeError as e:
                return str(e)
            return "no"

        self.assertIn("not 'int'", self.successResultOf(body()))

    def test_tail_call_signal_has_no_public_constructor(self) -> None:
        """
        TailCall cannot be constructed by hand.
        """
        self.assertTrue(issubclass(TailCall, BaseException))
        self.assertFalse(issubclass(TailCall, Exception))
        with self.assertRaises(TypeError):
            TailCall()

    def test_tail_call_signal_raised_again_is_refused(self) -> None:
        """
        A TailCall caught on its way out and raised again later, by hand,
        is not a tail call: the engine has no target for it and fails the
        Coroutine with L{NoreturnOutsideCoroutineError}, thrown into the
        frame below if there is one.
        """
        saved: list[BaseException] = []

        def first() -> Generator[Any, Any, str]:
            yield None
            try:
                noreturn(second())
            except TailCall as signal:
                saved.append(signal)
                raise

        def second() -> Generator[Any, Any, str]:
            yield None
            raise saved[0]

        def outer() -> Generator[Any, Any, str]:
            try:
                yield first()
            except NoreturnOutsideCoroutineError as e:
                return str(e)
            return "no"

        self.assertIn("did not just raise", self.successResultOf(Coroutine(outer())))
        failure = self.failureResultOf(
            Coroutine(first()), NoreturnOutsideCoroutineError
        )
        self.assertIn("second() raised a TailCall", str(failure.value))

    def test_old_state_locals_freed_at_tail_call_in_except(self) -> None:
        """
        A tail call made while handling an exception frees the old state's
        locals before the next state runs, though the signal's context (the
        exception handled) refers to that state's frame.
        """
        seen = []

        def first() -> Generator[Any, Any, str]:
            big = Big()
            ref = weakref.ref(big)
            yield succeed(None)
            try:
                raise ValueError("handled")
            except ValueError:
                noreturn(second(ref))

        def second(ref: weakref.ref[Big]) -> Generator[Any, Any, str]:
            seen.append(ref() is None)
            yield None
            return "ok"

        gc.disable()
        try:
            self.assertEqual(self.successResultOf(Coroutine(first())), "ok")
        finally:
            gc.enable()
        self.assertEqual(seen, [True])

    def test_return_value_from_generator(self) -> None:
        """
        C{return value} in a generator body fires with that value, not None.
        """

        def body() -> Generator[Any, Any, str]:
            yield succeed(None)
            return "value"

        self.assertEqual(self.successResultOf(Coroutine(body())), "value")

    def test_returning_a_deferred_waits_for_it(self) -> None:
        """
        Returning a Deferred from the outermost body waits for it.
        """
        d: Deferred[int] = Deferred()

        def body() -> Generator[Any, Any, Deferred[int]]:
            yield None
            return d

        c = Coroutine(body())
        d.callback(4)
        self.assertEqual(self.successResultOf(c), 4)


class CancelTests(SynchronousTestCase):
    """
    C{cancel()} cascades inward and unwinds outward.
    """

    def test_seed_scenario_1(self) -> None:
        """
        Two messages processed, then the canceller, then the finally block.
        """
        clock = task.Clock()
        events: list[str] = []

        def get_message() -> Deferred[str]:
            def canceller(_: Deferred[str]) -> None:
                events.append("cancelled getting a message")
                heavylifting.cancel()

            d: Deferred[str] = Deferred(canceller)
            heavylifting = clock.callLater(1.0, d.callback, "dummy-message")
            return d

        @coroutine
        def some_process() -> Generator[Any, Any, None]:
            try:
                while True:
                    msg = yield get_message()
                    events.append(f"processing message: {msg}")
            finally:
                events.append("coroutine stopped, cleaning up")

        proc = some_process()
        clock.callLater(3, proc.cancel)
        clock.pump([1, 1, 1, 1])
        self.failureResultOf(proc, CancelledError)
        self.assertEqual(
            events,
            [
                "processing message: dummy-message",
                "processing message: dummy-message",
                "cancelled getting a message",
                "coroutine stopped, cleaning up",
            ],
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cascade_three_levels(self) -> None:
        """
        The innermost canceller runs first, then finally blocks inner to outer.
        """
        events: list[str] = []
        d: Deferred[None] = Deferred(lambda _: events.append("canceller"))

        @coroutine
        def level3() -> Generator[Any, Any, None]:
            try:
                yield d
            finally:
                events.append("level3")

        def level2() -> Generator[Any, Any, None]:  # a plain nested generator
            try:
                yield level3()
            finally:
                events.append("level2")

        @coroutine
        def level1() -> Generator[Any, Any, None]:
            try:
                yield level2()
            finally:
                events.append("level1")

        c = level1()
        c.cancel()
        self.failureResultOf(c, CancelledError)
        self.assertEqual(events, ["canceller", "level3", "level2", "level1"])

    def test_except_cancelled_and_async_cleanup(self) -> None:
        """
        A body may catch CancelledError and still yield for asynchronous clean-up.
        """
        clock = task.Clock()
        events: list[str] = []

        @coroutine
        def inner() -> Generator[Any, Any, None]:
            try:
                yield Deferred()
            except CancelledError:
                events.append("inner caught")
                yield sleep(clock, 1)
                events.append("inner cleaned")
                raise

        @coroutine
        def outer() -> Generator[Any, Any, None]:
            try:
                yield inner()
            finally:
                events.append("outer finally")

        c = outer()
        c.cancel()
        self.assertEqual(events, ["inner caught"])
        self.assertNoResult(c)
        clock.advance(1)
        self.assertEqual(events, ["inner caught", "inner cleaned", "outer finally"])
        self.failureResultOf(c, CancelledError)

    def test_idempotent_and_noop_when_finished(self) -> None:
        """
        A second cancel does nothing, and cancelling a finished Coroutine too.
        """
        events: list[str] = []
        clock = task.Clock()

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                yield Deferred()
            except CancelledError:
                events.append("caught")
                yield sleep(clock, 1)
                return "cleaned"
            return "no"

        c = body()
        c.cancel()
        c.cancel()
        self.assertEqual(events, ["caught"])
        clock.advance(1)
        c.cancel()
        self.assertEqual(self.successResultOf(c), "cleaned")

    def test_cancel_from_inside_body(self) -> None:
        """
        Cancel from inside the running body takes effect at its next yield.
        """
        events: list[str] = []
        holder: list[Coroutine[None]] = []
        d: Deferred[None] = Deferred(lambda _: events.append("canceller"))

        @coroutine
        def body() -> Generator[Any, Any, None]:
            yield None
            holder[0].cancel()
            events.append("still running")
            try:
                yield d
            finally:
                events.append("finally")

        @coroutine
        def starter() -> Generator[Any, Any, None]:
            c = body()
            holder.append(c)
            yield c

        self.failureResultOf(starter(), CancelledError)
        self.assertEqual(events, ["still running", "canceller", "finally"])

    def test_exception_in_finally_becomes_failure(self) -> None:
        """
        An exception raised by clean-up code fails the Coroutine; cancel() returns.
        """

        @coroutine
        def body() -> Generator[Any, Any, None]:
            try:
                yield Deferred()
            finally:
                raise RuntimeError("cleanup broke")

        c = body()
        c.cancel()  # must not raise
        f = self.failureResultOf(c, RuntimeError)
        self.assertIsInstance(f, Failure)

    def test_canceller_that_calls_back(self) -> None:
        """
        A canceller that calls back still raises CancelledError in the body.
        """
        events: list[str] = []
        d1: Deferred[str] = Deferred(lambda d: d.callback("called back anyway"))
        d2: Deferred[str] = Deferred(lambda _: events.append("second cancelled"))

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                x = yield d1
                events.append(f"ran on with {x}")
            except CancelledError:
                events.append("cancelled")
            yield d2
            return "end"

        c = body()
        c.cancel()
        self.assertEqual(events, ["cancelled"])
        # A cancel is delivered once; the clean-up wait is not cancelled again.
        self.assertNoResult(c)
        d2.callback("x")
        self.assertEqual(self.successResultOf(c), "end")

    def test_cancel_after_tail_call_into_generator(self) -> None:
        """
        After noreturn(gen), cancel reaches the new state's wait and finally.
        """
        events: list[str] = []

        def old() -> Generator[Any, Any, None]:
            try:
                yield None
                noreturn(new())
            finally:
                events.append("old finally")

        def new() -> Generator[Any, Any, None]:
            try:
                yield Deferred(lambda _: events.append("new wait cancelled"))
            finally:
                events.append("new finally")

        c = Coroutine(old())
        c.cancel()
        self.failureResultOf(c, CancelledError)
        self.assertEqual(events, ["old finally", "new wait cancelled", "new finally"])

    def test_cancel_after_tail_call_into_deferred(self) -> None:
        """
        After noreturn(d), cancel cancels d and nothing calls back later.
        """
        events: list[str] = []
        d: Deferred[str] = Deferred(lambda _: events.append("d cancelled"))

        @coroutine
        def body() -> Generator[Any, Any, str]:
            yield None
            noreturn(d)

        c = body()
        c.cancel()
        self.failureResultOf(c, CancelledError)
        self.assertEqual(events, ["d cancelled"])
        self.assertTrue(d.called)

    def test_cancel_pending_coroutine(self) -> None:
        """
        Cancelling a Coroutine that has not started means it never starts.
        """
        events: list[str] = []
        holder: list[Coroutine[None]] = []

        @coroutine
        def child() -> Generator[Any, Any, None]:
            events.append("child ran")
            yield None

        @coroutine
        def parent() -> Generator[Any, Any, None]:
            c = child()
            holder.append(c)
            c.cancel()
            yield None

        self.successResultOf(parent())
        self.failureResultOf(holder[0], CancelledError)
        self.assertEqual(events, [])

    def test_cancel_when_wait_is_paused_elsewhere(self) -> None:
        """
        A wait that someone else paused does not stop the cancel from landing.
        """
        d: Deferred[None] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                yield d
            except CancelledError:
                return "cancelled"
            return "no"

        c = body()
        d.pause()
        c.cancel()
        self.assertEqual(self.successResultOf(c), "cancelled")
        d.unpause()

    def test_canceller_that_raises(self) -> None:
        """
        An exception from a canceller is raised in the body, not from cancel().
        """

        def canceller(_: Deferred[None]) -> None:
            raise OSError("canceller broke")

        @coroutine
        def body() -> Generator[Any, Any, None]:
            yield Deferred(canceller)

        c = body()
        c.cancel()
        self.failureResultOf(c, OSError)

    def test_cancel_paused_coroutine_runs_cleanup(self) -> None:
        """
        Cancelling a paused Coroutine unpauses it so its clean-up runs.
        """
        events: list[str] = []
        d: Deferred[None] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, None]:
            try:
                yield d
            finally:
                events.append("finally")

        c = body()
        c.pause()
        c.cancel()
        self.failureResultOf(c, CancelledError)
        self.assertEqual(events, ["finally"])
        self.assertEqual(d.paused, 0)
        c.unpause()  # no-op now


class PauseTests(SynchronousTestCase):
    """
    C{pause()}/C{unpause()} cascade and stay balanced.
    """

    def test_seed_scenario_2(self) -> None:
        """
        Pause at 3 s, unpause at 6 s, cancel at 9 s through three levels.
        """
        clock = task.Clock()
        printed: list[object] = []

        @coroutine
        def level3_process() -> Generator[Any, Any, None]:
            basetime = clock.seconds()
            try:
                while True:
                    printed.append(round(clock.seconds() - basetime))
                    yield sleep(clock, 1.0)
            finally:
                printed.append("level3")

        @coroutine
        def level2_process() -> Generator[Any, Any, None]:
            try:
                yield level3_process()
            finally:
                printed.append("level2")

        @coroutine
        def root_process() -> Generator[Any, Any, None]:
            try:
                yield level2_process()
            finally:
                printed.append("root")

        proc = root_process()
        clock.callLater(3, proc.pause)
        clock.callLater(6, proc.unpause)
        clock.callLater(9, proc.cancel)
        clock.pump([1] * 12)
        self.assertEqual(printed, [0, 1, 2, 6, 7, 8, "level3", "level2", "root"])
        self.failureResultOf(proc, CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_result_held_until_unpause(self) -> None:
        """
        A result that arrives while paused is delivered on unpause.
        """
        d: Deferred[int] = Deferred()
        events: list[int] = []

        @coroutine
        def body() -> Generator[Any, Any, None]:
            events.append((yield d))

        c = body()
        c.pause()
        d.callback(1)
        self.assertEqual(events, [])
        c.unpause()
        self.assertEqual(events, [1])
        self.successResultOf(c)

    def test_pause_counts(self) -> None:
        """
        Two pauses need two unpauses.
        """
        d: Deferred[int] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, int]:
            return (yield d)

        c = body()
        c.pause()
        c.pause()
        d.callback(1)
        c.unpause()
        self.assertNoResult(c)
        c.unpause()
        self.assertEqual(self.successResultOf(c), 1)

    def test_unpause_without_pause_is_noop(self) -> None:
        """
        unpause() with no pause neither stalls nor goes negative.
        """
        d: Deferred[int] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, int]:
            return (yield d)

        c = body()
        c.unpause()
        self.assertEqual(c.paused, 0)
        d.callback(5)
        self.assertEqual(self.successResultOf(c), 5)

    def test_pause_after_wait_fired_does_not_touch_stale(self) -> None:
        """
        Pausing after the awaited Deferred fired leaves that Deferred alone.
        """
        d1: Deferred[int] = Deferred()
        d2: Deferred[int] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, int]:
            a = yield d1
            b = yield d2
            return a + b

        c = body()
        d1.callback(1)
        c.pause()
        self.assertEqual(d1.paused, 0)
        self.assertEqual(d2.paused, 1)
        c.unpause()
        self.assertEqual(d2.paused, 0)
        d2.callback(2)
        self.assertEqual(self.successResultOf(c), 3)

    def test_shared_deferred_not_left_paused(self) -> None:
        """
        A Deferred two coroutines wait on is unpaused when the pauser unpauses.
        """
        shared: Deferred[int] = Deferred()

        @coroutine
        def waiter() -> Generator[Any, Any, int]:
            return (yield shared)

        a = waiter()
        b = waiter()
        a.pause()
        a.pause()
        self.assertEqual(shared.paused, 1)
        a.unpause()
        a.unpause()
        self.assertEqual(shared.paused, 0)
        shared.callback(3)
        self.assertEqual(self.successResultOf(b), 3)
        self.assertEqual(self.successResultOf(a), 3)

    def test_pause_cascades_to_nested(self) -> None:
        """
        Pausing the outer Coroutine stops a nested one at its next yield.
        """
        clock = task.Clock()
        ticks: list[float] = []

        @coroutine
        def inner() -> Generator[Any, Any, None]:
            while True:
                ticks.append(clock.seconds())
                yield sleep(clock, 1)

        @coroutine
        def outer() -> Generator[Any, Any, None]:
            yield inner()

        c = outer()
        clock.advance(1)
        c.pause()
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(ticks, [0, 1])
        c.unpause()
        self.assertEqual(ticks, [0, 1, 3])
        c.cancel()
        self.failureResultOf(c, CancelledError)

    def test_pause_from_inside_body(self) -> None:
        """
        pause() in the running body holds it at the next yield.
        """
        holder: list[Coroutine[str]] = []
        d: Deferred[str] = Deferred()

        @coroutine
        def body() -> Generator[Any, Any, str]:
            yield None
            holder[0].pause()
            return (yield d)

        @coroutine
        def starter() -> Generator[Any, Any, None]:
            holder.append(body())
            yield None

        self.successResultOf(starter())
        c = holder[0]
        d.callback("x")
        self.assertNoResult(c)
        c.unpause()
        self.assertEqual(self.successResultOf(c), "x")


class ReprTests(SynchronousTestCase):
    """
    C{repr(Coroutine)} says what it runs and waits on.
    """

    def test_names_current_state_and_wait(self) -> None:
        """
        After a tail call, repr names the new state and the Deferred it awaits.
        """
        wait: Deferred[None] = Deferred()

        def greeting() -> Generator[Any, Any, None]:
            yield None
            noreturn(chatting())

        def chatting() -> Generator[Any, Any, None]:
            yield wait

        c = Coroutine(greeting())
        text = repr(c)
        self.assertIn("chatting()", text)
        self.assertNotIn("greeting", text)
        self.assertIn("waiting on <Deferred", text)
        self.assertIn("test_coroutine.py:", text)
        c.pause()
        self.assertIn("paused(1)", repr(c))
        c.cancel()
        self.failureResultOf(c, CancelledError)

    def test_nested_names_innermost(self) -> None:
        """
        A nested call shows the innermost function and the outermost one.
        """

        def inner() -> Generator[Any, Any, None]:
            yield Deferred()

        def outer() -> Generator[Any, Any, None]:
            yield inner()

        c = Coroutine(outer())
        self.assertIn("inner()", repr(c))
        self.assertIn("called from", repr(c))
        self.assertIn("outer", repr(c))
        c.cancel()
        self.failureResultOf(c, CancelledError)


class InteropTests(SynchronousTestCase):
    """
    Coroutines and Twisted's own tools work together.
    """

    def test_inline_callbacks_waits_on_coroutine(self) -> None:
        """
        An inlineCallbacks function can yield a Coroutine and cancel it.
        """
        events: list[str] = []

        @coroutine
        def co() -> Generator[Any, Any, None]:
            try:
                yield Deferred()
            finally:
                events.append("co finally")

        @inlineCallbacks
        def ic() -> Generator[Any, Any, None]:
            yield co()

        d = ic()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(events, ["co finally"])

    def test_callback_returning_deferred_chains(self) -> None:
        """
        A callback on a finished Coroutine may return a Deferred (Twisted chaining).
        """

        @coroutine
        def co() -> Generator[Any, Any, int]:
            yield None
            return 1

        inner: Deferred[int] = Deferred()
        c = co()
        c.addCallback(lambda _: inner)
        self.assertNoResult(c)
        inner.callback(2)
        self.assertEqual(self.successResultOf(c), 2)
        self.assertEqual(c.paused, 0)


class DirectWaitTests(SynchronousTestCase):
    """
    A Coroutine waiting on a L{DirectDeferred} (a protocol's queued read, or
    another Coroutine) is resumed by a direct call, and the Deferred still
    behaves as any Deferred towards everyone else.
    """

    def test_resumed_without_a_callback(self) -> None:
        """
        The wait adds no callback; firing resumes the body, and the Deferred
        is left fired with the value the engine passes on.
        """
        d: DirectDeferred[str] = DirectDeferred()
        seen: list[object] = []

        @coroutine
        def body() -> Generator[Any, Any, str]:
            seen.append((yield d))
            return "done"

        c = body()
        self.assertEqual(d._callbacks, [])
        self.assertIs(d._waiter, c)
        d.callback("value")
        self.assertEqual(seen, ["value"])
        self.assertEqual(self.successResultOf(c), "done")
        self.assertTrue(d.called)
        self.assertIsNone(d._waiter)
        self.assertEqual(self.successResultOf(d), "value")

    def test_failure_is_raised_in_the_body_and_consumed(self) -> None:
        """
        C{errback} raises in the body; the Deferred keeps no unhandled
        failure (nothing is logged when it is collected).
        """
        d: DirectDeferred[str] = DirectDeferred()

        @coroutine
        def body() -> Generator[Any, Any, str]:
            try:
                yield d
            except ValueError as e:
                return f"caught {e}"
            return "not raised"

        c = body()
        d.errback(ValueError("boom"))
        self.assertEqual(self.successResultOf(c), "caught boom")
        # Left with None, not the Failure: nothing to log as unhandled.
        self.assertIsNone(self.successResultOf(d))

    def test_errback_without_argument_takes_the_current_exception(self) -> None:
        """
        As L{Deferred.errback}: C{errback()} inside an C{except} block fails
        with the exception being handled.
        """
        d: DirectDeferred[str] = DirectDeferred()
        raised: list[BaseException] = []

        @coroutine
        def body() -> Generator[Any, Any, None]:
            try:
                yield d
            except KeyError as e:
                raised.append(e)

        body()
        try:
            raise KeyError("k")
        except KeyError:
            d.errback()
        self.assertEqual([type(e) for e in raised], [KeyError])

    def test_callback_added_while_waiting_runs_after_the_body(self) -> None:
        """
        A callback added after the Coroutine began to wait runs after the
        body has been resumed, with the value the Coroutine passes on, as
        if the Coroutine's callback had been first in the chain.
        """
        d: DirectDeferred[str] = DirectDeferred()
        order: list[object] = []

        @coroutine
        def body() -> Generator[Any, Any, None]:
            order.append(("body", (yield d)))

        body()
        d.addCallback(lambda r: order.append(("callback", r)))
        d.callback("v")
        self.assertEqual(order, [("body", "v"), ("callback", "v")])

    def test_callback_added_before_the_wait_runs_first(self) -> None:
        """
        A Deferred that already has callbacks is waited on with a callback
        after them: they run first, and the body gets what they return.
        """
        d: DirectDeferred[str] = DirectDeferred()
        order: list[object] = []
        d.addCallback(lambda r: order.append(("callback", r)) or r + "!")

        @coroutine
        def body() -> Generator[Any, Any, None]:
            order.append(("body", (yield d)))

        body()
        self.assertIsNone(d._waiter)
        d.callback("v")
        self.assertEqual(order, [("callback", "v"), ("body", "v!")])

    def test_two_waiters_in_order(self) -> None:
        """
        Two Coroutines waiting on one Deferred both get its result, the
        first to wait first.
        """
        d: DirectDeferred[str] = DirectDeferred()
        order: list[object] = []

        @coroutine
        def body(name: str) -> Generator[Any, Any, None]:
            order.append((name, (yield d)))

        body("first")
        body("second")
        d.callback("v")
        self.assertEqual(order, [("first", "v"), ("second", "v")])

    def test_paused_deferred_holds_the_result(self) -> None:
        """
        Paused by someone else while waited on, the Deferred holds its
        result until unpaused, and only then resumes the body.
        """
        d: DirectDeferred[str] = DirectDeferred()
        seen: list[object] = []

        @coroutine
        def body() -> Generator[Any, Any, None]:
            seen.append((yield d))

        body()
        d.pause()
        d.callback("v")
        self.assertEqual(seen, [])
        d.unpause()
        self.assertEqual(seen, ["v"])

    def test_pausing_the_coroutine_holds_the_result(self) -> None:
        """
        Pausing the waiting Coroutine cascades to the Deferred; a result
        arriving meanwhile resumes the body only on unpause.
        """
        d: DirectDeferred[str] = DirectDeferred()
        seen: list[object] = []

        @coroutine
        def body() -> Generator[Any, Any, None]:
            seen.append((yield d))

        c = body()
        c.pause()
        d.callback("v")
        self.assertEqual(seen, [])
        c.unpause()
        self.assertEqual(seen, ["v"])
        self.assertIsNone(self.successResultOf(c))

    def test_cancel_runs_the_canceller_and_raises_in_the_body(self) -> None:
        """
        Cancelling the Coroutine cancels the Deferred (its canceller runs)
        and raises L{CancelledError} at the C{yield}.
        """
        cancelled: list[object] = []
        d: DirectDeferred[str] = DirectDeferred(cancelled.append)
        raised: list[type[BaseException]] = []

        @coroutine
        def body() -> Generator[Any, Any, None]:
            try:
                yield d
            except CancelledError:
                raised.append(CancelledError)
                raise

        c = body()
        c.cancel()
        self.assertEqual(cancelled, [d])
        self.assertEqual(raised, [CancelledError])
        self.failureResultOf(c, CancelledError)
        self.assertTrue(d.called)

    def test_fired_twice_raises(self) -> None:
        """
        A second C{callback} raises L{AlreadyCalledError}, as on any Deferred.
        """
        d: DirectDeferred[str] = DirectDeferred()

        @coroutine
        def body() -> Generator[Any, Any, None]:
            yield d

        body()
        d.callback("v")
        self.assertRaises(AlreadyCalledError, d.callback, "again")

    def test_async_def_body_gets_the_value(self) -> None:
        """
        An C{async def} body awaiting the Deferred gets its value (read back
        from the Deferred, which the direct call leaves fired with it).
        """
        d: DirectDeferred[str] = DirectDeferred()

        async def body() -> str:
            return (await d) + "!"

        c = Coroutine(body())
        self.assertIs(d._waiter, c)
        d.callback("v")
        self.assertEqual(self.successResultOf(c), "v!")

    def test_nested_coroutine_resumes_its_caller_directly(self) -> None:
        """
        A Coroutine is itself a DirectDeferred: one waiting on another is
        resumed by a direct call when the inner one finishes.
        """
        d: Deferred[str] = Deferred()

        @coroutine
        def inner() -> Generator[Any, Any, str]:
            return (yield d) + "-inner"

        @coroutine
        def outer(child: Coroutine[str]) -> Generator[Any, Any, str]:
            return (yield child) + "-outer"

        child = inner()
        parent = outer(child)
        self.assertIs(child._waiter, parent)
        d.callback("v")
        self.assertEqual(self.successResultOf(parent), "v-inner-outer")


class LazyCallbackListTests(SynchronousTestCase):
    """
    A L{DirectDeferred} (and so a L{Coroutine}) makes its callback list only
    when something needs it, and Twisted's own Deferred code, which reads
    and appends to C{_callbacks}, keeps working on it.
    """

    def test_no_list_while_waited_on_directly(self) -> None:
        """
        Neither a DirectDeferred nor the Coroutine waiting on it has a
        callback list; adding a callback makes one, and it runs after the
        Coroutine has taken the result.
        """
        d: DirectDeferred[str] = DirectDeferred()

        @coroutine
        def body() -> Generator[Any, Any, str]:
            return (yield d) + "!"

        c = body()
        self.assertIsNone(d._chain)
        self.assertIsNone(c._chain)
        seen: list[object] = []
        d.addCallback(seen.append)
        self.assertEqual(len(d._callbacks), 1)
        d.callback("v")
        self.assertEqual(self.successResultOf(c), "v!")
        self.assertEqual(seen, ["v"])

    def test_returned_from_a_callback_of_another_deferred(self) -> None:
        """
        A DirectDeferred or a waiting Coroutine returned from a callback of
        another Deferred chains it: Twisted appends its continuation to the
        returned one's (lazily made) callback list, and the outer Deferred
        fires with the inner result.
        """
        inner: DirectDeferred[str] = DirectDeferred()
        gate: Deferred[str] = Deferred()

        @coroutine
        def waiting() -> Generator[Any, Any, str]:
            return (yield gate) + "-coroutine"

        c = waiting()
        outer1: Deferred[str] = Deferred()
        outer1.addCallback(lambda _: inner)
        outer2: Deferred[str] = Deferred()
        outer2.addCallback(lambda _: c)
        outer1.callback("ignored")
        outer2.callback("ignored")
        self.assertNoResult(outer1)
        self.assertNoResult(outer2)
        inner.callback("direct")
        gate.callback("v")
        self.assertEqual(self.successResultOf(outer1), "direct")
        self.assertEqual(self.successResultOf(outer2), "v-coroutine")

    def test_callbacks_before_and_after_firing(self) -> None:
        """
        C{addCallbacks}, C{addBoth} and C{addErrback} run in order whether
        added before or after the Deferred fired.
        """
        d: DirectDeferred[int] = DirectDeferred()
        seen: list[object] = []
        d.addCallbacks(lambda r: r + 1, lambda f: -1)
        d.addBoth(lambda r: seen.append(("both", r)) or r)
        d.callback(1)
        d.addCallbacks(lambda r: r * 10, lambda f: -1)
        d.addErrback(lambda f: -2)
        self.assertEqual(seen, [("both", 2)])
        self.assertEqual(self.successResultOf(d), 20)

        e: DirectDeferred[int] = DirectDeferred()
        e.errback(ValueError("boom"))
        e.addCallbacks(lambda r: "callback", lambda f: f.trap(ValueError) and "errback")
        self.assertEqual(self.successResultOf(e), "errback")

    def test_chain_deferred_both_ways(self) -> None:
        """
        C{chainDeferred} works from and to a DirectDeferred.
        """
        source: DirectDeferred[str] = DirectDeferred()
        plain: Deferred[str] = Deferred()
        source.chainDeferred(plain)
        source.callback("to plain")
        self.assertEqual(self.successResultOf(plain), "to plain")

        plain2: Deferred[str] = Deferred()
        target: DirectDeferred[str] = DirectDeferred()
        plain2.chainDeferred(target)
        plain2.callback("from plain")
        self.assertEqual(self.successResultOf(target), "from plain")

    def test_coroutine_result_through_callbacks_added_before_it_ends(
        self,
    ) -> None:
        """
        Callbacks added to a waiting Coroutine (lazily making its list) get
        its result when the body returns.
        """
        gate: DirectDeferred[str] = DirectDeferred()

        @coroutine
        def body() -> Generator[Any, Any, str]:
            return (yield gate) + "!"

        c = body()
        seen: list[object] = []
        c.addCallback(lambda r: seen.append(r) or r)
        self.assertIsNotNone(c._chain)
        gate.callback("v")
        self.assertEqual(seen, ["v!"])
        self.assertEqual(self.successResultOf(c), "v!")

    def test_debug_mode_records_the_creator(self) -> None:
        """
        With Deferred debugging on, a DirectDeferred and a Coroutine record
        their creator's stack as any Deferred does, and still work.
        """
        from twisted.internet.defer import getDebugging, setDebugging

        old = getDebugging()
        setDebugging(True)
        try:
            d: DirectDeferred[str] = DirectDeferred(lambda d: None)

            @coroutine
            def body() -> Generator[Any, Any, str]:
                return (yield d) + "!"

            c = body()
        finally:
            setDebugging(old)
        self.assertIsNotNone(d._debugInfo)
        self.assertIsNotNone(c._debugInfo)
        assert d._debugInfo is not None
        self.assertTrue(d._debugInfo.creator)
        self.assertIs(d._waiter, c)
        d.callback("v")
        self.assertEqual(self.successResultOf(c), "v!")

    def test_canceller_kept_only_when_given(self) -> None:
        """
        A DirectDeferred made with a canceller calls it on C{cancel()}; one
        made without fails with L{CancelledError}, as a Deferred does.
        """
        cancelled: list[object] = []
        d: DirectDeferred[str] = DirectDeferred(cancelled.append)
        d.cancel()
        self.assertEqual(cancelled, [d])
        self.failureResultOf(d, CancelledError)
        e: DirectDeferred[str] = DirectDeferred()
        e.cancel()
        self.failureResultOf(e, CancelledError)


def _made_fired(result: object) -> FiredDeferred[Any]:
    """
    A L{FiredDeferred} made as the protocol's buffered reads make one:
    C{Deferred.__new__} and one store.
    """
    d: FiredDeferred[Any] = Deferred.__new__(FiredDeferred)
    d.result = result
    return d


class FiredDeferredTests(SynchronousTestCase):
    """
    A L{FiredDeferred} (what a read the buffer satisfies returns) is made
    with one store and no callback list, and behaves as L{succeed}'s
    Deferred does wherever a Deferred goes.
    """

    def test_taken_by_the_engine_without_a_list(self) -> None:
        """
        A body that yields one gets its result at once, and no callback list
        is made on it.
        """
        d = _made_fired("v")

        @coroutine
        def body() -> Generator[Any, Any, str]:
            return (yield d) + "!"

        self.assertEqual(self.successResultOf(body()), "v!")
        self.assertIsNone(d._chain)
        self.assertNotIn("_chain", vars(d))

    def test_callbacks_run_at_once_and_chain(self) -> None:
        """
        Callbacks added run at once with its result, in order, making the
        list only then; cancelling does nothing; firing it again is
        Deferred's own error.
        """
        d = _made_fired(1)
        seen: list[object] = []
        d.addCallback(lambda r: r + 1).addBoth(lambda r: seen.append(r) or r)
        self.assertEqual(seen, [2])
        self.assertEqual(d._chain, [])
        d.cancel()
        self.assertEqual(self.successResultOf(d), 2)
        self.assertRaises(AlreadyCalledError, d.callback, 3)

    def test_a_callback_that_fails(self) -> None:
        """
        A callback that raises turns its result into a failure, as on any
        Deferred.
        """
        d = _made_fired("v")

        def boom(result: object) -> None:
            raise ValueError(result)

        d.addCallback(boom)
        self.assertEqual(self.failureResultOf(d, ValueError).value.args, ("v",))

    def test_returned_from_another_deferreds_callback(self) -> None:
        """
        Returned from a callback of another Deferred, it chains: the outer
        one fires with its result.
        """
        outer: Deferred[str] = Deferred()
        outer.addCallback(lambda _: _made_fired("inner"))
        outer.callback("ignored")
        self.assertEqual(self.successResultOf(outer), "inner")

    def test_inline_callbacks_and_await_take_its_result(self) -> None:
        """
        C{inlineCallbacks}, C{await} and C{chainDeferred} take its result.
        """

        @inlineCallbacks
        def inline() -> Generator[Any, Any, str]:
            return (yield _made_fired("a")) + "!"

        async def awaiting() -> str:
            return await _made_fired("b") + "!"

        self.assertEqual(self.successResultOf(inline()), "a!")
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(awaiting())), "b!")
        target: Deferred[str] = Deferred()
        _made_fired("c").chainDeferred(target)
        self.assertEqual(self.successResultOf(target), "c")

    def test_paused_by_a_callback_that_returns_a_deferred(self) -> None:
        """
        A callback that returns an unfired Deferred pauses it; a Coroutine
        that yields it then waits for that Deferred, as for any paused
        Deferred.
        """
        d = _made_fired("v")
        gate: Deferred[str] = Deferred()
        d.addCallback(lambda _: gate)

        @coroutine
        def body() -> Generator[Any, Any, str]:
            return (yield d) + "!"

        c = body()
        self.assertNoResult(c)
        gate.callback("later")
        self.assertEqual(self.successResultOf(c), "later!")
