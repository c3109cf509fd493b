"""
Debian's C{redis-tools} against the kvstore example served over 127.0.0.1:
C{redis-benchmark} must complete every test it runs with no error reply (it
exits on the first one), and C{redis-cli} must work as the README shows.

Skipped where the tools are not installed; C{.ci/run} installs them (the
C{redis-tools} package).
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Generator
from typing import Any

from twisted.internet import defer, utils
from twisted.trial.unittest import SkipTest, TestCase

from examples.kvstore.tests.loopback import LoopbackServer

REDIS_BENCHMARK = shutil.which("redis-benchmark")
REDIS_CLI = shutil.which("redis-cli")
TIMEOUT = shutil.which("timeout")

TESTS = "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,lrange,mset"

#: The test names redis-benchmark reports for TESTS.
EXPECTED = [
    "PING_INLINE",
    "PING_MBULK",
    "SET",
    "GET",
    "INCR",
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "SADD",
    "HSET",
    "SPOP",
    "LPUSH (needed to benchmark LRANGE)",
    "LRANGE_100 (first 100 elements)",
    "LRANGE_300 (first 300 elements)",
    "LRANGE_500 (first 500 elements)",
    "LRANGE_600 (first 600 elements)",
    "MSET (10 keys)",
]

#: A safety net against a hung run, not a timing assertion.
DEADLINE_SECONDS = 300


class RedisBenchmarkTests(TestCase):
    """
    redis-benchmark with 50 clients, without and with pipelining.
    """

    # trial's default per-test limit is 120 s; the run has its own deadline.
    timeout = DEADLINE_SECONDS + 30

    def setUp(self) -> Generator[Any, Any, None] | None:
        if REDIS_BENCHMARK is None or TIMEOUT is None:
            raise SkipTest(
                "redis-benchmark is not installed: apt-get install redis-tools"
            )
        self.server = LoopbackServer(fake_clock=False)
        return self.server.start()  # type: ignore[return-value]

    def tearDown(self) -> defer.Deferred[Any]:
        return self.server.stop()

    @defer.inlineCallbacks
    def benchmark(self, *extra: str) -> Generator[Any, Any, None]:
        """
        Run every test of TESTS with C{-c 50} and C{extra} options, and
        check that each completed and that nothing reported an error.
        """
        assert REDIS_BENCHMARK is not None
        assert TIMEOUT is not None
        args = [
            str(DEADLINE_SECONDS),
            REDIS_BENCHMARK,
            "-h",
            "127.0.0.1",
            "-p",
            str(self.server.port),
            "-c",
            "50",
            "-n",
            "300",
            "-t",
            TESTS,
            "--csv",
            *extra,
        ]
        out, err, code = yield utils.getProcessOutputAndValue(TIMEOUT, args)
        report = f"exit {code}\nstdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        self.assertEqual(code, 0, report)
        self.assertNotIn(b"rror", out + err, report)
        rows = list(csv.DictReader(io.StringIO(out.decode())))
        self.assertEqual([row["test"] for row in rows], EXPECTED, report)
        for row in rows:
            self.assertGreater(float(row["rps"]), 0, report)
        self.assertGreater(len(self.server.store), 0)

    def test_without_pipelining(self) -> defer.Deferred[None]:
        """One command in flight per client: every test completes cleanly."""
        return self.benchmark()

    def test_with_pipelining(self) -> defer.Deferred[None]:
        """16 commands in flight per client (-P 16): every test completes."""
        return self.benchmark("-P", "16")


class RedisCliTests(TestCase):
    """
    redis-cli, run as the README shows it (output piped, not a terminal).
    """

    def setUp(self) -> defer.Deferred[Any]:
        if REDIS_CLI is None:
            raise SkipTest("redis-cli is not installed: apt-get install redis-tools")
        self.server = LoopbackServer(fake_clock=False)
        return self.server.start()

    def tearDown(self) -> defer.Deferred[Any]:
        return self.server.stop()

    def cli(self, *args: str) -> defer.Deferred[bytes]:
        """
        Run C{redis-cli -h 127.0.0.1 -p PORT args} and return its output.
        """
        assert REDIS_CLI is not None
        argv = ["-h", "127.0.0.1", "-p", str(self.server.port), *args]
        return utils.getProcessOutput(REDIS_CLI, argv, errortoo=True)

    @defer.inlineCallbacks
    def test_readme_session(self) -> Generator[Any, Any, None]:
        """SET with EX, GET, INCR and an unknown command print as shown."""
        outputs = []
        for command in (
            ("SET", "greeting", "hello", "EX", "60"),
            ("GET", "greeting"),
            ("INCR", "visits"),
            ("FOO", "bar"),
        ):
            outputs.append((yield self.cli(*command)))
        self.assertEqual(
            outputs,
            [
                b"OK\n",
                b"hello\n",
                b"1\n",
                b"ERR unknown command 'FOO', with args beginning with: 'bar' \n\n",
            ],
        )

    @defer.inlineCallbacks
    def test_resp3(self) -> Generator[Any, Any, None]:
        """redis-cli -3 (HELLO 3 first) reads RESP3 maps."""
        yield self.cli("HSET", "h", "f", "v")
        output = yield self.cli("-3", "HGETALL", "h")
        self.assertEqual(output, b"f v\n")
