"""
What the bench scripts share: building the C load generators of C{run.py}
and C{frames.py}, reading the generators' results, starting and stopping a
server process that announces its port, and counting a child Python's
instructions under callgrind (C{instructions.py}, C{instructions_kvstore.py},
C{opcodes.py}).

The scripts are run as C{python bench/<script>.py}, which puts C{bench/} on
C{sys.path}, so they import this module as C{_harness}.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LOADGEN_DIR = BENCH / "loadgen"
BUILD = REPO / "build"

#: How long a server may take to say which port it listens on.
START_TIMEOUT = 30


def callgrind_instructions(argv: Sequence[str]) -> int:
    """
    Run C{argv} (a Python command line: the interpreter is added) under
    valgrind's callgrind and return the instructions it executed.

    @param argv: The interpreter's arguments (a script or C{-c} code, then
        its own arguments).
    @return: The instruction count callgrind reports.
    @raise subprocess.CalledProcessError: If the child fails.
    @raise RuntimeError: If callgrind's output has no count.
    """
    import sys

    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            *argv,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(
            f"no instruction count in callgrind's output:\n{done.stderr}"
        )
    return int(found.group(1))


class BenchError(Exception):
    """
    A server or the load generator failed, or cannot be built: the run's
    figures would be wrong, so the benchmark stops with this message.
    """


def build_loadgen(name: str, progress: Callable[[str], None]) -> Path:
    """
    Compile C{bench/loadgen/<name>.c} into C{build/<name>} with the system C
    compiler (C{$CC}, else C{cc}), unless the executable is newer than the
    source and every header beside it (C{blast_common.h}).

    @param name: C{lineblast} or C{frameblast}.
    @param progress: Told the compiler command before it runs.
    @return: The executable.
    @raise BenchError: If there is no compiler or the build fails.
    """
    source = LOADGEN_DIR / f"{name}.c"
    target = BUILD / name
    inputs = [source, *LOADGEN_DIR.glob("*.h")]
    if target.exists() and target.stat().st_mtime >= max(
        path.stat().st_mtime for path in inputs
    ):
        return target
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise BenchError(f"no C compiler ({cc}) to build {source}")
    BUILD.mkdir(parents=True, exist_ok=True)
    command = [cc, "-O2", "-Wall", "-o", str(target), str(source)]
    progress("building the load generator: " + " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"building {name} failed:\n{done.stderr}")
    return target


def cc_version() -> str:
    """
    The first line of C{$CC --version} (C{cc} by default), or C{unknown}.
    """
    try:
        done = subprocess.run(
            [os.environ.get("CC", "cc"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    lines = done.stdout.splitlines()
    return lines[0] if lines else "unknown"


def parse_pairs(text: str) -> dict[str, str]:
    """
    Parse a load generator's result line of C{key=value} pairs.

    @param text: Its standard output.
    @return: Every pair, values as text.
    """
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


class ServerProcess:
    """
    A server process that prints C{PORT <n> LOOP <loop>} once it listens on
    127.0.0.1, its standard error going to a log file.

    @ivar process: The child process.
    @ivar port: The port it said it listens on.
    @ivar loop: The reactor or event loop class it said it runs.
    @ivar log_path: Where its standard error goes.
    """

    def __init__(
        self,
        command: Sequence[str],
        log_path: Path,
        name: str,
        own_session: bool = True,
        stdin_pipe: bool = False,
    ) -> None:
        """
        Start C{command} and wait for its C{PORT} line.

        @param command: The server's command line.
        @param log_path: Its standard error is appended here.
        @param name: What error messages call it.
        @param own_session: Start it in a session of its own, so that the
            scheduler's autogroups do not make it share the client's share
            of the CPU (see "Sessions" in C{bench/run.py}).
        @param stdin_pipe: Give it a pipe as standard input (a server run
            with C{--exit-on-eof} stops when the pipe closes).
        @raise BenchError: If it does not say its port within
            L{START_TIMEOUT} seconds.
        """
        RESULTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE if stdin_pipe else None,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO,
            start_new_session=own_session,
        )
        self.port = 0
        self.loop = ""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT)
        line = self.process.stdout.readline().decode() if ready else ""
        match = re.match(r"PORT (\d+) LOOP (\S+)", line)
        if match is None:
            self.stop()
            raise BenchError(
                f"{name} did not start (said {line!r}); see {self.log_path}"
            )
        self.port = int(match.group(1))
        self.loop = match.group(2)

    def stop(self) -> None:
        """
        Stop the server (SIGTERM, then SIGKILL after 10 s), reap it and close
        its pipes and log.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self._log.close()
