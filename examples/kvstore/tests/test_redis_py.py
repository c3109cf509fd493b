"""
The real redis-py client (sync and asyncio, RESP3 by default and RESP2)
against the kvstore example served over 127.0.0.1.

The server runs on the test's reactor; each client runs in a thread
(L{deferToThread}) so that its blocking calls do not block the reactor.
Expiry uses the server's fake clock, advanced by the test between client
calls, so no test waits for real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import redis
import redis.asyncio
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from examples.kvstore.tests.loopback import LoopbackServer

_T = TypeVar("_T")

#: A safety net against a hung test, not a timing assertion.
SOCKET_TIMEOUT = 60.0


class ClientTestsMixin:
    """
    The same behaviour checked through one client configuration; the
    subclasses choose the RESP version.

    @cvar protocol: The C{protocol=} given to redis-py, or C{None} for its
        default (RESP3 in redis-py 8).
    """

    protocol: int | None = None

    # Provided by TestCase.
    addCleanup: Callable[..., None]
    assertEqual: Callable[..., None]
    assertIsNone: Callable[..., None]
    assertIn: Callable[..., None]
    assertRaises: Callable[..., Any]

    @defer.inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:
        self.server = LoopbackServer()
        yield self.server.start()
        kwargs: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.server.port,
            "decode_responses": True,
            "socket_timeout": SOCKET_TIMEOUT,
        }
        if self.protocol is not None:
            kwargs["protocol"] = self.protocol
        self.kwargs = kwargs
        self.client = redis.Redis(**kwargs)

    @defer.inlineCallbacks
    def tearDown(self) -> Generator[Any, Any, None]:
        yield deferToThread(self.client.close)
        yield self.server.stop()

    def in_thread(self, function: Callable[[redis.Redis], _T]) -> defer.Deferred[_T]:
        """
        Call C{function(client)} in a thread.
        """
        return deferToThread(function, self.client)

    @defer.inlineCallbacks
    def test_negotiated_version(self) -> Generator[Any, Any, None]:
        """The client's version is the connection's (HELLO 3 by default)."""
        hello = yield self.in_thread(lambda r: r.execute_command("HELLO"))
        if isinstance(hello, list):
            # RESP2: a flat array of names and values.
            hello = dict(zip(hello[::2], hello[1::2], strict=True))
        self.assertEqual(hello["proto"], self.protocol or 3)

    @defer.inlineCallbacks
    def test_strings(self) -> Generator[Any, Any, None]:
        """SET, GET, GETSET, MSET, MGET, DEL, EXISTS; missing keys are None."""

        def scenario(r: redis.Redis) -> None:
            self.assertEqual(r.set("k", "v"), True)
            self.assertEqual(r.get("k"), "v")
            self.assertIsNone(r.get("missing"))
            self.assertEqual(r.getset("k", "w"), "v")
            self.assertEqual(r.mset({"a": "1", "b": "2"}), True)
            self.assertEqual(r.mget("a", "missing", "b"), ["1", None, "2"])
            self.assertEqual(r.set("k", "x", nx=True), None)
            self.assertEqual(r.exists("a", "b", "missing"), 2)
            self.assertEqual(r.delete("a", "b"), 2)
            self.assertEqual(r.dbsize(), 1)

        yield self.in_thread(scenario)

    @defer.inlineCallbacks
    def test_counters(self) -> Generator[Any, Any, None]:
        """incr() sends INCRBY; decr() DECRBY."""

        def scenario(r: redis.Redis) -> None:
            self.assertEqual(r.incr("n"), 1)
            self.assertEqual(r.incr("n", 41), 42)
            self.assertEqual(r.decr("n", 2), 40)
            self.assertEqual(r.get("n"), "40")

        yield self.in_thread(scenario)

    @defer.inlineCallbacks
    def test_lists(self) -> Generator[Any, Any, None]:
        """Pushes, pops (with and without a count), LLEN, LRANGE."""

        def scenario(r: redis.Redis) -> None:
            self.assertEqual(r.rpush("l", "b", "c"), 2)
            self.assertEqual(r.lpush("l", "a"), 3)
            self.assertEqual(r.lrange("l", 0, -1), ["a", "b", "c"])
            self.assertEqual(r.llen("l"), 3)
            self.assertEqual(r.lpop("l"), "a")
            self.assertEqual(r.rpop("l", 5), ["c", "b"])
            self.assertIsNone(r.lpop("l"))
            self.assertIsNone(r.lpop("l", 2))

        yield self.in_thread(scenario)

    @defer.inlineCallbacks
    def test_sets(self) -> Generator[Any, Any, None]:
        """SADD, SREM, SCARD, SISMEMBER, SPOP."""

        def scenario(r: redis.Redis) -> None:
            self.assertEqual(r.sadd("s", "a", "b", "c"), 3)
            self.assertEqual(r.srem("s", "c"), 1)
            self.assertEqual(r.scard("s"), 2)
            self.assertEqual(bool(r.sismember("s", "a")), True)
            self.assertEqual(bool(r.sismember("s", "z")), False)
            first = r.spop("s")
            rest = r.spop("s", 5)
            self.assertEqual({first, *rest}, {"a", "b"})
            self.assertIsNone(r.spop("s"))

        yield self.in_thread(scenario)

    @defer.inlineCallbacks
    def test_hashes(self) -> Generator[Any, Any, None]:
        """HSET (mapping), HGET, HGETALL as a dict, HDEL."""

        def scenario(r: redis.Redis) -> None:
            self.assertEqual(r.hset("h", mapping={"f": "1", "g": "2"}), 2)
            self.assertEqual(r.hget("h", "f"), "1")
            self.assertIsNone(r.hget("h", "missing"))
            self.assertEqual(r.hgetall("h"), {"f": "1", "g": "2"})
            self.assertEqual(r.hdel("h", "f", "missing"), 1)
            self.assertEqual(r.hgetall("missing"), {})

        yield self.in_thread(scenario)

    @defer.inlineCallbacks
    def test_expiry(self) -> Generator[Any, Any, None]:
        """TTLs count down on the server's clock, and keys expire on it."""
        yield self.in_thread(lambda r: r.set("k", "v", ex=100))
        yield self.in_thread(lambda r: r.set("p", "v", px=500))
        self.server.clock.advance(40)
        ttl = yield self.in_thread(lambda r: r.ttl("k"))
        self.assertEqual(ttl, 60)
        gone = yield self.in_thread(lambda r: r.get("p"))
        self.assertIsNone(gone)
        yield self.in_thread(lambda r: r.expire("k", 5))
        pttl = yield self.in_thread(lambda r: r.pttl("k"))
        self.assertEqual(pttl, 5000)
        persisted = yield self.in_thread(lambda r: r.persist("k"))
        self.assertEqual(persisted, True)
        self.server.clock.advance(10)
        value = yield self.in_thread(lambda r: r.get("k"))
        self.assertEqual(value, "v")

    @defer.inlineCallbacks
    def test_pipeline(self) -> Generator[Any, Any, None]:
        """A non-transactional pipeline of 1,000 commands gets 1,000 replies."""

        def scenario(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            for _ in range(1000):
                pipe.incr("n")
            pipe.get("missing")
            self.assertEqual(pipe.execute(), [*range(1, 1001), None])

        yield self.in_thread(scenario)

    @defer.inlineCallbacks
    def test_transaction(self) -> Generator[Any, Any, None]:
        """A transactional pipeline runs as MULTI ... EXEC."""

        def scenario(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.set("k", "1").incr("k").lpush("l", "x").get("k")
            self.assertEqual(pipe.execute(), [True, 2, 1, "2"])

        yield self.in_thread(scenario)

    @defer.inlineCallbacks
    def test_error_reply_is_response_error(self) -> Generator[Any, Any, None]:
        """Error replies surface as redis-py's ResponseError, with our words."""

        def scenario(r: redis.Redis) -> list[str]:
            r.set("s", "v")
            messages = []
            with self.assertRaises(redis.ResponseError) as caught:
                r.lpush("s", "x")
            messages.append(str(caught.exception))
            with self.assertRaises(redis.ResponseError) as caught:
                r.execute_command("NOPE", "a")
            messages.append(str(caught.exception))
            self.assertEqual(r.get("s"), "v")
            return messages

        messages = yield self.in_thread(scenario)
        self.assertEqual(
            messages,
            [
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                "unknown command 'NOPE', with args beginning with: 'a' ",
            ],
        )

    @defer.inlineCallbacks
    def test_asyncio_client(self) -> Generator[Any, Any, None]:
        """The asyncio client works the same, pipelines and MULTI included."""

        async def scenario() -> list[Any]:
            client = redis.asyncio.Redis(**self.kwargs)
            try:
                results: list[Any] = [
                    await client.set("k", "v", ex=10),
                    await client.get("k"),
                    await client.get("missing"),
                    await client.incr("n", 5),
                    await client.hset("h", "f", "v"),
                    await client.hgetall("h"),
                    await client.ttl("k"),
                ]
                async with client.pipeline(transaction=True) as pipe:
                    pipe.incr("n").rpush("l", "a", "b").lrange("l", 0, -1)
                    results.append(await pipe.execute())
                try:
                    await client.incr("k")
                except redis.ResponseError as e:
                    results.append(str(e))
                return results
            finally:
                await client.aclose()

        results = yield deferToThread(asyncio.run, scenario())
        self.assertEqual(
            results,
            [
                True,
                "v",
                None,
                5,
                1,
                {"f": "v"},
                10,
                [6, 2, ["a", "b"]],
                "value is not an integer or out of range",
            ],
        )


class RESP3ClientTests(ClientTestsMixin, TestCase):
    """
    redis-py with its default settings: RESP3, negotiated with HELLO 3.
    """


class RESP2ClientTests(ClientTestsMixin, TestCase):
    """
    redis-py with C{protocol=2}: no HELLO, RESP2 replies.
    """

    protocol = 2
