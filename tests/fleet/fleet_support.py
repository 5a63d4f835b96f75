"""Helpers and fixtures for the fleet tests: real test hosts, a deployed fleet.

The hosts come from bin/testhosts (sshd in a network namespace, Debian 12 and 13
booted with systemd-nspawn); site.yml deploys beanstalkd and the listeners once per
session. GLOW_TESTHOSTS_KEEP=1 leaves the hosts up afterwards for a look around;
GLOW_TESTHOSTS_REUSE=1 uses hosts already up (and their wheelhouse) instead.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import conftest
import greenstalk
import pytest

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("GLOW_TESTHOSTS_DIR", REPO / "state" / "testhosts"))
BIN = Path(sys.executable).parent
JOBS_DIR = "/var/lib/glow"


def wait_for(
    check: Callable[[], object], timeout: float = 60, what: str = ""
) -> object:
    """Polls a remote state every half second; fails the test after timeout."""
    return conftest.wait_for(check, timeout, what, interval=0.5)


def tool_path(name: str) -> str:
    """Returns a console script of this venv, or the one on PATH."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name) or name


@dataclass
class Fleet:
    """The deployed test fleet and ways to use it."""

    state: Path
    queue: str
    first_run: subprocess.CompletedProcess
    first_run_seconds: float

    @property
    def inventory(self) -> Path:
        return self.state / "inventory.ini"

    @property
    def ssh_config(self) -> str:
        return str(self.state / "ssh_config")

    @property
    def secret(self) -> str:
        return str(self.state / "secret")

    def ssh(self, host: str, command: str) -> subprocess.CompletedProcess:
        """Runs a shell command on a test host as root."""
        return subprocess.run(
            ["ssh", "-F", self.ssh_config, host, command],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def playbook(self, *args: str, inventory: Path | None = None):
        """Runs site.yml against the test fleet; returns the finished process."""
        return run_playbook(self.state, inventory or self.inventory, *args)

    def put(self, tube: str, *command: str, signed: bool = True) -> int:
        """Puts one job from this machine and returns its id."""
        args = ["--queue", self.queue, "--tube", tube, "--workdir", JOBS_DIR]
        if signed:
            args += ["--secret-file", self.secret]
        done = subprocess.run(
            [tool_path("glow-put"), *args, "--", *command],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip())

    def put_marker(self, tube: str, seconds: float = 0, signed: bool = True) -> str:
        """Puts a job that writes its host's name into a fresh marker file."""
        token = f"job-{uuid.uuid4().hex[:12]}"
        script = f"sleep {seconds}; hostname > {JOBS_DIR}/{token}"
        self.put(tube, "sh", "-c", script, signed=signed)
        return token

    def marker_hosts(self, tokens: list[str]) -> dict[str, str]:
        """Returns token -> host name for each marker file found on the listeners."""
        found = {}
        for host in ("deb12", "deb13"):
            done = self.ssh(host, f"cd {JOBS_DIR} && grep -H . job-* || true")
            for line in done.stdout.splitlines():
                name, _, where = line.partition(":")
                if name in tokens:
                    found[name] = where
        return found

    def client(self) -> greenstalk.Client:
        host, _, port = self.queue.partition(":")
        return greenstalk.Client((host, int(port)))

    def job_state(self, job_id: int) -> str:
        """Returns a job's state, or "gone" once it was deleted."""
        with self.client() as client:
            try:
                return client.stats_job(job_id)["state"]
            except greenstalk.NotFoundError:
                return "gone"

    def unit_state(self, host: str) -> str:
        done = self.ssh(host, "systemctl is-active glow-listen@main.service")
        return done.stdout.strip()


def ansible_env(state: Path) -> dict:
    """Keeps ansible's files and SSH control sockets in the state directory."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_HOME=str(state / "ansible"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(state / "cp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run_playbook(state: Path, inventory: Path, *args: str):
    """Runs ansible-playbook site.yml from the ansible directory."""
    return subprocess.run(
        [
            tool_path("ansible-playbook"),
            "-i",
            str(inventory),
            "site.yml",
            "-e",
            f"glow_listener_wheelhouse={state / 'wheelhouse'}",
            *args,
        ],
        cwd=REPO / "ansible",
        env=ansible_env(state),
        capture_output=True,
        text=True,
        timeout=900,
    )


def recap(output: str) -> dict[str, dict[str, int]]:
    """Parses PLAY RECAP lines into host -> {ok, changed, ...}."""
    hosts = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        name, sep, counts = line.partition(" : ")
        if sep:
            pairs = (pair.split("=") for pair in counts.split())
            hosts[name.strip()] = {key: int(value) for key, value in pairs}
    return hosts


@pytest.fixture(scope="session")
def testhosts() -> Iterator[Path]:
    """Brings the test hosts up for the session (and down afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("the fleet test hosts need root (namespaces, nspawn)")
    if os.environ.get("GLOW_TESTHOSTS_REUSE") and _hosts_up():
        yield STATE
        return
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "bin" / "testhosts"), "up"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "GLOW_TESTHOSTS_DIR": str(STATE)},
    )
    assert done.returncode == 0, done.stderr
    _note(f"bin/testhosts up: {time.monotonic() - started:.1f} s")
    yield STATE
    if not os.environ.get("GLOW_TESTHOSTS_KEEP"):
        subprocess.run(
            [str(REPO / "bin" / "testhosts"), "down"],
            env={**os.environ, "GLOW_TESTHOSTS_DIR": str(STATE)},
            check=False,
        )


@pytest.fixture(scope="session")
def fleet(testhosts: Path) -> Fleet:
    """Deploys beanstalkd and the listeners with site.yml, once per session."""
    started = time.monotonic()
    done = run_playbook(testhosts, testhosts / "inventory.ini")
    seconds = time.monotonic() - started
    (testhosts / "first-run.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr
    _note(f"first ansible-playbook run: {seconds:.1f} s")
    hosts = json.loads((testhosts / "hosts.json").read_text())
    return Fleet(testhosts, f"{hosts['deb12']['address']}:11300", done, seconds)


@pytest.fixture
def running(fleet: Fleet) -> Fleet:
    """Makes sure every listener runs before a test (a drain may have stopped it)."""
    for host in ("deb12", "deb13"):
        fleet.ssh(host, "systemctl start glow-listen@main.service")
    return fleet


def _hosts_up() -> bool:
    done = subprocess.run(
        [str(REPO / "bin" / "testhosts"), "status"],
        capture_output=True,
        env={**os.environ, "GLOW_TESTHOSTS_DIR": str(STATE)},
        check=False,
    )
    return done.returncode == 0


def _note(text: str) -> None:
    print(f"\n[fleet] {text}", file=sys.stderr)
    with open(STATE.parent / "fleet-timings.log", "a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {text}\n")
