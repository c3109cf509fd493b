"""
Tests for L{txstateproto.protocols.netstring}: reading and writing
netstrings, bad input, limits, and Twisted's C{NetstringReceiver} as a peer.
"""

from __future__ import annotations

import tracemalloc
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.protocols import basic
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Body, Scripted, idle
from txstateproto import (
    EndOfStreamError,
    FrameTooLongError,
    FramingError,
    ProtocolError,
    StateProtocol,
)
from txstateproto.protocols import read_netstring, write_netstring
from txstateproto.testing import ProtocolHarness

_settings = settings(deadline=None, max_examples=150)


def _netstring(data: bytes) -> bytes:
    """
    Encode a netstring by hand, independently of L{write_netstring}.
    """
    return str(len(data)).encode() + b":" + data + b","


def _collector(count: int, payloads: list[bytes]) -> Scripted:
    """
    A protocol that reads C{count} netstrings into C{payloads}, then ends.
    """

    def script(p: Scripted) -> Body:
        for _ in range(count):
            payloads.append((yield read_netstring(p)))

    return Scripted(script)


class ReadNetstringTests(SynchronousTestCase):
    """
    Tests for L{read_netstring}.
    """

    def _read(self, data: bytes, max_length: int | None = None) -> ProtocolHarness:
        h = ProtocolHarness(idle())
        self.result = read_netstring(h.protocol, max_length=max_length)
        h.feed(data)
        return h

    def _error(self, data: bytes, max_length: int | None = None) -> ProtocolError:
        self._read(data, max_length)
        error = self.failureResultOf(self.result, ProtocolError).value
        assert isinstance(error, ProtocolError)
        return error

    def test_reads_payload(self) -> None:
        """C{5:hello,} gives C{hello}."""
        self._read(b"5:hello,")
        self.assertEqual(self.successResultOf(self.result), b"hello")

    def test_empty_payload(self) -> None:
        """C{0:,} gives an empty payload."""
        self._read(b"0:,")
        self.assertEqual(self.successResultOf(self.result), b"")

    def test_payload_may_hold_anything(self) -> None:
        """Colons, commas, digits and line ends in the payload are data."""
        payload = b"3:a,\r\n0:\0"
        self._read(_netstring(payload))
        self.assertEqual(self.successResultOf(self.result), payload)

    def test_buffered_netstring_has_fired_on_return(self) -> None:
        """A netstring already buffered is returned as a fired Deferred."""
        h = ProtocolHarness(idle())
        h.feed(b"1:a,2:bc,")
        self.assertEqual(self.successResultOf(read_netstring(h.protocol)), b"a")
        self.assertEqual(self.successResultOf(read_netstring(h.protocol)), b"bc")

    def test_waits_for_last_byte(self) -> None:
        """The read fires only when the comma arrives."""
        h = ProtocolHarness(idle())
        d = read_netstring(h.protocol)
        for byte in b"12:hello world!":
            h.feed(bytes([byte]))
            self.assertNoResult(d)
        h.feed(b",")
        self.assertEqual(self.successResultOf(d), b"hello world!")

    def test_bytes_after_netstring_stay_buffered(self) -> None:
        """Reading consumes exactly the netstring."""
        h = self._read(b"2:hi,rest\r\n")
        self.assertEqual(self.successResultOf(self.result), b"hi")
        self.assertEqual(self.successResultOf(h.protocol.read_line()), b"rest")

    def test_long_payload(self) -> None:
        """A payload over 64 KiB, read apart from its comma, is whole."""
        payload = bytes(range(256)) * 400
        h = ProtocolHarness(idle())
        d = read_netstring(h.protocol)
        h.feed(_netstring(payload), chunk_size=4096)
        self.assertEqual(self.successResultOf(d), payload)

    def test_long_payload_without_comma(self) -> None:
        """A payload over 64 KiB followed by something else fails."""
        error = self._error(b"70000:" + b"x" * 70000 + b";")
        self.assertIsInstance(error, FramingError)
        self.assertIn("b';'", str(error))

    def test_payload_of_max_frame_size(self) -> None:
        """A payload exactly max_frame_size long is read, comma included."""
        p = idle()
        p.max_frame_size = 10
        h = ProtocolHarness(p)
        d = read_netstring(p)
        h.feed(b"10:0123456789,")
        self.assertEqual(self.successResultOf(d), b"0123456789")

    def test_bad_digits(self) -> None:
        """A length that is not decimal digits fails, showing the bytes."""
        for data in (b"abc:", b"1a:", b" 5:", b"5 :", b"+5:", b"-1:", b"1_0:"):
            error = self._error(data)
            self.assertIsInstance(error, FramingError, data)
            self.assertIn("not a decimal number", str(error))
            self.assertIn(repr(data[:-1]), str(error))

    def test_empty_length(self) -> None:
        """A colon with no digits before it fails."""
        error = self._error(b":hello,")
        self.assertIsInstance(error, FramingError)
        self.assertIn("is empty", str(error))

    def test_leading_zero(self) -> None:
        """A length with a leading zero fails, as the format forbids it."""
        error = self._error(b"05:hello,")
        self.assertIsInstance(error, FramingError)
        self.assertIn("leading zero", str(error))

    def test_missing_comma(self) -> None:
        """A payload followed by something other than a comma fails."""
        error = self._error(b"5:hello;")
        self.assertIsInstance(error, FramingError)
        self.assertIn("5 bytes", str(error))
        self.assertIn("b';'", str(error))

    def test_length_over_max_length(self) -> None:
        """A length over max_length fails before the payload is read."""
        h = self._read(b"11:hello world,", max_length=10)
        error = self.failureResultOf(self.result, FrameTooLongError).value
        self.assertEqual(
            (error.limit, error.length, error.limit_name), (10, 11, "max_length")
        )
        # The payload was not read.
        self.assertEqual(
            self.successResultOf(h.protocol.read_exactly(12)), b"hello world,"
        )

    def test_default_limit_is_max_frame_size(self) -> None:
        """Without max_length, the protocol's max_frame_size is the limit."""
        p = idle()
        p.max_frame_size = 4
        h = ProtocolHarness(p)
        d = read_netstring(p)
        h.feed(b"5:")
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual((error.limit, error.limit_name), (4, "max_frame_size"))

    def test_huge_length_allocates_nothing(self) -> None:
        """A 4 GB length fails at once, allocating nothing for the payload."""
        p = idle()
        # Only read_netstring's own check stands between length and payload.
        p.max_frame_size = 2**40
        h = ProtocolHarness(p)
        tracemalloc.start()
        try:
            d = read_netstring(p, max_length=2**20)
            h.feed(b"4294967296:abc")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual(error.length, 2**32)
        self.assertLess(peak, 256 * 1024)

    def test_huge_length_with_default_limit_allocates_nothing(self) -> None:
        """With the default limits, a 4 GB length fails at once, allocating
        nothing for the payload."""
        h = ProtocolHarness(idle())
        tracemalloc.start()
        try:
            d = read_netstring(h.protocol)
            h.feed(b"4294967296:" + b"x" * 100000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual((error.length, error.limit_name), (2**32, "max_frame_size"))
        self.assertLess(peak, 512 * 1024)

    def test_endless_digits(self) -> None:
        """Digits without a colon fail after 20 of them, not at end of input."""
        h = ProtocolHarness(idle())
        d = read_netstring(h.protocol)
        h.feed(b"1" * 20)
        self.assertNoResult(d)
        h.feed(b"1")
        error = self.failureResultOf(d, FramingError).value
        self.assertIn("more than 20 digits", str(error))

    def test_twenty_digit_length(self) -> None:
        """A 20-digit length is parsed and reported with its value."""
        error = self._error(b"99999999999999999999:")
        assert isinstance(error, FrameTooLongError)
        self.assertEqual(error.length, 10**20 - 1)

    def test_cancel_waiting_for_length(self) -> None:
        """Cancelling before the colon arrives consumes nothing."""
        h = ProtocolHarness(idle())
        d = read_netstring(h.protocol)
        h.feed(b"5")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(b":hello,")
        self.assertEqual(self.successResultOf(read_netstring(h.protocol)), b"hello")

    def test_cancel_waiting_for_payload(self) -> None:
        """Cancelling while the payload is due cancels the payload's read."""
        h = ProtocolHarness(idle())
        d = read_netstring(h.protocol)
        h.feed(b"5:he")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(b"llo,")
        self.assertEqual(self.successResultOf(h.protocol.read_exactly(6)), b"hello,")

    def test_cancel_waiting_for_comma_of_long_payload(self) -> None:
        """Cancelling while the comma after a long payload is due cancels it."""
        h = ProtocolHarness(idle())
        d = read_netstring(h.protocol)
        h.feed(b"70000:" + b"x" * 70000)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(b",")
        self.assertEqual(self.successResultOf(h.protocol.read_exactly(1)), b",")

    def test_timeout(self) -> None:
        """An incomplete netstring fails with TimeoutError after the timeout."""
        h = ProtocolHarness(idle())
        d = read_netstring(h.protocol, timeout=3)
        h.feed(b"5:hel")
        h.clock.advance(3)
        error = self.failureResultOf(d, defer.TimeoutError).value
        self.assertIn("3 seconds", str(error))

    def test_timeout_leaves_no_timer(self) -> None:
        """A netstring completed in time leaves no delayed call behind."""
        h = ProtocolHarness(idle())
        d = read_netstring(h.protocol, timeout=3)
        h.feed(b"2:ok,")
        self.assertEqual(self.successResultOf(d), b"ok")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_end_of_stream_mid_payload(self) -> None:
        """A half-close in the middle of a payload fails the read."""
        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        d = read_netstring(p)
        h.feed(b"5:he")
        h.half_close()
        self.failureResultOf(d, EndOfStreamError)

    @_settings
    @given(
        payloads=st.lists(st.binary(max_size=200), max_size=8),
        cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    )
    def test_random_netstrings_in_random_chunks(
        self, payloads: list[bytes], cuts: list[int]
    ) -> None:
        """Any netstrings, split anywhere, are read back in order."""
        stream = b"".join(_netstring(p) for p in payloads)
        got: list[bytes] = []
        h = ProtocolHarness(_collector(len(payloads), got))
        edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
        h.feed_chunks(stream[a:b] for a, b in pairwise(edges))
        self.assertEqual(got, payloads)
        self.assertTrue(h.closed)


class WriteNetstringTests(SynchronousTestCase):
    """
    Tests for L{write_netstring}.
    """

    def test_writes_netstring(self) -> None:
        """The payload goes out as C{<length>:<payload>,}."""
        h = ProtocolHarness(idle())
        write_netstring(h.protocol, b"hello")
        self.assertEqual(h.take_output(), b"5:hello,")

    def test_empty(self) -> None:
        """An empty payload is C{0:,}."""
        h = ProtocolHarness(idle())
        write_netstring(h.protocol, b"")
        self.assertEqual(h.take_output(), b"0:,")

    def test_large(self) -> None:
        """A large payload is written whole between length and comma."""
        payload = bytes(range(256)) * 1024
        h = ProtocolHarness(idle())
        write_netstring(h.protocol, payload)
        self.assertEqual(h.take_output(), _netstring(payload))

    @_settings
    @given(payload=st.binary(max_size=500))
    def test_round_trip(self, payload: bytes) -> None:
        """What write_netstring writes, read_netstring reads back."""
        writer = ProtocolHarness(idle())
        write_netstring(writer.protocol, payload)
        reader = ProtocolHarness(idle())
        d = read_netstring(reader.protocol)
        reader.feed(writer.take_output(), chunk_size=5)
        self.assertEqual(self.successResultOf(d), payload)


class _NetstringEcho(StateProtocol):
    """
    Echo each netstring back.
    """

    def start(self) -> Body:
        """
        Read a netstring, write it back, for ever.
        """
        while True:
            write_netstring(self, (yield read_netstring(self)))


class _NetstringClient(StateProtocol):
    """
    Send netstrings, then read as many replies.
    """

    def __init__(self, payloads: list[bytes]) -> None:
        super().__init__()
        self.payloads = payloads
        self.replies: list[bytes] = []

    def start(self) -> Body:
        """
        Send every payload, then collect the replies.
        """
        for payload in self.payloads:
            write_netstring(self, payload)
        for _ in self.payloads:
            self.replies.append((yield read_netstring(self)))


class _TwistedSender(basic.NetstringReceiver):
    """
    Send netstrings when connected; record what comes back.
    """

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.received: list[bytes] = []

    def connectionMade(self) -> None:
        for payload in self.payloads:
            self.sendString(payload)

    def stringReceived(self, string: bytes) -> None:
        self.received.append(string)


class _TwistedEcho(basic.NetstringReceiver):
    """
    Send back each netstring received.
    """

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


#: Empty, short, binary with netstring punctuation, and longer than 64 KiB.
_INTEROP_PAYLOADS = [b"", b"x", b"1:a,", bytes(range(256)) * 2, b"y" * 70000]


class TwistedInteropTests(SynchronousTestCase):
    """
    L{read_netstring} and L{write_netstring} against Twisted's
    L{basic.NetstringReceiver}, over an in-memory connection.
    """

    def test_twisted_client_our_server(self) -> None:
        """Twisted's receiver gets back exactly the netstrings it sent."""
        server = _NetstringEcho()
        client = _TwistedSender(_INTEROP_PAYLOADS)
        client.MAX_LENGTH = 100000
        pump = iosim.connect(
            server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client)
        )
        pump.flush()
        self.assertEqual(client.received, _INTEROP_PAYLOADS)

    def test_our_client_twisted_server(self) -> None:
        """Netstrings we write are what Twisted's receiver reads, and back."""
        client = _NetstringClient(_INTEROP_PAYLOADS)
        server = _TwistedEcho()
        server.MAX_LENGTH = 100000
        pump = iosim.connect(
            server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client)
        )
        pump.flush()
        self.assertEqual(client.replies, _INTEROP_PAYLOADS)
        conversation = client.conversation
        assert conversation is not None
        self.assertIsNone(self.successResultOf(conversation))

    def test_twisted_rejects_what_we_reject(self) -> None:
        """Input we refuse, Twisted's receiver refuses too (it disconnects)."""
        for data in (b"05:hello,", b"5:hello;", b"ab:", b":x,"):
            ours = ProtocolHarness(idle())
            d = read_netstring(ours.protocol)
            ours.feed(data)
            self.failureResultOf(d, FramingError)
            theirs = basic.NetstringReceiver()
            transport = iosim.makeFakeServer(theirs)
            theirs.makeConnection(transport)
            theirs.dataReceived(data)
            self.assertTrue(transport.disconnecting, data)
