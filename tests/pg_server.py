"""A throw-away PostgreSQL server on loopback for the store tests (Debian's postgresql).

``METAREC_TEST_POSTGRES_URL`` points the tests at a server that is already running (what
``.ci/run`` may do); otherwise one is started here with initdb / pg_ctl in a temporary folder
(as the ``postgres`` user when the tests run as root, since PostgreSQL refuses root) and stopped
at the end. Missing server binaries are an error, never a skip: .ci/run installs them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(
            f"PostgreSQL's {name} was not found: install Debian's postgresql package "
            "(.ci/run does) or set METAREC_TEST_POSTGRES_URL"
        )
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_url() -> Iterator[str]:
    given = os.environ.get("METAREC_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="metarec-pg-"))
    if as_root:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    subprocess.run(
        [*run_as, _bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=on"
    ctl = [*run_as, _bin("pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log")]
    subprocess.run([*ctl, "-o", options, "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
