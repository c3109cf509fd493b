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
from txstateproto._protocol import ConnectionState, StateProtocol
from txstateproto._tls import (
    PeerIdentity,
    TLSHandshakeError,
    connect,
    mutual_tls_factory,
    peer_identity,
    start_tls,
)
from txstateproto._version import __version__

__all__ = [
    "ConnectionState",
    "Coroutine",
    "CoroutineMisuseError",
    "EndOfStreamError",
    "FrameTooLongError",
    "FramingError",
    "LineTooLongError",
    "NoreturnOutsideCoroutineError",
    "PeerIdentity",
    "ProtocolError",
    "StateProtocol",
    "TLSHandshakeError",
    "TailCall",
    "TailCallSwallowedError",
    "__version__",
    "connect",
    "coroutine",
    "mutual_tls_factory",
    "noreturn",
    "peer_identity",
    "start_tls",
]

# Tracebacks and reprs name the public path (txstateproto.Coroutine), not the
# private module that happens to define the object.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("txstateproto._"):
        _obj.__module__ = __name__
del _name, _obj
