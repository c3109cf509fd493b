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

import signal

import redis
from twisted.trial.unittest import SynchronousTestCase

from tests.twistd import DEADLINE, Server


class TwistdTests(SynchronousTestCase):
    """
    The example served by the real twistd plugin.
    """

    def setUp(self) -> None:
        self.server = Server(
            self,
            "--protocol",
            "examples.kvstore.KVStoreProtocol",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        )
        self.port = self.server.port

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
        status, log = self.server.stop(signal.SIGTERM)
        # twistd re-raises the signal once it has shut down.
        self.assertEqual(status, -signal.SIGTERM, log)
        self.assertIn("stopped: 2 connections served", log)
        self.assertNotIn("Traceback", log)
