"""
The line echo server example; see C{README.md} beside this file.

C{twistd -n stateproto --protocol examples.echo_server.EchoServer} serves it.
"""

from examples.echo_server.echo import EchoServer

__all__ = ["EchoServer"]
