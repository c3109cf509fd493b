"""
A client for L{StartTLSServer}: it reads the greeting, says C{EHLO}, upgrades
with C{STARTTLS} (verifying the server's certificate and host name), sends
C{ECHO} lines over TLS and says C{QUIT}.

Run it against a server started as README.md shows::

    python -m examples.starttls.client --ca cert.pem "hello" "over TLS"

which prints the server's C{ECHO} replies and the identity in its
certificate.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator, Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from txstateproto import ProtocolError, StateProtocol

# TODO(issue 8): import these from txstateproto once it exports them.
from txstateproto._tls import PeerIdentity, connect, start_tls

#### Errors #####################################################################


class UnexpectedReplyError(ProtocolError):
    """
    The server answered with another reply code than the command expects.

    @ivar expected: The code expected, such as C{b"220"}.
    @ivar reply: The reply's lines as received.
    """

    def __init__(self, expected: bytes, reply: Sequence[bytes]) -> None:
        self.expected = expected
        self.reply = list(reply)
        super().__init__(
            f"expected a {expected.decode()} reply, got {b' / '.join(reply)!r}"
        )


#### The handler ###############################################################


class StartTLSClient(StateProtocol):
    """
    Upgrade to TLS, then send each of C{texts} as C{ECHO} and collect the
    replies.

    The conversation's result is the list of echoed texts.

    @ivar hostname: The name the server's certificate must carry.
    @ivar trust_root: What signs acceptable server certificates (see
        C{optionsForClientTLS}); C{None} for the platform's authorities.
    @ivar texts: The texts to echo.
    @ivar server_identity: The server's L{PeerIdentity}, once upgraded.
    """

    def __init__(
        self,
        hostname: str,
        texts: Sequence[bytes],
        trust_root: Any = None,
    ) -> None:
        super().__init__()
        self.hostname = hostname
        self.texts = list(texts)
        self.trust_root = trust_root
        self.server_identity: PeerIdentity | None = None

    def start(self) -> Generator[Any, Any, list[bytes]]:
        """
        Greeting, EHLO, STARTTLS, EHLO again over TLS, the ECHOs, QUIT.
        """
        yield from self.reply(b"220")
        self.write_line(b"EHLO client.example")
        capabilities = yield from self.reply(b"250")
        if b"STARTTLS" not in [line[4:] for line in capabilities]:
            raise UnexpectedReplyError(b"250-STARTTLS", capabilities)
        self.write_line(b"STARTTLS")
        yield from self.reply(b"220")
        trust = self.trust_root or platformTrust()  # type: ignore[no-untyped-call]
        options = optionsForClientTLS(self.hostname, trustRoot=trust)
        self.server_identity = yield start_tls(self, options, timeout=30)
        self.write_line(b"EHLO client.example")
        yield from self.reply(b"250")
        echoed = []
        for text in self.texts:
            self.write_line(b"ECHO " + text)
            [line] = yield from self.reply(b"250")
            echoed.append(line[4:])
        self.write_line(b"QUIT")
        yield from self.reply(b"221")
        return echoed

    def reply(self, code: bytes) -> Generator[Any, Any, list[bytes]]:
        """
        Read one reply (its C{NNN-} continuation lines, then its C{NNN }
        last line) and check its code.

        @return: The reply's lines.
        @raise UnexpectedReplyError: If the code is not C{code}.
        """
        lines = []
        while True:
            line = yield self.read_line(timeout=30)
            lines.append(line)
            if line[3:4] != b"-":
                break
        if any(line[:3] != code for line in lines):
            raise UnexpectedReplyError(code, lines)
        return lines


#### Running it ###################################################################


@defer.inlineCallbacks
def main(reactor: Any, *argv: str) -> Generator[Any, Any, None]:
    """
    Connect, echo the texts given on the command line, print the replies.
    """
    parser = argparse.ArgumentParser(prog="python -m examples.starttls.client")
    parser.add_argument("--connect", default="tcp:127.0.0.1:8025")
    parser.add_argument("--hostname", default="localhost")
    parser.add_argument("--ca", help="PEM file of the authority to trust")
    parser.add_argument("texts", nargs="*", default=["hello"])
    args = parser.parse_args(argv)
    # Warnings and errors (a refused certificate, an unexpected reply) go to
    # standard error; print() stays on standard output.
    warnings = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([warnings], redirectStandardIO=False)
    trust = None
    if args.ca:
        with open(args.ca, "rb") as f:
            trust = Certificate.loadPEM(f.read())
    texts = [t.encode() for t in args.texts]
    client = StartTLSClient(args.hostname, texts, trust)
    yield connect(reactor, args.connect, client)
    echoed = yield client.conversation
    yield client.when_closed()
    if echoed is None:
        raise SystemExit(1)  # the failure has been logged
    identity = client.server_identity
    if identity is not None:
        names = ", ".join(identity.dns_names)
        print(f"server certificate: {identity.subject} (DNS names: {names})")
    for line in echoed:
        print(line.decode())


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
