"""A listener's slots as worker processes, one job at a time each.

With a concurrency above 1, glow-listen forks a worker per slot. A worker
reserves and runs jobs as a listener of one slot does. The listener process
publishes presence, wakes the workers when new tubes appear, passes its
signals on and starts a worker again if one dies. Slots on threads would share
one interpreter lock; as processes, two jobs' bookkeeping runs on two cores.

Workers and the listener share a little memory: a count per capped tube, so
that `--limit` holds across the workers, and a record per worker of the job it
runs, so that the listener's status shows every running job.
"""

import contextlib
import fcntl
import json
import logging
import mmap
import os
import signal
import struct
import threading
import time

log = logging.getLogger("glowtools.listen")

# The listener tells its workers to stop after their jobs with this signal:
# SIGINT from a terminal reaches every process of the group, the workers too,
# and a second SIGINT means terminate.
WORKER_STOP = signal.SIGUSR1
# A record holds a running job as running_entry gives it, at most about 2.5 KB
# of JSON (its command and tube are cut to 200 characters).
RECORD = 4096
_LENGTH = struct.Struct("I")
_COUNT = 8  # bytes of a capped tube's count
# A worker that dies sooner than this after it started is started again only
# after this long, so that a worker that cannot start does not spin.
RESTART_PAUSE = 1.0
# Held back across a fork, until the worker has handlers of its own for them.
_PASSED_ON = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, WORKER_STOP}


class Counts:
    """How many jobs of each capped tube run now, counted under one lock.

    `store` holds a count per capped tube, in the order of `caps`: a list, or
    memory that worker processes share (with a lock that holds across them).
    """

    def __init__(self, caps: dict[str, int], store=None, lock=None) -> None:
        self.caps = caps
        self._index = {tube: i for i, tube in enumerate(caps)}
        self._store = [0] * len(caps) if store is None else store
        self._lock = threading.Lock() if lock is None else lock

    def claim(self, tube: str) -> bool:
        """Counts a job of `tube` as running; False if the tube's cap is reached."""
        i = self._index.get(tube)
        if i is None:
            return True
        with self._lock:
            if self._store[i] >= self.caps[tube]:
                return False
            self._store[i] += 1
            return True

    def unclaim(self, tube: str) -> None:
        """Counts a job of `tube` as finished."""
        i = self._index.get(tube)
        if i is not None:
            with self._lock:
                self._store[i] -= 1

    def full(self) -> set[str]:
        """Returns the capped tubes that run as many jobs as they may."""
        with self._lock:
            return {t for t, i in self._index.items() if self._store[i] >= self.caps[t]}


class Shared:
    """Memory the listener and its workers share, with a lock across them.

    The memory is a memfd mapped before the fork; its lock is a POSIX record
    lock on the same file, which holds between processes.
    """

    def __init__(self, size: int) -> None:
        self.fd = os.memfd_create("glow-listen", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, max(size, 1))
        self.memory = mmap.mmap(self.fd, max(size, 1))

    def __enter__(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)


class Board:
    """The job each worker runs now, one record per worker in shared memory."""

    def __init__(self, shared: Shared, offset: int, count: int) -> None:
        self.shared = shared
        self.offset = offset
        self.count = count

    def show(self, number: int, entry: dict | None) -> None:
        """Records what worker `number` runs; None once it runs nothing."""
        data = json.dumps(entry).encode() if entry else b""
        at = self.offset + number * RECORD
        with self.shared:
            memory = self.shared.memory
            memory[at : at + _LENGTH.size] = _LENGTH.pack(len(data))
            memory[at + _LENGTH.size : at + _LENGTH.size + len(data)] = data

    def entries(self) -> list[dict]:
        """Returns every worker's running job, by job id."""
        memory = self.shared.memory
        found = []
        with self.shared:
            for number in range(self.count):
                at = self.offset + number * RECORD
                (length,) = _LENGTH.unpack_from(memory, at)
                if length:
                    start = at + _LENGTH.size
                    found.append(json.loads(memory[start : start + length]))
        return sorted(found, key=lambda entry: entry["id"])


class Workers:
    """Forks a listener's worker processes and starts them again as needed."""

    def __init__(self, listener) -> None:
        self.listener = listener
        caps = listener.chooser.caps
        counts = len(caps) * _COUNT
        self.shared = Shared(counts + listener.concurrency * RECORD)
        self.board = Board(self.shared, counts, listener.concurrency)
        # The counts live in shared memory from here on: the workers forked
        # later count each other's jobs of a capped tube.
        store = memoryview(self.shared.memory)[:counts].cast("q")
        listener.chooser.counts = Counts(caps, store, self.shared)
        self.pids: dict[int, int] = {}
        self.started: dict[int, float] = {}

    def start(self) -> None:
        """Forks one worker per slot."""
        for number in range(self.listener.concurrency):
            self._fork(number)

    def tell(self, signum: int) -> None:
        """Sends a signal to every worker alive."""
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def supervise(self) -> None:
        """Reaps workers, starting again those that end before the listener
        stops; returns once every worker has ended. Blocks."""
        while self.pids:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            number = self.pids.pop(pid, None)
            if number is None:
                continue  # an orphan of a worker's job, reaped on its behalf
            if self.listener.stopping.is_set():
                continue
            log.error(
                "worker %d (slot %d) ended: %s; starting it again",
                pid, number, _ending(status),
            )  # fmt: skip
            if time.monotonic() - self.started[number] < RESTART_PAUSE:
                self.listener.stopping.wait(RESTART_PAUSE)
            if not self.listener.stopping.is_set():
                self._fork(number)

    def _fork(self, number: int) -> None:
        parent = os.getpid()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _PASSED_ON)
        try:
            pid = os.fork()
            if pid == 0:
                _work(self.listener, number, parent, mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.pids[pid] = number
        self.started[number] = time.monotonic()


def _work(listener, number: int, parent: int, mask) -> None:
    """Runs slot `number` in a forked worker; never returns."""
    code = 1
    try:
        _become_worker(listener, number, parent)
        # Signals that came since the fork are handled here, as the worker's.
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        listener.run_slot()
        code = 0
    except BaseException:
        log.exception("worker %d (slot %d) failed", os.getpid(), number)
    finally:
        with contextlib.suppress(BaseException):
            if listener.mailer:
                listener.mailer.close()
            logging.shutdown()
        os._exit(code)


def _become_worker(listener, number: int, parent: int) -> None:
    from .isolation import set_parent_death_signal
    from .mail import Mailer

    # A worker whose listener is gone ends its jobs and releases them.
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(0)
    listener.become_worker(number)
    if listener.pin:
        _pin(listener, number)
    # The listener decides what a SIGINT means and passes that on.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(WORKER_STOP, lambda *_: listener.stop())
    if listener.host:
        listener.host.adopt_orphans()
    if listener.mailer:
        # The listener's mailer thread did not come across the fork.
        listener.mailer = Mailer(listener.mailer.settings)


def _pin(listener, number: int) -> None:
    # A worker kept on one CPU starts its jobs there, cache-warm, instead of
    # trading places with the other worker at each exec; the job gets every
    # CPU back as soon as it has started (runner._give_cpus).
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    mine = cpus[number * len(cpus) // listener.concurrency % len(cpus)]
    os.sched_setaffinity(0, {mine})
    if listener.host:
        listener.host.job_cpus = set(cpus)


def _ending(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"
