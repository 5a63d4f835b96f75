"""glow-listen: reserves jobs from beanstalkd tubes and runs them."""

import contextlib
import fnmatch
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Annotated

import greenstalk
import typer

from . import cli, options
from .connection import Connection, connect, parse_address, queue_address
from .defaults import (
    DEFAULT_WORKDIR,
    ERROR_TTR,
    ERROR_TUBE,
    MAX_DELAY,
    PRIVATE_ENV_PREFIX,
    RESERVE_WAIT,
    SAY_RUNNING_AFTER,
    TUBE_REFRESH,
    WAKE_CHECK,
    is_internal_tube,
)
from .errors import ConfigInvalid, JobInvalid, QueueUnreachable
from .isolation import Host
from .job import Job
from .mail import Mailer, mail_settings
from .paused import paused_in
from .presence import (
    Presence,
    delete_ready,
    listener_status,
    running_entry,
    wake_tube,
)
from .runner import Outcome, Run
from .sign import Secret, load_secrets, open_body
from .workers import WORKER_STOP, Board, Counts, Workers

log = logging.getLogger("glowtools.listen")
HOST = socket.gethostname()
BACKOFF_MAX = 30.0


class TubeChooser:
    """Decides which tubes the listener's slots watch, shared by all slots."""

    def __init__(self, tubes: list[str], exclude: list[str], caps: dict[str, int]):
        self.patterns = tubes
        self.exclude = exclude
        self.caps = caps
        self.counts = Counts(caps)
        self.literal = bool(tubes) and not any(_is_glob(p) for p in tubes)
        self._known: frozenset[str] = frozenset(tubes if self.literal else ())
        self._checked = 0.0
        self._lock = threading.Lock()

    def wanted(self, conn: Connection) -> frozenset[str]:
        """Returns the tubes to watch now, asking the server at most twice a second."""
        if time.monotonic() - self._checked > TUBE_REFRESH:
            self.refresh(conn)
        if not self.caps:
            return self._known  # the same object until a refresh: see Slot
        return self._known - self.counts.full()

    def refresh(self, conn: Connection) -> frozenset[str]:
        """Looks at the server's tubes now; returns the chosen ones that are new."""
        chosen = self._choose(conn.tubes())
        with self._lock:
            added = chosen - self._known
            self._known, self._checked = chosen, time.monotonic()
        return added

    def after_fork(self) -> None:
        """Makes the lock anew in a forked worker."""
        self._lock = threading.Lock()

    @property
    def known(self) -> frozenset[str]:
        """Returns the tubes chosen at the last look, before caps."""
        return self._known

    def _choose(self, tubes: list[str]) -> frozenset[str]:
        # A tube paused until resumed (glow-pause) is left out like a missing one.
        paused = paused_in(tubes)
        if self.literal:
            return frozenset(self.patterns) - paused
        return frozenset(t for t in tubes if self._accepts(t) and t not in paused)

    def _accepts(self, tube: str) -> bool:
        if is_internal_tube(tube):
            return False
        if self.patterns and not _matches(tube, self.patterns):
            return False
        return not _matches(tube, self.exclude)


def _matches(tube: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(tube, pattern) for pattern in patterns)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class Listener:
    """Runs jobs from beanstalkd in `concurrency` slots until told to stop.

    One slot runs on a thread of this process; more run as worker processes
    (see workers.py), which this process supervises and passes signals to.
    """

    def __init__(self, address: str, chooser: TubeChooser, concurrency: int) -> None:
        self.address = address
        self.chooser = chooser
        self.concurrency = concurrency
        self.stopping = threading.Event()
        self.terminating = threading.Event()
        self.runs: dict[int, Run] = {}
        self.base_env = {
            k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_ENV_PREFIX)
        }
        self.wake_tube = wake_tube(HOST, os.getpid())
        self.host: Host | None = None
        self.mailer: Mailer | None = None
        # With secrets, only jobs signed with one of them run (sign.open_body).
        self.secrets: list[Secret] = []
        # Set in worker processes: where this one's slot shows its running job.
        self.board: Board | None = None
        self.slot_number = 0
        self.workers: Workers | None = None
        self.role = "listener"
        self.pin = True

    def run(self) -> None:
        """Runs the slots; returns once every slot has stopped. Blocks."""
        if self.concurrency > 1:
            # Forked before this process starts any thread of its own.
            self.workers = Workers(self)
            self.workers.start()
        presence = Presence(self.address, lambda: listener_status(self))
        presence.start()
        waker = Waker(self)
        waker.start()
        log.info(
            "listener %d on %s: %d slot(s), queue %s",
            os.getpid(), HOST, self.concurrency, self.address,
        )  # fmt: skip
        if self.workers:
            self.workers.supervise()
        else:
            self.run_slot()
        presence.stop()
        waker.join(WAKE_CHECK + 5)
        log.info("listener %d stopped", os.getpid())

    def become_worker(self, number: int) -> None:
        """Makes this forked copy of the listener run slot `number` alone."""
        self.board = self.workers.board
        self.workers = None
        self.slot_number = number
        self.role = "worker"
        self.runs = {}
        # Locks and events as fresh as the process: a thread of the listener
        # may have held one at the fork.
        self.stopping = threading.Event()
        self.terminating = threading.Event()
        self.chooser.after_fork()

    def run_slot(self) -> None:
        """Runs one slot on a thread of its own until it stops. Blocks."""
        slot = Slot(self, self.slot_number)
        slot.start()
        while slot.is_alive():
            slot.join(0.2)

    def stop(self) -> None:
        """Stops reserving; running jobs finish first (SIGINT)."""
        if self.stopping.is_set():
            self.terminate()
            return
        log.info("%s %d stopping after its running jobs", self.role, os.getpid())
        self.stopping.set()
        if self.workers:
            self.workers.tell(WORKER_STOP)

    def terminate(self) -> None:
        """Kills running jobs and releases them at once (SIGTERM)."""
        log.info("%s %d killing its running jobs", self.role, os.getpid())
        self.terminating.set()
        self.stopping.set()
        for run in list(self.runs.values()):
            run.kill("listener terminated")
        if self.workers:
            self.workers.tell(signal.SIGTERM)

    def started(self, job_id: int, run: Run) -> None:
        """Notes a job whose command is running now."""
        self.runs[job_id] = run
        if self.board:
            self.board.show(self.slot_number, _entry(job_id, run))

    def ended(self, job_id: int) -> None:
        """Notes that a job's command has ended."""
        del self.runs[job_id]
        if self.board:
            self.board.show(self.slot_number, None)

    def running(self) -> list[dict]:
        """Returns the jobs running now, as the listener's status shows them."""
        if self.workers:
            return self.workers.board.entries()
        return [_entry(job_id, run) for job_id, run in sorted(list(self.runs.items()))]


class Slot(threading.Thread):
    """One connection that reserves and runs one job at a time."""

    def __init__(self, listener: Listener, number: int) -> None:
        super().__init__(name=f"slot-{number}", daemon=True)
        self.listener = listener
        self.conn: Connection | None = None
        self.watching: set[str] = {"default"}
        self.synced: frozenset[str] | None = None
        # A completed job whose delete goes out with the next reserve, and
        # its log line, said while beanstalkd answers (name, seconds, job).
        self.done: tuple[int, str] | None = None
        self.unsaid: tuple[str, float, Job] | None = None

    def run(self) -> None:
        backoff = 0.5
        while not self.listener.stopping.is_set():
            try:
                self._serve_one()
                backoff = 0.5
            except QueueUnreachable as exc:
                self._drop_connection()
                log.warning("%s; retrying in %.1f s", exc, backoff)
                self.listener.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        with contextlib.suppress(QueueUnreachable):
            self._delete_done()
        self._drop_connection()

    def _serve_one(self) -> None:
        if self.conn is None:
            self.conn = connect(self.listener.address, use=ERROR_TUBE)
            self.watching, self.synced = {"default"}, None
            log.debug("%s connected to %s", self.name, self.listener.address)
        self._sync_watches()
        reserved = self._reserve()
        if reserved is None:
            if self.listener.host:
                self.listener.host.sweep()
            return
        if reserved.body == self.listener.wake_tube.encode():
            self._woken(reserved)
            return
        try:
            self._handle_job(reserved)
        except QueueUnreachable:
            raise
        except Exception:
            # A bug must not stop the listener, nor make it reserve the same
            # job over and over: the job is buried with the traceback's gist.
            log.exception("job %d: the listener failed while handling it", reserved.id)
            self._reject(reserved, f"listener error: {sys.exc_info()[1]!r}")

    def _reserve(self) -> greenstalk.Job | None:
        """Reserves the next job, None if none came; deletes a completed one
        in the same round trip."""
        if self.done is None:
            try:
                return self.conn.reserve(timeout=RESERVE_WAIT)
            except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
                return None
        job_id, name = self.done
        deleted, reserved = self.conn.delete_then_reserve(
            job_id, RESERVE_WAIT, self._say_completed
        )
        self.done = None
        if not deleted:
            log.warning("%s ended but its reservation was lost; it may run again", name)
        return reserved

    def _say_completed(self) -> None:
        if self.unsaid:
            (name, seconds, job), self.unsaid = self.unsaid, None
            log.info("%s completed in %.2f s: %s", name, seconds, job.describe())

    def _delete_done(self) -> None:
        self._say_completed()
        if self.done is not None and self.conn is not None:
            (job_id, name), self.done = self.done, None
            try:
                self.conn.delete(job_id)
            except greenstalk.NotFoundError:
                log.warning("%s ended but its reservation was lost", name)

    def _woken(self, reserved: greenstalk.Job) -> None:
        # The Waker has seen a new tube. A worker process has a chooser of its
        # own, so the slot looks too; the next _sync_watches watches it.
        log.debug("%s woken to watch a new tube", self.name)
        with contextlib.suppress(greenstalk.NotFoundError):
            self.conn.delete(reserved)
        self.listener.chooser.refresh(self.conn)

    def _sync_watches(self) -> None:
        # The wake tube is always watched, which also keeps a connection with
        # nothing wanted waiting in reserve instead of failing.
        chosen = self.listener.chooser.wanted(self.conn)
        if chosen is self.synced:
            return  # nothing changed since the last job: no set work per job
        wanted = set(chosen)
        wanted.add(self.listener.wake_tube)
        for tube in wanted - self.watching:
            self.conn.watch(tube)
        for tube in self.watching - wanted:
            self.conn.ignore(tube)
        self.watching, self.synced = wanted, chosen

    def _drop_connection(self) -> None:
        self._say_completed()
        if self.done is not None:
            name = self.done[1]
            log.warning(
                "%s: the connection went before its delete; it may run again", name
            )
            self.done = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # Not `_handle`: Python 3.13's Thread keeps its own attribute of that name.
    def _handle_job(self, reserved: greenstalk.Job) -> None:
        try:
            job = open_body(reserved.body, self.listener.secrets)
        except JobInvalid as exc:
            self._reject(reserved, str(exc))
            return
        if self.listener.stopping.is_set():
            self.conn.release(reserved, priority=job.pri)
            return
        if not self.listener.chooser.counts.claim(job.tube):
            self.conn.release(reserved, priority=job.pri)
            return
        try:
            outcome = self._run(reserved, job)
        finally:
            self.listener.chooser.counts.unclaim(job.tube)
        self._settle(reserved, job, outcome)

    def _run(self, reserved: greenstalk.Job, job: Job) -> Outcome:
        run = Run(job, reserved.id, self.listener.base_env, self.listener.host)
        run.outcome.attempt = self._attempt(reserved, job)
        if not run.start():
            return run.outcome
        self.listener.started(reserved.id, run)
        # A job that ends within SAY_RUNNING_AFTER gets one line, at its end;
        # with -v, or once it has run that long, its start is said too.
        said = log.isEnabledFor(logging.DEBUG)
        if said:
            self._say_running(reserved, job, run.outcome.attempt)
        try:
            lease = max(job.ttr / 2, 0.5)
            while not run.wait(lease if said else min(lease, SAY_RUNNING_AFTER)):
                if not said:
                    self._say_running(reserved, job, run.outcome.attempt)
                    said = True
                self._touch(reserved)
        finally:
            self.listener.ended(reserved.id)
        return run.outcome

    def _say_running(self, reserved: greenstalk.Job, job: Job, attempt: int) -> None:
        of = f" (attempt {attempt} of {job.retries + 1})" if job.retries else ""
        log.info(
            "job %d (tube %s) running%s: %s", reserved.id, job.tube, of, job.describe()
        )

    def _attempt(self, reserved: greenstalk.Job, job: Job) -> int:
        # beanstalkd counts a job's releases; each retry is one. Other releases
        # (a stopping listener, a full tube) count too, so attempts may be fewer.
        if not job.retries:
            return 1
        try:
            releases = self.conn.stats_job(reserved)["releases"]
        except greenstalk.NotFoundError:
            return 1
        return min(releases + 1, job.retries + 1)

    def _touch(self, reserved: greenstalk.Job) -> None:
        try:
            self.conn.touch(reserved)
        except (QueueUnreachable, greenstalk.NotFoundError) as exc:
            log.warning("job %d lost its reservation (%s)", reserved.id, exc)

    def _settle(self, reserved: greenstalk.Job, job: Job, outcome: Outcome) -> None:
        name = f"job {reserved.id} (tube {job.tube})"
        try:
            if outcome.ok:
                self.done = (reserved.id, name)
                self.unsaid = (name, outcome.duration, job)
            elif self.listener.terminating.is_set():
                self.conn.release(reserved, priority=job.pri)
                log.info("%s released: the listener was terminated", name)
            else:
                self._fail(reserved, job, outcome)
        except greenstalk.NotFoundError:
            log.warning("%s ended but its reservation was lost; it may run again", name)

    def _fail(self, reserved: greenstalk.Job, job: Job, outcome: Outcome) -> None:
        if outcome.attempt <= job.retries and not outcome.refused:
            self._retry(reserved, job, outcome)
            return
        self.conn.bury(reserved, priority=job.pri)
        log.error(
            "job %d (tube %s) failed: %s after %.2f s%s; buried",
            reserved.id, job.tube, outcome.summary(), outcome.duration,
            _attempt_of(job, outcome),
        )  # fmt: skip
        report = failure_report(reserved.id, job, outcome)
        try:
            self._report(report)
        finally:
            self._mail(report, job)

    def _retry(self, reserved: greenstalk.Job, job: Job, outcome: Outcome) -> None:
        delay = min(job.retry_delay * 2 ** (outcome.attempt - 1), MAX_DELAY)
        self.conn.release(reserved, priority=job.pri, delay=delay)
        log.warning(
            "job %d (tube %s) failed: %s after %.2f s%s; released to run again in %d s",
            reserved.id, job.tube, outcome.summary(), outcome.duration,
            _attempt_of(job, outcome), delay,
        )  # fmt: skip

    def _mail(self, report: dict, job: Job) -> None:
        if not job.mailto:
            return
        if self.listener.mailer is None:
            log.info("job %d: not mailed (glow-listen has no --smtp)", report["id"])
            return
        self.listener.mailer.send(report, job.mailto)

    def _reject(self, reserved: greenstalk.Job, problem: str) -> None:
        self.conn.bury(reserved)
        log.error("job %d rejected: %s; buried", reserved.id, problem)
        body = reserved.body[:1024].decode(errors="replace")
        report = {"id": reserved.id, "host": HOST, "error": problem, "body": body}
        self._report(report)

    def _report(self, report: dict) -> None:
        self.conn.put(json.dumps(report).encode(), ttr=ERROR_TTR)


class Waker(threading.Thread):
    """Wakes idle slots when a tube they should watch appears.

    A slot waits in reserve-with-timeout for whole seconds and takes no `watch`
    meanwhile; a job in the listener's wake tube, which every slot watches, ends
    the wait at once. Costs a list-tubes every WAKE_CHECK seconds.
    """

    def __init__(self, listener: Listener) -> None:
        super().__init__(name="waker", daemon=True)
        self.listener = listener
        self.conn: Connection | None = None

    def run(self) -> None:
        while not self.listener.stopping.wait(WAKE_CHECK):
            try:
                self._check()
            except (QueueUnreachable, greenstalk.Error) as exc:
                log.debug("waker on %s: %s", self.listener.address, exc)
                self._close()
        self._close()

    def _check(self) -> None:
        tube = self.listener.wake_tube
        if self.conn is None:
            self.conn = connect(self.listener.address, use=tube)
        if not self.listener.chooser.refresh(self.conn):
            return
        # A wake job for each slot: each looks at the tubes when it takes one.
        for _ in range(self.listener.concurrency - _ready_in(self.conn, tube)):
            self.conn.put(tube.encode(), priority=0, ttr=ERROR_TTR)

    def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError, QueueUnreachable, greenstalk.Error):
                delete_ready(self.conn)  # untaken wake jobs: the tube goes too
                self.conn.close()
            self.conn = None


def _ready_in(conn: Connection, tube: str) -> int:
    try:
        return conn.stats_tube(tube)["current-jobs-ready"]
    except greenstalk.NotFoundError:
        return 0


def _entry(job_id: int, run: Run) -> dict:
    return running_entry(job_id, run.job.tube, run.job.describe(), run.outcome.started)


def _attempt_of(job: Job, outcome: Outcome) -> str:
    return f" (attempt {outcome.attempt} of {job.retries + 1})" if job.retries else ""


def failure_report(job_id: int, job: Job, outcome: Outcome) -> dict:
    """Returns the JSON report a failed job leaves on the error tube."""
    return {
        "id": job_id,
        "tube": job.tube,
        "cmd": job.cmd,
        "args": job.args,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "error": outcome.summary(),
        "reason": outcome.error,
        "ended": outcome.ended(),
        "attempt": outcome.attempt,
        "attempts": job.retries + 1,
        "user": job.user,
        "host": HOST,
        "pid": os.getpid(),
        "started": outcome.started,
        "duration": round(outcome.duration, 3),
        "stdout_tail": outcome.stdout_tail,
        "stderr_tail": outcome.stderr_tail,
    }


app = options.app("Reserve jobs from beanstalkd tubes and run them.")
Opt = typer.Option


@app.command()
def listen(
    tubes: Annotated[
        str, Opt(metavar="TUBES", help="Only these tubes (globs), a,b.")
    ] = "",
    exclude: Annotated[
        str, Opt(metavar="TUBES", help="Never these tubes (globs), a,b.")
    ] = "",
    concurrency: Annotated[
        int, Opt("--concurrency", "-c", min=1, metavar="N", help="Jobs at once.")
    ] = 1,
    limit: Annotated[
        list[str] | None, Opt(metavar="TUBE=N", help="At most N jobs of TUBE at once.")
    ] = None,
    log_file: Annotated[
        str | None, Opt("--log", metavar="FILE", help="Append log lines here.")
    ] = None,
    smtp: Annotated[
        str | None, Opt(metavar="HOST:PORT", help="Mail failures through this server.")
    ] = None,
    mail_from: Annotated[
        str | None, Opt(metavar="ADDR", help="Sender of failure mail.")
    ] = None,
    smtp_starttls: Annotated[
        bool, Opt("--smtp-starttls", help="Use STARTTLS with --smtp.")
    ] = False,
    allow_user: Annotated[
        list[str] | None,
        Opt(
            metavar="USER",
            help="Users a root listener may run jobs as (a,b; * any but root).",
        ),
    ] = None,
    cgroups: Annotated[
        bool, Opt(help="Use cgroups for memory and nproc limits where offered.")
    ] = True,
    pin: Annotated[
        bool, Opt(help="Keep each worker (-c above 1) on a CPU; jobs get all CPUs.")
    ] = True,
    queue: options.Queue = None,
    secret_file: options.SecretFile = None,
    verbose: options.Verbose = 0,
    quiet: options.Quiet = False,
) -> None:
    """Reserve jobs from beanstalkd tubes and run them until stopped.

    glow-listen -v --exclude slow-*   (SIGINT: finish jobs and exit;
    SIGTERM: kill jobs and release them; SIGHUP: reopen --log, reread secrets)
    """
    handler = cli.setup_logging("glow-listen", verbose, quiet, base=logging.INFO)
    if log_file:
        handler = _log_to_file(handler, log_file)
    address = queue_address(queue)
    parse_address(address)
    chooser = TubeChooser(_split(tubes), _split(exclude), _caps(limit or []))
    listener = Listener(address, chooser, concurrency)
    listener.pin = pin
    secret_file = [path.absolute() for path in secret_file or []]
    listener.secrets = _secrets(secret_file)
    _enter_workdir()
    signal.signal(signal.SIGINT, lambda *_: listener.stop())
    signal.signal(signal.SIGTERM, lambda *_: listener.terminate())
    signal.signal(signal.SIGHUP, lambda *_: _on_hangup(handler, listener, secret_file))
    if smtp:
        sender = mail_from or f"glow@{HOST}"
        listener.mailer = Mailer(mail_settings(smtp, sender, smtp_starttls))
    elif mail_from or smtp_starttls:
        raise ConfigInvalid("--mail-from and --smtp-starttls need --smtp HOST:PORT")
    listener.host = _host(_split(",".join(allow_user or [])), cgroups)
    try:
        listener.run()
    finally:
        listener.host.close()
        if listener.mailer:
            listener.mailer.close()


def _enter_workdir() -> None:
    # Jobs in the default workdir can then be spawned without a chdir, the
    # cheaper way (runner.Run); the listener opens no relative path after this.
    try:
        os.chdir(DEFAULT_WORKDIR)
    except OSError as exc:
        log.warning(
            "listener %d: cannot enter %s (%s)", os.getpid(), DEFAULT_WORKDIR, exc
        )


def _host(allowed: list[str], cgroups: bool) -> Host:
    host = Host(allowed, use_cgroups=cgroups)
    level = logging.INFO if host.cgroups or not cgroups else logging.WARNING
    log.log(level, "listener %d: %s", os.getpid(), host.describe())
    if allowed and not host.users.is_root:
        log.warning("--allow-user has no effect: the listener is not root")
    return host


def _on_hangup(handler: logging.Handler, listener: Listener, paths: list | None):
    _reopen(handler)
    if paths:
        _reread_secrets(listener, paths)
    if listener.workers:
        listener.workers.tell(signal.SIGHUP)


def _reread_secrets(listener: Listener, paths: list) -> None:
    # A rotation adds or drops a key without a restart; a bad file keeps the old.
    try:
        listener.secrets = _secrets(paths)
    except ConfigInvalid as exc:
        kids = ", ".join(secret.kid for secret in listener.secrets)
        log.error("%s; still running only jobs signed with key id %s", exc, kids)


def _secrets(paths: list) -> list[Secret]:
    secrets = load_secrets(paths)
    if secrets:
        kids = ", ".join(secret.kid for secret in secrets)
        log.info("running only jobs signed with key id %s", kids)
    return secrets


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _caps(pairs: list[str]) -> dict[str, int]:
    caps = {}
    for pair in pairs:
        tube, _, count = pair.partition("=")
        if not tube or not count.isdigit() or int(count) < 1:
            raise ConfigInvalid(f"--limit {pair!r} is not TUBE=N with N at least 1")
        caps[tube] = int(count)
    return caps


def _log_to_file(handler: logging.Handler, path: str) -> logging.Handler:
    try:
        file_handler = logging.FileHandler(path)
    except OSError as exc:
        raise ConfigInvalid(f"--log {path}: {exc.strerror}") from None
    file_handler.setFormatter(handler.formatter)
    logging.getLogger().handlers[:] = [file_handler]
    return file_handler


def _reopen(handler: logging.Handler) -> None:
    if isinstance(handler, logging.FileHandler):
        # After logrotate moved the file, the next line opens a new one.
        handler.acquire()
        try:
            handler.close()
            handler.stream = None
        finally:
            handler.release()


def main() -> None:
    """Runs glow-listen."""
    cli.run(app, "glow-listen")
