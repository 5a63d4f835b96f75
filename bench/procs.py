"""The parts every figure uses: a private beanstalkd, tools run as processes,
waiting on the server's counters, and medians."""

import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import greenstalk

BIN = Path(sys.executable).parent
BEANSTALKD = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
FLOORS = Path(__file__).with_name("floors.py")


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A beanstalkd of the benchmark's own on a free loopback port, no binlog."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self, cpu: int | None = None) -> "Server":
        """Starts beanstalkd, kept on `cpu` if one is given."""
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        args = [BEANSTALKD, "-l", "127.0.0.1", "-p", str(port), "-z", "1048576"]
        self.proc = subprocess.Popen(args, preexec_fn=_kept_on(cpu))
        wait_until(self._answers, 5, "beanstalkd to answer")
        return self

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", int(self.port)), 0.2).close()
        except OSError:
            return False
        return True

    @property
    def port(self) -> str:
        return self.address.rpartition(":")[2]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, cpu: int | None = None) -> None:
        """Starts a fresh server, so that one figure's jobs never meet the next's."""
        self.stop()
        self.start(cpu)

    def client(self, **kwargs) -> greenstalk.Client:
        return greenstalk.Client(("127.0.0.1", int(self.port)), encoding=None, **kwargs)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, step=0.01):
    """Polls `predicate` until it is true; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"bench: timed out after {timeout} s waiting for {what}")


def deleted(client: greenstalk.Client, tube: str) -> int:
    """Returns how many jobs of `tube` have been deleted so far."""
    try:
        return int(client.stats_tube(tube)["cmd-delete"])
    except greenstalk.NotFoundError:
        return 0


def wait_deleted(client: greenstalk.Client, tube: str, count: int, timeout=120):
    """Blocks until `count` jobs of `tube` have been deleted."""
    wait_until(
        lambda: deleted(client, tube) >= count,
        timeout,
        f"{count} jobs of tube {tube} to be deleted",
        step=0.005,
    )


def put_pipelined(address: str, tube: str, bodies: list[bytes], delay=0) -> None:
    """Puts `bodies` into `tube` with the floor's pipelining, on its own socket."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port))) as sock:
        reader = sock.makefile("rb")
        wire = [b"use %s\r\n" % tube.encode()]
        for body in bodies:
            wire.append(b"put 1024 %d 120 %d\r\n%s\r\n" % (delay, len(body), body))
        sock.sendall(b"".join(wire))
        for _ in range(len(bodies) + 1):
            reader.readline()


def tool(name: str, *args: str) -> list[str]:
    """Returns the command line of a console script of this venv."""
    return [str(BIN / name), *args]


def floor(mode: str, *args: str) -> list[str]:
    """Returns the command line of a floor program."""
    return [sys.executable, str(FLOORS), mode, *args]


def cpu_timed_run(argv: list[str], stdin=None) -> tuple[float, float]:
    """Runs a process to its end; returns its wall and CPU (user + sys) seconds.

    On a busy machine the CPU time is what the process would take alone.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def start(
    argv: list[str], log: Path | None = None, cpu: int | None = None
) -> subprocess.Popen:
    """Starts a long-running process, its stderr (and stdout) to `log`.

    With `cpu`, the process, its threads and its children keep to that CPU.
    """
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_kept_on(cpu)
        )
    finally:
        if log:
            out.close()


def _kept_on(cpu: int | None) -> Callable[[], None] | None:
    # Set in the child before its exec, so that every thread it starts inherits it.
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def stop(proc: subprocess.Popen) -> None:
    """Stops a process started by `start`, killing it if SIGTERM is not enough."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def peak_rss_mb(pid: int) -> float:
    """Returns a live process's peak resident memory (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """Returns a live process's child processes (a listener's workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def pss_mb(pids: list[int]) -> float:
    """Returns the proportional set size of live processes together, in MB.

    Pages shared between them, as a forked worker shares its listener's, are
    counted once in all.
    """
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """Returns the CPU time a live process has used so far, its children aside."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], fraction: float) -> float:
    """Returns the nearest-rank percentile of `values`."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def spread(values: list[float], unit: str = "") -> str:
    """Describes a series by its range, so a reader can judge its noise."""
    unit = f" {unit}" if unit else ""
    low, high = (_short(v) for v in (min(values), max(values)))
    return f"{low}..{high}{unit} over {len(values)} runs"


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def environment_note() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, load {load:.2f} at start"
