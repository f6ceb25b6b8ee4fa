"""The store's databases for tests: an SQLite file, and a throwaway PostgreSQL server of the test session.

The server is Debian's `postgresql` (setup.sh installs it): `initdb` and `pg_ctl` from
/usr/lib/postgresql/<version>/bin, in a temporary folder, listening on a unix socket only (no TCP
port to collide with). Every test gets its own database. Without the package the PostgreSQL half of
the store's tests skips locally, naming the install command, and fails in CI (env CI set).
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

INSTALL = "apt-get install -y postgresql"
_databases = itertools.count()


def postgres_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def _as_server_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; the package's `postgres` user runs it then.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def throwaway_postgres():
    """A PostgreSQL server in a temporary folder on a unix socket (no TCP port); yields the socket folder."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="pg-"))  # short: a unix socket path has at most 107 characters
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    run = lambda *c: subprocess.run(_as_server_user([str(binaries / c[0]), *c[1:]]), check=True, timeout=60,
                                    capture_output=True)
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run("pg_ctl", "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "30", "-o",
            f"-k {folder} -c listen_addresses='' -c fsync=off -c max_connections=60", "start")
        yield folder
    finally:
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       timeout=60, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The socket folder of a PostgreSQL server that lives for the test session."""
    if postgres_bin() is None:
        message = f"PostgreSQL is not installed (initdb, pg_ctl); install it with: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with throwaway_postgres() as folder:
        yield folder


def new_postgres_database(socket_folder: Path) -> str:
    """A fresh, empty database on the session's server; its SQLAlchemy URL."""
    import psycopg

    name = f"store_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(host=str(socket_folder), user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@/{name}?host={socket_folder}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """The URL of an empty store database: each store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    return new_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store(store_url, tmp_path):
    from store import Store

    opened = Store.open(store_url, blob_root=tmp_path / "blobs", personal_models_dir=tmp_path / "personal")
    yield opened
    opened.close()
