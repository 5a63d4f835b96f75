"""Running one job: spawning its command, copying its output, ending its tree.

The listener decides when a job runs; this module decides how.
"""

import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field

from .defaults import KILL_GRACE, TAIL_BYTES, TAIL_LINES
from .isolation import Confinement, Host, Refused, acting_as
from .job import Job

_READ_SIZE = 65536
# Python ignores these; a command expects them as they are by default.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
# For this many seconds after its start a job is watched for its end only, not
# for output: each of its pipes closing would wake the listener on its own (and
# preempt the job as it exits). Output waits in the pipes meanwhile; a job that
# fills one stalls for at most this long, once.
_QUIET_START = 0.01


@dataclass
class Outcome:
    """What became of a job's run: how it ended and what it said last."""

    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    duration: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    # The job may not run on this listener at all: running it again cannot help.
    refused: bool = False
    # Which run of the job this is, counted from 1 (the listener sets it).
    attempt: int = 1

    @property
    def ok(self) -> bool:
        """Tells whether the job succeeded: it ran and exited 0."""
        return self.error is None and self.exit_code == 0

    def summary(self) -> str:
        """Returns how the run ended in a few words: `exit 3`, `killed by SIGKILL`."""
        if self.error and self.exit_code is None and self.signal is None:
            return self.error
        ended = self.ended()
        return f"{self.error} ({ended})" if self.error else ended

    def ended(self) -> str:
        """Returns how the process ended: `exit 3`, `killed by SIGKILL`."""
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        if self.exit_code is not None:
            return f"exit {self.exit_code}"
        return "did not start"


class _Tail:
    """Keeps the last bytes of a stream."""

    def __init__(self) -> None:
        self.data = b""

    def add(self, chunk: bytes) -> None:
        self.data = (self.data + chunk)[-TAIL_BYTES:]

    def text(self) -> str:
        if not self.data:
            return ""
        lines = self.data.decode(errors="replace").splitlines()
        return "\n".join(lines[-TAIL_LINES:])


class Run:
    """One job's process tree, from spawn to reaping.

    `start` spawns; `wait` copies output and returns once the job has ended or
    a time has passed; `kill` ends the whole tree. Not thread-safe: one thread
    drives a Run, though `kill` may be called from a signal handler.
    """

    def __init__(
        self, job: Job, job_id: int, base_env: dict[str, str], host: Host | None = None
    ) -> None:
        self.job = job
        self.job_id = job_id
        self.base_env = base_env
        self.host = host
        self.confinement: Confinement | None = None
        self.outcome = Outcome()
        self.proc: subprocess.Popen | _Spawned | None = None
        self._deadline = None
        self._killed_for: str | None = None
        # Output pipes by fd, polled directly: a selector cost a job 30 us.
        self._poller = select.poll()
        self._sinks: dict[int, tuple[int | None, _Tail]] = {}
        self._pipes: dict[int, object] = {}
        self._files: list[int] = []
        # Readable once the command has ended; polled with its pipes, so that
        # the end of a job needs no poll of its own (None without pidfds).
        self._pidfd: int | None = None
        self._exited = False
        self._quiet = True
        self._plain = False

    def start(self) -> bool:
        """Spawns the command; returns False, with the outcome set, if it cannot."""
        try:
            self._confine()
            account = self.confinement and self.confinement.account
            with acting_as(account):
                self._open_outputs()
                # In the listener's own folder, as its user, nothing to check.
                self._plain = not account and self._spawnable()
                if not self._plain:
                    _check_workdir(self.job.workdir)
            self.proc = self._spawn()
        except _SpawnError as exc:
            self.outcome.error = str(exc)
            self._close_files()
            self._end_confinement()
            return False
        if self.host:
            self.host.running.add(str(self.job_id))
        if self.job.timeout:
            self._deadline = time.monotonic() + self.job.timeout
        return True

    def _confine(self) -> None:
        if self.host is None:
            return
        try:
            self.confinement = self.host.confine(self.job, f"job-{self.job_id}")
        except Refused as exc:
            self.outcome.refused = True
            raise _SpawnError(str(exc)) from None

    def _open_outputs(self) -> None:
        opened: dict[str, int | None] = {os.devnull: None}  # only its tail is kept
        for name in ("stdout", "stderr"):
            path = getattr(self.job, name)
            if path not in opened:
                opened[path] = _open_append(path, name)
                self._files.append(opened[path])
        self._paths = opened

    def _spawn(self) -> "subprocess.Popen | _Spawned":
        job = self.job
        env = dict(self.base_env)
        preexec = None
        if self.confinement:
            env.update(self.confinement.environ())
            preexec = self.confinement.preexec()
        env.update(job.env)
        env["GLOW_JOB_ID"] = str(self.job_id)
        env["GLOW_TUBE"] = job.tube
        try:
            if preexec is None and self._plain:
                proc = self._posix_spawn(env)
            else:
                proc = self._popen(env, preexec)
        finally:
            if self.confinement:
                self.confinement.started()
        if self.host and self.host.job_cpus:
            _give_cpus(proc.pid, self.host.job_cpus)
        self._tails = []
        for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            fd = pipe if isinstance(pipe, int) else pipe.fileno()
            tail = _Tail()
            self._sinks[fd] = (self._paths[getattr(job, name)], tail)
            self._pipes[fd] = pipe
            self._poller.register(fd, select.POLLIN)
            self._tails.append(tail)
        self._pidfd = _pidfd(proc.pid)
        return proc

    def _spawnable(self) -> bool:
        # posix_spawn takes under half of Popen's work but cannot chdir or run
        # a preexec, and searches the listener's PATH, not the job's.
        return self.job.workdir == os.getcwd() and "PATH" not in self.job.env

    def _posix_spawn(self, env: dict[str, str]) -> "_Spawned":
        job = self.job
        out, err = os.pipe(), os.pipe()
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out[1], 1),
            (os.POSIX_SPAWN_DUP2, err[1], 2),
        ]
        try:
            pid = os.posix_spawnp(
                job.cmd, [job.cmd, *job.args], env, file_actions=actions,
                setsid=True, setsigdef=_DEFAULT_SIGNALS,
            )  # fmt: skip
        except OSError as exc:
            os.close(out[0])
            os.close(err[0])
            raise self._spawn_error(exc) from None
        finally:
            os.close(out[1])
            os.close(err[1])
        return _Spawned(pid, out[0], err[0])

    def _popen(self, env: dict[str, str], preexec) -> subprocess.Popen:
        job = self.job
        try:
            return subprocess.Popen(
                [job.cmd, *job.args],
                cwd=job.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise self._spawn_error(exc) from None

    def _spawn_error(self, exc: Exception) -> "_SpawnError":
        cmd = self.job.cmd
        if isinstance(exc, FileNotFoundError):
            return _SpawnError(f"command {cmd!r} not found")
        if isinstance(exc, PermissionError):
            return _SpawnError(f"command {cmd!r} is not executable")
        if isinstance(exc, BlockingIOError):
            return _SpawnError(self._blocked())
        if isinstance(exc, OSError):
            return _SpawnError(f"command {cmd!r} failed to start: {exc}")
        return _SpawnError(f"cannot apply the job's limits or user ({exc})")

    def _blocked(self) -> str:
        nproc = self.job.limits.get("nproc")
        if nproc:
            return f"nproc limit {nproc} reached before the command started"
        return f"command {self.job.cmd!r} failed to start: too many processes"

    def wait(self, seconds: float) -> bool:
        """Copies output for up to `seconds`; returns True once the job has ended."""
        if self.proc is None:
            return True
        if self._quiet:
            self._quiet_start(seconds)
        until = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if self._deadline and now >= self._deadline:
                self._on_deadline()
            if not self._sinks:
                return self._reap(until - now)
            if now >= until:
                return False
            self._pump(min(until - now, 0.5))
            if self._sinks and self._has_exited():
                self._end_leftovers()

    def _quiet_start(self, seconds: float) -> None:
        self._quiet = False
        if self._pidfd is None:
            return
        ending = select.poll()
        ending.register(self._pidfd, select.POLLIN)
        if ending.poll(min(seconds, _QUIET_START) * 1000):
            self._exited = True  # its pipes are at their end, or soon read
        else:
            self._poller.register(self._pidfd, select.POLLIN)

    def _on_deadline(self) -> None:
        if self._killed_for:
            self._signal_tree(signal.SIGKILL)
            self._deadline = None
        else:
            self.kill("timeout")

    def _pump(self, seconds: float) -> None:
        for fd, _ in self._poller.poll(max(seconds, 0) * 1000):
            if fd == self._pidfd:
                self._exited = True
                self._poller.unregister(fd)
                continue
            chunk = os.read(fd, _READ_SIZE)
            target, tail = self._sinks[fd]
            if not chunk:
                self._poller.unregister(fd)
                _close_pipe(self._pipes.pop(fd))
                del self._sinks[fd]
                continue
            tail.add(chunk)
            if target is not None:
                _write_all(target, chunk)

    def _end_leftovers(self) -> None:
        # The command exited but something it started still holds its output
        # open: the job is over, so what it left behind goes too.
        self._signal_tree(signal.SIGKILL)
        if self.host:
            self.host.sweep(ended=str(self.job_id))
        self._pump(0.2)

    def _has_exited(self) -> bool:
        if self._pidfd is None:
            return self.proc.poll() is not None
        return self._exited

    def _reap(self, seconds: float) -> bool:
        if self._pidfd is not None and not self._exited:
            self._pump(seconds)  # only the pidfd is left to poll
            if not self._exited:
                return False
        try:
            code = self.proc.wait(max(seconds, 0))
        except subprocess.TimeoutExpired:
            return False
        self._signal_tree(signal.SIGKILL)
        self._finish(code)
        return True

    def _finish(self, code: int) -> None:
        out = self.outcome
        out.duration = time.time() - out.started
        if code < 0:
            out.signal = -code
        else:
            out.exit_code = code
        if self._killed_for and not out.error:
            out.error = self._killed_for
        out.stdout_tail, out.stderr_tail = (tail.text() for tail in self._tails)
        if self.confinement and not out.error and code != 0:
            out.error = self.confinement.reason(out.signal, out.stderr_tail)
        self._close_files()
        self._end_confinement()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self.host:
            self.host.running.discard(str(self.job_id))
            self.host.sweep()

    def _end_confinement(self) -> None:
        if self.confinement:
            self.confinement.end()

    def kill(self, reason: str = "killed") -> None:
        """Ends the job's tree: SIGTERM, then SIGKILL after a grace period.

        Returns at once; `wait` carries the escalation on.
        """
        if self.proc is None or self._killed_for:
            return
        self._killed_for = reason
        self._signal_tree(signal.SIGTERM)
        self._deadline = time.monotonic() + KILL_GRACE

    def _signal_tree(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        if self.confinement:
            self.confinement.signal(signum)

    def _close_files(self) -> None:
        for fd in self._files:
            os.close(fd)
        self._files = []


class _Spawned:
    """A command started with posix_spawn, as much of a Popen as a Run uses.

    Its stdout and stderr are the read ends of its pipes as bare fds.
    """

    def __init__(self, pid: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Returns the exit status once the command has ended, else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0  # reaped elsewhere, as Popen assumes
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        """Returns the exit status; raises TimeoutExpired after `timeout` seconds."""
        until = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= until:
                raise subprocess.TimeoutExpired(self.pid, timeout)
            time.sleep(0.0005)
        return self.returncode


class _SpawnError(Exception):
    """The command could not be started; the message says why."""


def _pidfd(pid: int) -> int | None:
    # A pidfd wakes a poll the moment the child ends, where a wait with a
    # timeout polls with sleeps that cost a job about a millisecond.
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # an older kernel: the end is found by waitpid


def _close_pipe(pipe) -> None:
    if isinstance(pipe, int):
        os.close(pipe)
    else:
        pipe.close()


def _give_cpus(pid: int, cpus: set[int]) -> None:
    # The command has started, on its worker's CPU: from here on it may use
    # every CPU, as may anything it starts.
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        pass  # ended already


def _check_workdir(path: str) -> None:
    # Looking up "." inside needs the right to enter the folder, as the job's user.
    try:
        os.stat(os.path.join(path, "."))
    except FileNotFoundError:
        raise _SpawnError(f"workdir {path} does not exist") from None
    except NotADirectoryError:
        raise _SpawnError(f"workdir {path} is not a folder") from None
    except OSError as exc:
        raise _SpawnError(f"workdir {path}: {exc.strerror}") from None


def _open_append(path: str, name: str) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            return os.open(path, flags, 0o644)
    except OSError as exc:
        raise _SpawnError(f"cannot open {name} file {path}: {exc.strerror}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # a full disk must not stop the job; its tail is still kept
        view = view[written:]
