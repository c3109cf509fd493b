"""
A STARTTLS-capable line protocol: L{StartTLSServer}, to serve with
C{twistd stateproto --protocol examples.starttls.StartTLSServer}, and in
C{client.py} a client built on txstateproto's own connect helper. See
README.md.
"""

from examples.starttls.server import StartTLSServer

__all__ = ["StartTLSServer"]
