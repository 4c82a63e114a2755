"""A PostgreSQL server for the team cache's tests: ``DATAFORMER_TEST_POSTGRES`` if set, else the one
on 127.0.0.1:5432 if it answers, else one started from the PostgreSQL binaries found on this
machine (``initdb`` in a temporary directory, as an unprivileged user when run as root), else
the tests skip saying why; under CI (``CI`` set) they fail instead, so CI never skips them.
"""

from __future__ import annotations

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


def _started(bin_dir: Path) -> Iterator[str]:  # pragma: no cover - only where no server runs
    root = Path(tempfile.mkdtemp(prefix="dfnb-pg-"))
    data, port = root / "data", _free_port()
    user = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as nobody, in a directory it owns
        user = pwd.getpwnam("nobody")
        os.chown(root, user.pw_uid, user.pw_gid)

    def run(*args: str) -> None:
        subprocess.run(list(args), check=True, capture_output=True,
                       user=user.pw_uid if user else None, group=user.pw_gid if user else None)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def server_url() -> Iterator[str]:
    """The URL of a server for this test session (see the module's docstring)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        yield _unavailable("psycopg is not installed (pip install -e '.[test]')")
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
        yield _unavailable("no PostgreSQL server answers at 127.0.0.1:5432 and no initdb was found")
        return
    yield from _started(bin_dir)


def _unavailable(why: str) -> str:
    if os.environ.get("CI"):
        pytest.fail(f"the team cache's tests need PostgreSQL and CI must run them: {why}")
    pytest.skip(f"the team cache's tests need PostgreSQL: {why}")


def fresh_schema() -> str:
    """A schema name no other test uses."""
    return f"t_{uuid.uuid4().hex[:16]}"
