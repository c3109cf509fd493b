"""
The example as its README runs it: C{twistd -n stateproto --protocol
examples.kvstore.KVStoreProtocol --listen tcp:PORT} from the checkout root,
in a subprocess, driven by redis-py over 127.0.0.1.

Two additions to the README's command, both for the test's sake:
C{--pidfile=} (so no C{twistd.pid} is written into the checkout) and a
PORT of C{0:interface=127.0.0.1} (a free port the kernel picks, read from
the log line the plugin writes, on loopback only).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[3]
TWISTD = Path(sys.executable).parent / "twistd"

#: How long any one wait may take before the test gives up (a safety net,
#: not a timing assertion).
DEADLINE = 60.0

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(")


class TwistdTests(SynchronousTestCase):
    """
    The example served by the real twistd plugin.
    """

    def setUp(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        self.process = subprocess.Popen(
            [
                str(TWISTD),
                "--pidfile=",
                "-n",
                "stateproto",
                "--protocol",
                "examples.kvstore.KVStoreProtocol",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self._kill)
        self.output = bytearray()
        self.port = int(self._wait_for(LISTENING).group(1))

    def _kill(self) -> None:
        """
        Make sure the subprocess is gone when the test ends.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()

    def _wait_for(self, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        """
        Read the server's log until C{pattern} appears in it.
        """
        stdout = self.process.stdout
        assert stdout is not None
        end = time.monotonic() + DEADLINE
        while True:
            found = pattern.search(self.output)
            if found is not None:
                return found
            ready, _, _ = select.select(
                [stdout], [], [], max(end - time.monotonic(), 0)
            )
            chunk = os.read(stdout.fileno(), 65536) if ready else b""
            if not chunk:
                self.fail(f"{pattern.pattern!r} not in the log:\n{self.output!r}")
            self.output += chunk

    def test_serves_redis_clients(self) -> None:
        """
        redis-py (RESP3 by default) stores and reads keys, and the server
        stops cleanly on SIGTERM.
        """
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            socket_timeout=DEADLINE,
        )
        try:
            self.assertEqual(client.ping(), True)
            self.assertEqual(client.set("greeting", "hello"), True)
            self.assertEqual(client.get("greeting"), "hello")
            self.assertEqual(client.incr("visits"), 1)
            self.assertEqual(client.rpush("queue", "a", "b"), 2)
            self.assertEqual(client.lrange("queue", 0, -1), ["a", "b"])
            with self.assertRaises(redis.ResponseError):
                client.incr("greeting")
        finally:
            client.close()
        # A second connection sees the first one's keys: one store per
        # process.
        other = redis.Redis(host="127.0.0.1", port=self.port, protocol=2)
        try:
            self.assertEqual(other.get("greeting"), b"hello")
        finally:
            other.close()
        self.process.send_signal(signal.SIGTERM)
        rest, _ = self.process.communicate(timeout=DEADLINE)
        self.output += rest
        # twistd re-raises the signal once it has shut down.
        self.assertEqual(self.process.returncode, -signal.SIGTERM, self.output.decode())
        self.assertIn(b"stopped: 2 connections served", self.output)
        self.assertNotIn(b"Traceback", self.output)
