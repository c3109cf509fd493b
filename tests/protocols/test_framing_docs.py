"""
Tests for C{docs/framing.md}: its Python blocks are formatted as C{ruff
format} formats them, and its examples run and do what the text says.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.helpers import idle
from txstateproto.testing import ProtocolHarness

_REPO = Path(__file__).resolve().parents[2]
_DOC = _REPO / "docs" / "framing.md"


def _python_blocks() -> list[str]:
    """
    The Python code blocks of the document, in order.
    """
    text = _DOC.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def _run(*blocks: str) -> dict[str, Any]:
    """
    Execute blocks in one fresh namespace and return it.
    """
    namespace: dict[str, Any] = {"__name__": "framing_doc"}
    for block in blocks:
        exec(compile(block, str(_DOC), "exec"), namespace)
    return namespace


def _frame(data: bytes) -> bytes:
    """
    A 32-bit length-prefixed frame, encoded by hand.
    """
    return len(data).to_bytes(4, "big") + data


class FramingDocTests(SynchronousTestCase):
    """
    The framing document's code.
    """

    def setUp(self) -> None:
        self.blocks = _python_blocks()

    def test_has_the_examples(self) -> None:
        """The document has its five Python blocks."""
        self.assertEqual(len(self.blocks), 5)

    def test_blocks_are_formatted(self) -> None:
        """Every Python block is exactly what ruff format makes of it."""
        ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
        ruff = ruff or shutil.which("ruff")
        if ruff is None:
            raise SkipTest("ruff is not installed")
        for block in self.blocks:
            done = subprocess.run(
                [ruff, "format", "--diff", "--stdin-filename", "block.py", "-"],
                input=block,
                capture_output=True,
                text=True,
                cwd=_REPO,
                check=False,
            )
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_import_block(self) -> None:
        """The import block names only what the package exports."""
        namespace = _run(self.blocks[0])
        self.assertIn("read_command", namespace)

    def test_upload_example(self) -> None:
        """A line then a length-prefixed frame are read from one stream."""
        upload = _run(self.blocks[1])["Upload"]
        h = ProtocolHarness(upload())
        h.feed(b"photo.jpg\r\n" + _frame(b"x" * 1000), chunk_size=7)
        self.assertEqual(h.take_output(), _frame(b"photo.jpg: 1000"))
        self.assertTrue(h.closed)

    def test_mini_redis_session(self) -> None:
        """The harness session in the document runs as written."""
        _run(self.blocks[2], self.blocks[3])

    def test_mini_redis_resp2(self) -> None:
        """A connection that never sends HELLO 3 gets RESP2 replies."""
        mini_redis = _run(self.blocks[2])["MiniRedis"]
        h = ProtocolHarness(mini_redis())
        h.feed(b"PING\r\nSET k v\r\nGET k\r\nGET nope\r\nHELLO 2\r\nFLUSHALL\r\n")
        self.assertEqual(
            h.take_output(),
            b"+PONG\r\n+OK\r\n$1\r\nv\r\n$-1\r\n"
            b"*4\r\n$6\r\nserver\r\n$4\r\nmini\r\n$5\r\nproto\r\n:2\r\n"
            b"-ERR unknown command\r\n",
        )
        self.assertFalse(h.closed)

    def test_records_example_in_any_chunking(self) -> None:
        """
        The record reader of the document reads the same records whether
        they arrive whole (scanned) or a byte at a time (counted reads).
        """
        records = _run(self.blocks[4])["Records"]
        stream = b"\x01\x00\x02hi\x07\x00\x00\x02\x00\x03abc"
        for chunk_size in (None, 1, 4):
            h = ProtocolHarness(records())
            h.feed(stream, chunk_size=chunk_size)
            self.assertEqual(h.take_output(), b"1 hi\r\n7 \r\n2 abc\r\n")

    def test_record_scan_is_used_when_buffered(self) -> None:
        """
        A record wholly buffered is taken by the document's scan in one
        step, with the bytes after it left buffered.
        """
        namespace = _run(self.blocks[4])
        h = ProtocolHarness(idle())
        h.feed(b"\x05\x00\x01x\x09")
        taken: list[object] = []
        take = h.protocol.take_scanned

        def spy(scan: Any, limit: int) -> object:
            taken.append(take(scan, limit))
            return taken[-1]

        h.protocol.take_scanned = spy  # type: ignore[method-assign]
        d = namespace["read_record"](h.protocol)
        self.assertEqual(self.successResultOf(d), (5, b"x"))
        self.assertEqual(taken, [(5, b"x")])
        self.assertEqual(h.protocol.peek(5), b"\x09")
