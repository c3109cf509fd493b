"""
Tests for L{txstateproto.protocols}' public surface: what it re-exports.
"""

from __future__ import annotations

import importlib

from twisted.trial.unittest import SynchronousTestCase

import txstateproto.protocols as protocols

#: Each framing module, with the names it must export.
_MODULES = {
    "netstring": {"read_netstring", "write_netstring"},
    "prefixed": {"read_frame", "write_frame"},
    "structs": {"read_struct", "write_struct"},
    "resp": {
        "NULL_ARRAY",
        "ErrorReply",
        "RESPProtocolError",
        "SimpleString",
        "encode_reply",
        "read_command",
        "read_commands",
        "take_commands",
        "wait_commands",
        "write_reply",
    },
}


class ProtocolsExportTests(SynchronousTestCase):
    """
    C{txstateproto.protocols} re-exports every framing module's names.
    """

    def test_all_is_the_union_of_the_modules(self) -> None:
        """The package exports exactly what its modules export."""
        expected: set[str] = set()
        for name, names in _MODULES.items():
            module = importlib.import_module(f"txstateproto.protocols.{name}")
            self.assertEqual(set(module.__all__), names, name)
            expected |= names
        self.assertEqual(set(protocols.__all__), expected)

    def test_exports_are_the_modules_objects(self) -> None:
        """Each exported name is its module's object, with a docstring."""
        for name, names in _MODULES.items():
            module = importlib.import_module(f"txstateproto.protocols.{name}")
            for attribute in names:
                exported = getattr(protocols, attribute)
                self.assertIs(exported, getattr(module, attribute))
                self.assertTrue(exported.__doc__, attribute)
