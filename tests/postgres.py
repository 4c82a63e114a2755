"""A PostgreSQL server for the team cache's tests: ``DATAFORMER_TEST_POSTGRES`` if set, else the one
on 127.0.0.1:5432 if it answers, else one started from the PostgreSQL binaries found on this
machine (``initdb`` in a temporary directory, as an unprivileged user when run as root), else
the tests skip saying why; under CI (``CI`` set) they fail instead, so CI never skips them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCAL = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(url: str) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(url, connect_timeout=3) as db:
            db.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """A PostgreSQL server of a test's own, from the binaries in ``bin_dir`` (``initdb`` in a
    temporary directory, run as nobody when the test runs as root): one it may stop and start."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir, self.root, self.port = bin_dir, Path(tempfile.mkdtemp(prefix="dfnb-pg-")), _free_port()
        self.data = self.root / "data"
        self.user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None  # initdb refuses root
        if self.user:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(self.bin_dir / program), *args], check=True, capture_output=True,
                       user=self.user.pw_uid if self.user else None, group=self.user.pw_gid if self.user else None)

    def start(self) -> None:
        """Start the server and wait until it accepts connections (pg_ctl -w)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        """Stop it at once, as a crash would (``pg_ctl stop -m immediate``)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def binaries() -> Path | None:
    """Where initdb and pg_ctl are, if anywhere."""
    return _binaries()


def _started(bin_dir: Path) -> Iterator[str]:  # pragma: no cover - only where no server runs
    server = PrivateServer(bin_dir)
    server.start()
    try:
        yield server.url
    finally:
        server.remove()


def server_url() -> Iterator[str]:
    """The URL of a server for this test session (see the module's docstring)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        yield unavailable("psycopg is not installed (pip install -e '.[test]')")
        return
    given = os.environ.get("DATAFORMER_TEST_POSTGRES")
    if given:
        yield given
        return
    if _answers(LOCAL):
        yield LOCAL
        return
    bin_dir = _binaries()
    if bin_dir is None:
        yield unavailable("no PostgreSQL server answers at 127.0.0.1:5432 and no initdb was found")
        return
    yield from _started(bin_dir)


def unavailable(why: str) -> str:
    if os.environ.get("CI"):
        pytest.fail(f"the team cache's tests need PostgreSQL and CI must run them: {why}")
    pytest.skip(f"the team cache's tests need PostgreSQL: {why}")


def session_url() -> str | None:
    """A server that answers now (``DATAFORMER_TEST_POSTGRES``, else 127.0.0.1:5432), or None:
    for tests that cannot take a fixture (Hypothesis state machines)."""
    given = os.environ.get("DATAFORMER_TEST_POSTGRES")
    if given:
        return given
    return LOCAL if _answers(LOCAL) else None


WHY_NOT = "no PostgreSQL server answers (DATAFORMER_TEST_POSTGRES, or 127.0.0.1:5432)"


def fresh_schema() -> str:
    """A schema name no other test uses."""
    return f"t_{uuid.uuid4().hex[:16]}"
