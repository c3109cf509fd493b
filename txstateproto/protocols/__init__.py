"""
Framing helpers for L{StateProtocol} handlers: readers and writers for common
wire formats, one module per framing.

Every reader is a function taking the protocol and returning a cancellable
Deferred, so a handler mixes framings freely on one connection (a line
header, then a length-prefixed body)::

    from txstateproto.protocols import read_frame, write_frame

    def start(self):
        while True:
            frame = yield read_frame(self, prefix_bits=32)
            write_frame(self, frame)

Every writer takes the protocol and the data. This module only re-exports;
the implementations live in L{netstring}, L{prefixed}, L{structs} and
L{resp}.
"""

from txstateproto.protocols.netstring import read_netstring, write_netstring
from txstateproto.protocols.prefixed import read_frame, write_frame
from txstateproto.protocols.resp import (
    NULL_ARRAY,
    ErrorReply,
    RESPProtocolError,
    SimpleString,
    encode_reply,
    read_command,
    read_commands,
    take_commands,
    wait_commands,
    write_reply,
)
from txstateproto.protocols.structs import read_struct, write_struct

__all__ = [
    "NULL_ARRAY",
    "ErrorReply",
    "RESPProtocolError",
    "SimpleString",
    "encode_reply",
    "read_command",
    "read_commands",
    "read_frame",
    "read_netstring",
    "read_struct",
    "take_commands",
    "wait_commands",
    "write_frame",
    "write_netstring",
    "write_reply",
    "write_struct",
]
