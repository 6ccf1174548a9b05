"""A real PostgreSQL server for tests and benchmarks: Debian's `postgresql` package,
`initdb` into a temporary folder, listening on a free port on 127.0.0.1 (fsync off).
Run as root, the server runs as the `postgres` user (initdb refuses root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path


def pg_bin() -> Path:
    """The newest installed PostgreSQL's bin folder."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (apt-get install -y postgresql); the team-store "
            "tests need a real server"
        )
    return found[-1].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Connections over TCP need this password (scram-sha-256), so tests can check that it
# never shows in errors, logs or tags.
PASSWORD = "pw-Secret_4711"


class PgServer:
    """One PostgreSQL cluster in a temporary folder. `url(db)` names a database in it."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self._n = 0
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, cwd=self.dir)

    def start(self) -> None:
        opts = (
            f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c max_connections=200"
        )
        r = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
            check=False,
        )
        if r.returncode != 0:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {r.stderr}\n{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once, as when the machine or the
        OOM killer takes the whole server down."""
        import psutil

        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        master = psutil.Process(pid)
        procs = [master, *master.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)

    def url(self, db: str = "postgres", user: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as c:
            c.execute(statement)

    def new_database(self, prefix: str = "t", template: str | None = None) -> str:
        """A fresh database (empty, or a copy of the database `template`); returns its URL."""
        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}"
        self.sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database that `url` names (its connections are cut first). A test's
        database is dropped when the test ends, so the cluster stays small: a session makes
        hundreds of them, about 10 MB each, and removing them all at the end took minutes."""
        import psycopg

        name = url.rsplit("/", 1)[-1]
        with contextlib.suppress(psycopg.Error):  # left for close() to remove
            self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
