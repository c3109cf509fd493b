"""
The README's Python code blocks run as written, and the handlers they define
behave as the README says.

Every C{```python} block of README.md is executed, in order, in one
namespace (as C{__name__ = "readme"}, so a script's C{if __name__ ==
"__main__":} part does not start a reactor). The tests then drive the
handlers those blocks define through L{ProtocolHarness}. What the prose
claims beyond these blocks is covered by the test modules of the feature it
describes (tests/test_protocol*.py, test_coroutine.py, test_tap.py,
test_plugin.py, test_tls*.py, tests/protocols/).
"""

from __future__ import annotations

import inspect
import math
import re
import struct
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from txstateproto import ConnectionState, StateProtocol
from txstateproto._builtin import Echo as BuiltinEcho
from txstateproto.testing import ProtocolHarness

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    """
    The README's C{```python} blocks, in order.
    """
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.M | re.S)


def _run_readme() -> dict[str, Any]:
    """
    Execute every Python block of the README in one namespace.
    """
    namespace: dict[str, Any] = {"__name__": "readme"}
    for block in _python_blocks():
        exec(compile(block, str(README), "exec"), namespace)
    return namespace


class Backend:
    """
    A sub-request service whose lookups wait until the test answers them,
    and whose cancellations and releases are recorded.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.pending: list[Deferred[bytes]] = []

    def lookup(self, key: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred(lambda _: self.events.append("cancelled"))
        self.pending.append(d)
        return d

    def release(self, key: bytes) -> None:
        self.events.append("released " + key.decode())


class ReadmeTests(SynchronousTestCase):
    """
    The README's examples, run.
    """

    def setUp(self) -> None:
        self.ns = _run_readme()

    def test_blocks_found(self) -> None:
        """
        The README has the blocks these tests drive.
        """
        for name in ("Echo", "Greeter", "fact", "Lookup", "Upload", "Hello", "main"):
            self.assertIn(name, self.ns)

    def test_quickstart_echo_is_the_builtin(self) -> None:
        """
        The echo handler the README shows is the one C{make run} serves:
        the same delimiter and the same statements in C{start}.
        """

        def statements(source: str) -> list[str]:
            lines = []
            for line in source.splitlines():
                code = line.split("#", 1)[0].strip()
                if code and not code.startswith(('"""', "@", "def ", "Echo")):
                    lines.append(code)
            return lines

        readme_echo = self.ns["Echo"]
        self.assertEqual(readme_echo.delimiter, BuiltinEcho.delimiter)
        builtin = inspect.getsource(BuiltinEcho.start)
        builtin = re.sub(r'"""(.*?)"""', "", builtin, flags=re.S)
        block = next(b for b in _python_blocks() if "class Echo(" in b)
        body = block[block.index("def start") :]
        self.assertEqual(statements(body), statements(builtin))

    def test_quickstart_session(self) -> None:
        """
        The echo writes back each line, as in the README's nc session,
        however the bytes are split.
        """
        h = ProtocolHarness(self.ns["Echo"]())
        h.feed(b"hello\nany line at all\n", chunk_size=3)
        self.assertEqual(h.take_output(), b"hello\nany line at all\n")

    def test_greeter(self) -> None:
        """
        The Greeter says HELLO, reads a name, then answers each line with
        a sub-request's reply until QUIT, which closes the connection.
        """
        greeter = self.ns["Greeter"]()
        backend = Backend()
        greeter.backend = backend
        h = ProtocolHarness(greeter)
        self.assertEqual(h.take_output(), b"HELLO\r\n")
        h.feed(b"bob\r\nkey\r\n")
        backend.pending.pop().callback(b"value")
        self.assertEqual(h.take_output(), b"value\r\n")
        h.feed(b"QUIT\r\n")
        self.assertTrue(h.closed)

    def test_fact_by_tail_calls(self) -> None:
        """
        The factorial of 10,000 by tail calls, at the default recursion
        limit.
        """
        self.assertEqual(
            self.ns["coroutine"](self.ns["fact"])(10000).result, math.factorial(10000)
        )

    def test_lookup_cancel_order(self) -> None:
        """
        Losing the connection runs the sub-request's canceller first, then
        the handler's C{finally}; nothing is written.
        """
        lookup = self.ns["Lookup"]()
        backend = Backend()
        lookup.backend = backend
        h = ProtocolHarness(lookup)
        h.feed(b"k1\r\n")
        h.lose_connection()
        self.assertEqual(backend.events, ["cancelled", "released k1"])
        self.assertIs(lookup.state, ConnectionState.CLOSED)
        self.assertEqual(h.take_output(), b"")

    def test_lookup_backend_failure(self) -> None:
        """
        A failed sub-request is answered with an error line, and the
        C{finally} still releases.
        """

        class Failing(Backend):
            def lookup(self, key: bytes) -> Deferred[bytes]:
                return fail(RuntimeError("down"))

        lookup = self.ns["Lookup"]()
        backend = Failing()
        lookup.backend = backend
        h = ProtocolHarness(lookup)
        h.feed(b"k1\r\n")
        self.assertEqual(h.take_output(), b"ERR backend unavailable\r\n")
        self.assertEqual(backend.events, ["released k1"])

    def test_upload_mixes_a_line_and_a_frame(self) -> None:
        """
        The Upload handler reads a line, then a 32-bit prefixed frame, and
        answers with a frame.
        """
        h = ProtocolHarness(self.ns["Upload"]())
        h.feed(b"notes\r\n" + struct.pack(">I", 5) + b"hello", chunk_size=2)
        reply = b"notes: 5"
        self.assertEqual(h.take_output(), struct.pack(">I", len(reply)) + reply)

    def test_tls_client_reads_the_echo(self) -> None:
        """
        The TLS example's handler writes its line and returns the echo.
        """
        hello = self.ns["Hello"]()
        h = ProtocolHarness(hello)
        self.assertEqual(h.take_output(), b"hello over TLS\n")
        h.feed(b"hello over TLS\n")
        self.assertEqual(self.successResultOf(hello.conversation), b"hello over TLS")

    def test_readme_handlers_are_state_protocols(self) -> None:
        """
        Every handler class the README defines is a StateProtocol.
        """
        for name in ("Echo", "Greeter", "Lookup", "Upload", "Hello"):
            self.assertTrue(issubclass(self.ns[name], StateProtocol), name)
