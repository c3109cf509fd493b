"""
A C{twistd stateproto} subprocess for tests: the real C{twistd} of this
virtualenv, run from the checkout (the checkout root as the whole
C{PYTHONPATH}, so it imports the code under test and finds the dropin in
C{twisted/plugins/}), listening on 127.0.0.1, its port read from the log
line the plugin writes when listening.

Waits have generous deadlines; they are safety nets against a hung test,
not timing assertions.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"

#: How long any one wait may take before the test gives up (a safety net).
DEADLINE = 60.0

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(")


def twistd_env() -> dict[str, str]:
    """
    The subprocess environment: ours, with the checkout root as the whole
    C{PYTHONPATH}.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("PYTHONSTARTUP", None)
    return env


def twistd(
    *args: str, cwd: Path = ROOT, timeout: float = DEADLINE
) -> subprocess.CompletedProcess[bytes]:
    """
    Run C{twistd args} to completion.
    """
    return subprocess.run(
        [str(TWISTD), *args],
        cwd=cwd,
        env=twistd_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )


class Server:
    """
    A C{twistd --pidfile= -n stateproto ...} subprocess, its log (its
    standard output and error, merged) and the port it listens on.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        *args: str,
        cwd: Path = ROOT,
        activate: socket.socket | None = None,
        tac: Path | None = None,
    ):
        """
        Start twistd and wait until it listens.

        @param args: C{twistd stateproto}'s arguments (or, with C{tac},
            twistd's own).
        @param tac: Run this C{.tac} file (C{twistd -ny}) instead of the
            C{stateproto} subcommand.

        @param activate: A listening socket to hand over as systemd does
            for socket activation: as file descriptor 3, named C{echo},
            with C{LISTEN_PID} set to twistd's process ID.
        """
        self.case = case
        self.output = bytearray()
        if tac is None:
            command = [str(TWISTD), "--pidfile=", "-n", "stateproto", *args]
        else:
            command = [str(TWISTD), "--pidfile=", "-n", "-y", str(tac), *args]
        if activate is not None:
            # The shell moves the socket from its stdin to fd 3, then execs
            # twistd, which keeps the shell's process ID ($$).
            command = [
                "sh",
                "-c",
                "exec 3<&0 </dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 "
                'LISTEN_FDNAMES=echo; exec "$@"',
                "sh",
                *command,
            ]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=twistd_env(),
            stdin=activate.fileno() if activate is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        case.addCleanup(self._kill)
        self.port = int(self.wait_for(LISTENING).group(1))

    def _kill(self) -> None:
        """
        Make sure the subprocess is gone when the test ends.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()

    def wait_for(self, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        """
        Read the log until C{pattern} matches in it.

        @raise AssertionError: If the process ends (or the safety deadline
            passes) first; the message holds the log.
        """
        stdout = self.process.stdout
        assert stdout is not None
        end = time.monotonic() + DEADLINE
        while True:
            found = pattern.search(self.output)
            if found is not None:
                return found
            remaining = end - time.monotonic()
            ready, _, _ = select.select([stdout], [], [], max(remaining, 0))
            chunk = os.read(stdout.fileno(), 65536) if ready else b""
            if not chunk:
                self.case.fail(
                    f"{pattern.pattern!r} never appeared in the log:\n"
                    + self.output.decode("utf-8", "replace")
                )
            self.output += chunk

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """
        Send C{signum} and wait for the process to exit.

        @return: The exit status and the whole log.
        """
        self.process.send_signal(signum)
        return self.wait()

    def wait(self) -> tuple[int, str]:
        """
        Wait for the process to exit.

        @return: The exit status and the whole log.
        """
        stdout = self.process.stdout
        assert stdout is not None
        rest, _ = self.process.communicate(timeout=DEADLINE)
        self.output += rest
        return self.process.returncode, self.output.decode("utf-8", "replace")

    def connect(self) -> socket.socket:
        """
        A client socket connected to the server's TCP port.
        """
        client = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)
        self.case.addCleanup(client.close)
        return client
