"""
An in-memory Redis-protocol server example; see C{README.md} beside this file.

C{twistd -n stateproto --protocol examples.kvstore.KVStoreProtocol --listen
tcp:6380} serves it from the checkout root. It is an example of the
framework, not a database: nothing is saved.
"""

from examples.kvstore.server import KVStoreProtocol
from examples.kvstore.store import Store

__all__ = ["KVStoreProtocol", "Store"]
