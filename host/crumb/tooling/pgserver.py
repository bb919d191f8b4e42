"""A private PostgreSQL cluster for tests, benchmarks and examples.

    with PostgresServer() as pg:            # initdb into a temp dir, pg_ctl start
        psycopg.connect(pg.dsn())          # the superuser "postgres", over a unix socket
        pg.create_role("app")              # a login role without privileges (RLS applies to it)

The cluster is the system's PostgreSQL (`tools/setup_test_env.sh` installs
postgresql-15 and postgresql-plpython3-15), initialised in a temporary
directory and listening only on a unix socket in that directory: no TCP port
to pick or to collide on, and no other user of the machine can connect.
initdb and postgres refuse to run as root, so as root they run as the user
``postgres`` (which the Debian package creates), or ``nobody``; the
directory is theirs. ``pg_ctl start -w`` returns when the server accepts
connections; ``close()`` stops it (fast shutdown) and deletes the directory,
and a finalizer stops it if the object is dropped unclosed. A missing
PostgreSQL raises ``ServiceMissing``, so a suite that needs it fails instead
of skipping.

Durability is off (fsync, full_page_writes, synchronous_commit): the data is
thrown away afterwards, and benchmark figures then measure the work of each
transaction rather than the disk.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import Self

from .localservices import ServiceFailed, ServiceMissing

PORT = 5432  # only names the socket file (.s.PGSQL.5432): nothing listens on TCP
SUPERUSER = "postgres"
SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "shared_buffers": "16MB",
    "max_connections": "30",
    "log_min_messages": "warning",
}


def bindir() -> Path:
    """The directory of initdb, pg_ctl and postgres: CRUMB_PG_BINDIR, or the newest Debian install."""
    given = os.environ.get("CRUMB_PG_BINDIR")
    candidates = [given] if given else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                              key=lambda p: int(Path(p).parent.name), reverse=True)
    for path in candidates:
        if os.access(os.path.join(path, "initdb"), os.X_OK) and os.access(os.path.join(path, "pg_ctl"), os.X_OK):
            return Path(path)
    raise ServiceMissing("PostgreSQL is not installed: run tools/setup_test_env.sh "
                         "(apt-get install postgresql-15 postgresql-plpython3-15)")


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; None: as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceMissing("running as root, and there is no user 'postgres' or 'nobody' to run PostgreSQL as")


def server_env() -> dict[str, str]:
    """This environment without Python's variables: the server's PL/Python must find crumb only
    where `crumb pg install` recorded it, as on a real server, not through our PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}


def _stop(pg_ctl: list[str], data: str, base: str) -> None:
    # Used by weakref.finalize: a cluster must not outlive a crashed test run.
    subprocess.run([*pg_ctl, "stop", "-D", data, "-m", "immediate", "-w"], capture_output=True, check=False,
                   env=server_env())
    shutil.rmtree(base, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL cluster of our own, on a unix socket in a temporary directory."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bin = bindir()
        self.settings = {**SETTINGS, **(settings or {})}
        self.dir: Path | None = None
        self._finalizer: weakref.finalize | None = None

    def _as_user(self, *cmd: str) -> list[str]:
        user = _run_as()
        if user is None:
            return list(cmd)
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *cmd]

    @property
    def socket_dir(self) -> str:
        assert self.dir is not None, "not started"
        return str(self.dir)

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    def dsn(self, user: str = SUPERUSER, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={PORT} user={user} dbname={dbname}"

    def start(self) -> Self:
        if self.dir is not None:
            raise RuntimeError("PostgreSQL is already running")
        base = Path(tempfile.mkdtemp(prefix="crumb-pg-"))
        self.dir = base
        user = _run_as()
        if user is not None:
            os.chown(base, user.pw_uid, user.pw_gid)
        data = str(base / "data")
        pg_ctl = self._as_user(str(self.bin / "pg_ctl"))
        self._finalizer = weakref.finalize(self, _stop, pg_ctl, data, str(base))
        initdb = self._as_user(str(self.bin / "initdb"), "-D", data, "-U", SUPERUSER, "--auth=trust",
                               "-E", "UTF8", "--no-locale", "--no-sync")
        done = subprocess.run(initdb, capture_output=True, text=True, check=False, cwd=base, env=server_env())
        if done.returncode != 0:
            self.close()
            raise ServiceFailed(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        options = " ".join([f"-c {k}={v}" for k, v in self.settings.items()]
                           + [f"-c unix_socket_directories='{base}'", f"-p {PORT}"])
        done = subprocess.run([*pg_ctl, "start", "-D", data, "-l", str(self.log_path), "-w", "-t", "120",
                               "-o", options], capture_output=True, text=True, check=False, cwd=base,
                              env=server_env())
        if done.returncode != 0:
            log = self.log_tail()
            self.close()
            raise ServiceFailed(f"PostgreSQL did not start: {done.stderr.strip()}\nlog:\n{log}")
        return self

    def psql(self, sql: str, user: str = SUPERUSER, dbname: str = "postgres") -> str:
        """Run SQL with psql (ON_ERROR_STOP); its output, or ServiceFailed with its errors."""
        psql = shutil.which("psql") or str(self.bin / "psql")
        done = subprocess.run([psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(user, dbname),
                               "-c", sql], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceFailed(f"psql: {done.stderr.strip()}")
        return done.stdout

    def python_path(self, *, stage: bool = False) -> list[str] | None:
        """What to give ``crumb pg install --python-path`` for this cluster; None: the default.

        The default is where this Python imports crumb and its dependencies from.
        When we are root and the server runs as another user, those directories may
        be out of its reach (a checkout under /root, mode 0700). Then the packages
        the backend imports are copied into the cluster's directory, which that
        user owns, and their copy is the path: a cluster only lives as long as the
        test or benchmark that made it. ``stage=True`` copies in any case.
        """
        from ..services.pg.install import BACKEND_MODULES, module_files

        user = _run_as()
        files = module_files()
        if not stage and (user is None or all(self._readable(f) for f in files.values())):
            return None
        assert self.dir is not None, "not started"
        copy = self.dir / "python"
        copy.mkdir(exist_ok=True)
        for name in BACKEND_MODULES:
            origin = Path(files[name])
            if origin.name == "__init__.py":
                shutil.copytree(origin.parent, copy / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, copy / origin.name)
        if user is not None:
            for path in [copy, *copy.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
        return [str(copy)]

    def _readable(self, path: str) -> bool:
        """Whether the server's user can read ``path`` (every directory above it included)."""
        done = subprocess.run(self._as_user("test", "-r", path), capture_output=True, check=False)
        return done.returncode == 0

    def create_role(self, name: str) -> str:
        """A login role without superuser or BYPASSRLS: row-level security applies to it. Returns its DSN."""
        self.psql(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOBYPASSRLS')
        return self.dsn(name)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        if self.dir is None:
            return
        data = str(self.dir / "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run([*self._as_user(str(self.bin / "pg_ctl")), "stop", "-D", data, "-m", "fast", "-w"],
                           capture_output=True, check=False, env=server_env())
        if self._finalizer is not None:
            self._finalizer()  # immediate stop if the fast one did not finish, then the directory goes
            self._finalizer = None
        self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
