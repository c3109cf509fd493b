"""
Tests that packaging keeps the C{twistd stateproto} plugin: the wheel holds
the dropin (and nothing that would shadow Twisted's own C{twisted/} files),
and C{twistd} finds the plugin after C{pip install} of that wheel and after
C{pip install -e} of the checkout, each in a fresh virtualenv.

Packaging refactors have silently dropped such plugins in other projects,
and nothing else would notice: the checkout's own tests find the dropin on
the checkout root whatever the wheel holds.

These tests build and install for real, so they need what C{pip install .}
needs: the build backend and the dependencies from the package index (or
pip's cache). Each step has a generous deadline, a safety net only.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
DROPIN = "twisted/plugins/txstateproto_plugin.py"

#: Seconds any one pip or twistd run may take (a safety net).
DEADLINE = 600.0


def _env() -> dict[str, str]:
    """
    The environment for pip and the installed twistd: ours, without
    anything that would put the checkout on C{sys.path}.
    """
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_ROOT_USER_ACTION"] = "ignore"
    return env


def _run(*args: str | Path, cwd: Path) -> str:
    """
    Run a command to completion; fail with its output if it fails.

    @return: Its standard output and error, merged.
    """
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=DEADLINE,
        check=False,
    )
    output = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in args)} exited {result.returncode}:\n{output}"
        )
    return output


@functools.cache
def _scratch() -> Path:
    """
    A directory for this process's builds and virtualenvs, removed at exit.
    """
    directory = Path(tempfile.mkdtemp(prefix="txstateproto-packaging-"))
    atexit.register(shutil.rmtree, directory, True)
    return directory


@functools.cache
def built_wheel() -> Path:
    """
    Build the wheel from the checkout, once per process.

    @return: Its path.
    """
    out = _scratch() / "wheel"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, ROOT, cwd=ROOT)
    [wheel] = out.glob("txstateproto-*.whl")
    return wheel


def fresh_venv(name: str) -> Path:
    """
    Make a fresh virtualenv (no system site-packages) without pip of its
    own: L{pip_install} installs into it with our pip (C{pip --python}),
    which saves the seconds C{ensurepip} takes.

    @return: Its C{bin} directory.
    """
    venv = _scratch() / name
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=_scratch())
    return venv / "bin"


def pip_install(bin_dir: Path, *args: str | Path) -> None:
    """
    C{pip install args} into the virtualenv whose C{bin} is C{bin_dir}.
    """
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        bin_dir / "python",
        "install",
        "--quiet",
        # Byte-compiling Twisted costs more CPU than the rest of the install.
        "--no-compile",
        *args,
        cwd=_scratch(),
    )


class WheelContentsTests(SynchronousTestCase):
    """
    What the built wheel holds.
    """

    def test_wheel_holds_the_dropin_and_no_twisted_package_files(self) -> None:
        """The wheel has the dropin, no twisted/__init__.py, no
        twisted/plugins/__init__.py, no dropin.cache, and nothing else
        outside the package."""
        with zipfile.ZipFile(built_wheel()) as wheel:
            names = wheel.namelist()
        self.assertIn(DROPIN, names)
        self.assertIn("txstateproto/tap.py", names)
        self.assertIn("txstateproto/py.typed", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertEqual([n for n in names if n.endswith("dropin.cache")], [])
        self.assertEqual([n for n in names if "__pycache__" in n], [])
        outside = [
            n
            for n in names
            if not n.startswith(("txstateproto/", "txstateproto-")) and n != DROPIN
        ]
        self.assertEqual(outside, [])

    def test_dropin_imports_nothing_from_the_package(self) -> None:
        """The shipped dropin names txstateproto.tap only as a string."""
        with zipfile.ZipFile(built_wheel()) as wheel:
            source = wheel.read(DROPIN).decode()
        imports = [
            line
            for line in source.splitlines()
            if line.startswith(("import ", "from "))
        ]
        self.assertEqual(
            imports, ["from twisted.application.service import ServiceMaker"]
        )
        self.assertIn('"txstateproto.tap"', source)


class InstalledPluginTests(SynchronousTestCase):
    """
    twistd finds C{stateproto} in fresh virtualenvs, from a directory that
    is not the checkout.
    """

    def assert_plugin_found(self, bin_dir: Path) -> None:
        """
        Run the virtualenv's twistd from an empty directory and check it
        lists and runs C{stateproto} from the installed package.
        """
        elsewhere = Path(tempfile.mkdtemp(dir=_scratch()))
        listing = _run(bin_dir / "twistd", "--help", cwd=elsewhere)
        self.assertRegex(listing, r"\n\s+stateproto\s+Serve a txstateproto")
        options = _run(bin_dir / "twistd", "stateproto", "--help", cwd=elsewhere)
        self.assertIn("--max-connections=", options)

    def test_wheel_install(self) -> None:
        """After pip install of the wheel, twistd lists stateproto, served
        from site-packages (not the checkout)."""
        bin_dir = fresh_venv("venv-wheel")
        pip_install(bin_dir, built_wheel())
        self.assert_plugin_found(bin_dir)
        where = _run(
            bin_dir / "python",
            "-c",
            "import txstateproto.tap, twisted.plugins.txstateproto_plugin as p;"
            "print(txstateproto.tap.__file__); print(p.__file__)",
            cwd=_scratch(),
        )
        self.assertNotIn(str(ROOT), where)
        self.assertIn("site-packages", where)

    def test_editable_install(self) -> None:
        """After pip install -e of the checkout, twistd lists stateproto,
        served from the checkout."""
        bin_dir = fresh_venv("venv-editable")
        pip_install(bin_dir, "--editable", ROOT)
        self.assert_plugin_found(bin_dir)
        where = _run(
            bin_dir / "python",
            "-c",
            "import txstateproto.tap; print(txstateproto.tap.__file__)",
            cwd=_scratch(),
        )
        self.assertEqual(where.strip(), str(ROOT / "txstateproto" / "tap.py"))
