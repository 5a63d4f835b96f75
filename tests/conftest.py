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


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, what: str = ""):
    """Polls `predicate` until it returns something true; fails the test if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
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


class Listener:
    """A glow-listen process; its log is read from a file."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.logfile = open(log, "wb")
        # With --log the listener writes there instead of to its stderr.
        self.log_path = Path(args[args.index("--log") + 1]) if "--log" in args else log
        self.proc = subprocess.Popen(
            [str(BIN / "glow-listen"), "-v", *args],
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


@pytest.fixture
def listen(beanstalkd, tmp_path) -> Iterator[Callable[..., Listener]]:
    """Starts glow-listen processes on the test's beanstalkd; kills them after."""
    listeners: list[Listener] = []

    def start(*args: str, env: dict | None = None) -> Listener:
        log = tmp_path / f"listener{len(listeners)}.log"
        listener = Listener(list(args), log, env)
        listeners.append(listener)
        listener.wait_log("connected to")
        return listener

    yield start
    for listener in listeners:
        if listener.proc.poll() is None:
            listener.proc.kill()
            listener.proc.wait(5)
        listener.logfile.close()


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
