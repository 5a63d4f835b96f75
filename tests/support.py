"""Helpers of the job-running tests: putting jobs, users made for a test and
removed after it (each with a folder it may write)."""

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import greenstalk
import pytest
from conftest import tool

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd)")
# The venv's interpreter may sit where other users cannot reach it (pyenv under
# /root); the system one with the venv's packages on its path runs the listener.
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class TestUser:
    """A login made by useradd: its name, ids, home and a folder it owns."""

    name: str
    uid: int
    gid: int
    home: Path
    folder: Path


def user_factory() -> Iterator:
    """Yields a maker of uniquely named users (with a home); removes them after.

    Test modules wrap it in a fixture: `yield from user_factory()`.
    """
    made: list[TestUser] = []
    scratch = Path(tempfile.mkdtemp(prefix="glowusers-"))
    scratch.chmod(0o755)

    def make() -> TestUser:
        name = f"glowt{uuid.uuid4().hex[:8]}"
        home = scratch / name
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", str(home), "--shell",
             "/bin/sh", name],
            check=True, capture_output=True,
        )  # fmt: skip
        entry = pwd.getpwnam(name)
        folder = scratch / f"{name}-files"
        folder.mkdir()
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        user = TestUser(name, entry.pw_uid, entry.pw_gid, home, folder)
        made.append(user)
        return user

    yield make
    for user in made:
        subprocess.run(["userdel", "--force", user.name], capture_output=True)
    shutil.rmtree(scratch, ignore_errors=True)


def put(*args: str) -> int:
    """Runs glow-put with `args`; returns the job id it printed."""
    result = tool("glow-put", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def gone(client, job_id: int) -> bool:
    """Tells whether a job has been deleted."""
    try:
        client.stats_job(job_id)
    except greenstalk.NotFoundError:
        return True
    return False
