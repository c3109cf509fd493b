"""
txstateproto: Twisted protocol handlers written as coroutine state machines.

This module only re-exports the public names; the implementation lives in the
private modules beside it.
"""

from txstateproto._coroutine import Coroutine, TailCall, coroutine, noreturn
from txstateproto._errors import (
    CoroutineMisuseError,
    EndOfStreamError,
    FrameTooLongError,
    FramingError,
    LineTooLongError,
    NoreturnOutsideCoroutineError,
    ProtocolError,
    TailCallSwallowedError,
)
from txstateproto._version import __version__

__all__ = [
    "Coroutine",
    "CoroutineMisuseError",
    "EndOfStreamError",
    "FrameTooLongError",
    "FramingError",
    "LineTooLongError",
    "NoreturnOutsideCoroutineError",
    "ProtocolError",
    "TailCall",
    "TailCallSwallowedError",
    "__version__",
    "coroutine",
    "noreturn",
]
