"""Fixtures with real parts: a beanstalkd per test, the tools run as processes."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import greenstalk
import pytest

BIN = Path(sys.executable).parent
BEANSTALKD = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 15.0,
    what: str = "",
    interval: float = 0.02,
):
    """Polls `predicate` until it returns something true; fails the test if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")


class Beanstalkd:
    """A beanstalkd process on a free port, restartable with the same binlog."""

    def __init__(self, tmp: Path, binlog: bool = False, max_job_size: int = 0):
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.binlog = tmp / "binlog" if binlog else None
        self.max_job_size = max_job_size
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Beanstalkd":
        args = [BEANSTALKD, "-l", "127.0.0.1", "-p", str(self.port)]
        if self.binlog:
            self.binlog.mkdir(exist_ok=True)
            args += ["-b", str(self.binlog)]
        if self.max_job_size:
            args += ["-z", str(self.max_job_size)]
        self.proc = subprocess.Popen(args)
        wait_for(self._answers, 5, f"beanstalkd on {self.address}")
        return self

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, **kwargs) -> greenstalk.Client:
        return greenstalk.Client(("127.0.0.1", self.port), **kwargs)


@pytest.fixture
def beanstalkd_factory(tmp_path: Path) -> Iterator[Callable[..., Beanstalkd]]:
    """Starts beanstalkd servers (binlog=, max_job_size=); stops them afterwards."""
    started: list[Beanstalkd] = []

    def start(**options) -> Beanstalkd:
        server = Beanstalkd(tmp_path / f"b{len(started)}", **options)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def beanstalkd(beanstalkd_factory, monkeypatch) -> Beanstalkd:
    """A fresh beanstalkd for one test, with GLOW_QUEUE pointing at it."""
    server = beanstalkd_factory()
    monkeypatch.setenv("GLOW_QUEUE", server.address)
    return server


@pytest.fixture
def client(beanstalkd) -> Iterator[greenstalk.Client]:
    """A plain greenstalk client on the test's beanstalkd, bytes bodies."""
    with beanstalkd.client(encoding=None) as conn:
        yield conn


def tool(name: str, *args: str, input: str | bytes | None = None, env=None,
         timeout: float = 60) -> subprocess.CompletedProcess:  # fmt: skip
    """Runs a glowtools console script as a user would; returns its result."""
    if isinstance(input, str):
        input = input.encode()
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [str(BIN / name), *args],
        input=input if input is not None else b"",
        capture_output=True,
        env=full_env,
        timeout=timeout,
    )
    result.stdout = result.stdout.decode(errors="replace")
    result.stderr = result.stderr.decode(errors="replace")
    return result


class Daemon:
    """A long-running tool (glow-listen, glow-dep); its log is read from a file."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.logfile = open(log, "wb")
        # With --log the tool writes there instead of to its stderr.
        self.log_path = Path(args[args.index("--log") + 1]) if "--log" in args else log
        self.proc = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    @property
    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 15) -> str:
        return wait_for(lambda: text in self.log and self.log, timeout, repr(text))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.logfile.close()


class Listener(Daemon):
    """A glow-listen -v process."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        super().__init__(["glow-listen", "-v", *args], log, env)


@pytest.fixture
def daemons(beanstalkd, tmp_path) -> Iterator[Callable[..., Daemon]]:
    """Starts tools as daemons on the test's beanstalkd; kills them after.

    `daemons("glow-dep", "-vv")` returns once the tool has logged its connection
    (a debug line), or `ready` when the tool runs without -v.
    """
    started: list[Daemon] = []

    def start(*args: str, env: dict | None = None, ready="connected to") -> Daemon:
        log = tmp_path / f"{args[0]}{len(started)}.log"
        daemon = Daemon(list(args), log, env)
        started.append(daemon)
        daemon.wait_log(ready)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def listen(daemons) -> Callable[..., Daemon]:
    """Starts glow-listen -v processes on the test's beanstalkd; kills them after."""
    return lambda *args, env=None: daemons("glow-listen", "-v", *args, env=env)


def error_reports(client: greenstalk.Client, count: int, timeout: float = 10):
    """Reserves `count` reports from GLOW_ERRORS and returns them as dicts."""
    import json

    client.watch("GLOW_ERRORS")
    reports = []
    for _ in range(count):
        job = client.reserve(timeout=int(timeout))
        reports.append(json.loads(job.body))
        client.delete(job)
    return reports
