"""glow-drain: empties tubes, writing each job as a line glow-put takes back."""

import logging
import os
import signal
import sys
import threading
import time
from typing import Annotated, BinaryIO

import greenstalk
import typer

from . import cli, fleet_options, listing, options, paused
from .connection import Connection, connect
from .defaults import DRAIN_PAUSE
from .errors import Interrupted, JobInvalid

log = logging.getLogger("glowtools.drain")

app = options.app("Empty tubes into JSON lines that glow-put takes back.")


@app.command()
def drain(
    tubes: Annotated[
        list[str] | None, typer.Argument(metavar="TUBE", help="Tubes to empty.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Print the lines; take nothing.")
    ] = False,
    queue: options.Queue = None,
    verbose: options.Verbose = 0,
    quiet: options.Quiet = False,
    hosts: fleet_options.Hosts = None,
    inventory: fleet_options.Inventory = None,
    group: fleet_options.Group = fleet_options.DEFAULT_GROUP,
    deadline: fleet_options.Deadline = None,
    restart: fleet_options.Restart = False,
    no_wait: fleet_options.NoWait = False,
    ssh_config: fleet_options.SshConfig = None,
    json_out: options.Json = False,
) -> None:
    """Empty tubes (ready, delayed, held and buried jobs), one JSON line per job.

    glow-drain nightly > jobs.jsonl; glow-put < jobs.jsonl   (puts them back)

    With --hosts or --inventory, drains the listeners on those hosts instead:
    glow-drain --inventory inventory.ini --deadline 600 [--restart]
    """
    cli.setup_logging("glow-drain", verbose, quiet, base=logging.INFO, stamp=False)
    if fleet_options.is_fleet(hosts, inventory):
        fleet_options.drain(
            hosts, inventory, group, deadline, restart, no_wait, json_out, ssh_config
        )
    if not tubes:
        raise typer.BadParameter("give at least one tube", param_hint="TUBE")
    names = [listing.user_tube(tube) for tube in tubes]
    with connect(queue) as conn:
        for tube in names:
            listing.tube_stats(conn, tube)
        for tube in names:
            if dry_run:
                show_tube(conn, tube, sys.stdout.buffer)
            else:
                Drain(conn, tube, sys.stdout.buffer).run()


def show_tube(conn: Connection, tube: str, out: BinaryIO) -> int:
    """Writes the lines a drain of `tube` would write; changes nothing."""
    stats = listing.tube_stats(conn, tube)
    expected = sum(stats[f"current-jobs-{state}"] for state in listing.STATES)
    found = listing.drain_order(listing.scan_jobs(conn, tube, expected))
    for job_stats in found:
        try:
            body = conn.peek(job_stats["id"]).body
            out.write(listing.job_line(body, job_stats) + b"\n")
        except greenstalk.NotFoundError:
            continue
        except JobInvalid as exc:
            log.warning("job %d (tube %s): %s", job_stats["id"], tube, exc)
    out.flush()
    log.info("tube %s: %s would be drained", tube, jobs(len(found)))
    return len(found)


class Drain:
    """Takes every job out of one tube, writing its line before deleting it.

    The tube stays paused meanwhile, so no listener reserves a job between the
    line and the delete; its own pause, if any, is put back afterwards.
    """

    def __init__(self, conn: Connection, tube: str, out: BinaryIO) -> None:
        self.conn = conn
        self.tube = tube
        self.out = out
        self.counts = dict.fromkeys(["ready", "delayed", "held", "buried"], 0)
        self.stop = threading.Event()
        self._paused_at = 0.0

    def run(self) -> None:
        """Drains the tube; raises Interrupted if stdout or a signal stops it."""
        stats = listing.tube_stats(self.conn, self.tube)
        pause_until = time.monotonic() + stats["pause-time-left"]
        old = [
            signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)
        ]
        try:
            # Another pass catches jobs that changed state meanwhile: a job a
            # listener released, a held job glow-dep released.
            while sum(self._take_all(state) for state in listing.STATES):
                pass
        finally:
            signal.signal(signal.SIGINT, old[0])
            signal.signal(signal.SIGTERM, old[1])
            self._restore_pause(pause_until)
            if self.counts["held"]:
                listing.drop_stale_records(self.conn, self.tube)
        self._summarize()

    def _on_signal(self, *_) -> None:
        self.stop.set()

    def _take_all(self, state: str) -> int:
        taken = 0
        while self._take_next(state):
            taken += 1
        return taken

    def _take_next(self, state: str) -> bool:
        if self.stop.is_set():
            raise self._interrupted("a signal")
        self._keep_paused()
        job = listing.peek(self.conn, self.tube, state)
        if job is None:
            return False
        stats = listing.job_stats(self.conn, job.id)
        try:
            line = listing.job_line(job.body, stats)
        except JobInvalid as exc:
            raise self._left(job.id, stats, exc) from None
        self._write(line, job.id)
        self._delete(job.id)
        self.counts[listing.state_of(stats)] += 1
        return True

    def _keep_paused(self) -> None:
        if time.monotonic() - self._paused_at > DRAIN_PAUSE / 3:
            self.conn.pause_tube(self.tube, DRAIN_PAUSE)
            self._paused_at = time.monotonic()

    def _write(self, line: bytes, job_id: int) -> None:
        try:
            self.out.write(line + b"\n")
            self.out.flush()
        except OSError as exc:
            why = "stdout was closed" if _is_pipe(exc) else f"stdout failed ({exc})"
            # Nothing more can reach stdout; exiting must not try to flush it again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
            raise self._interrupted(why, job_id) from None

    def _delete(self, job_id: int) -> None:
        try:
            self.conn.delete(job_id)
        except greenstalk.NotFoundError:
            log.warning(
                "job %d (tube %s) was written but someone else took it before "
                "glow-drain deleted it; it may be put twice", job_id, self.tube,
            )  # fmt: skip

    def _restore_pause(self, pause_until: float) -> None:
        left = max(round(pause_until - time.monotonic()), 0)
        if paused.record(self.conn, self.tube) is not None:
            left = paused.FOREVER
        try:
            self.conn.pause_tube(self.tube, left)
        except greenstalk.NotFoundError:
            pass

    def _drained(self) -> int:
        return sum(self.counts.values())

    def _interrupted(self, why: str, job_id: int | None = None) -> Interrupted:
        at = f"; job {job_id} and" if job_id else "; the"
        return Interrupted(
            f"{why} after {jobs(self._drained())} of tube {self.tube} were written"
            f"{at} the jobs after it are still in the tube"
        )

    def _left(self, job_id: int, stats: dict, exc: JobInvalid) -> JobInvalid:
        return JobInvalid(
            f"job {job_id} (tube {self.tube}, {listing.state_of(stats)})",
            f"is not a glow job: {exc.problem}; it and the jobs after it are still "
            f"in the tube after {jobs(self._drained())} drained (see it with "
            f"glow-peek {job_id}, remove it with glow-delete {job_id}, drain again)",
        )

    def _summarize(self) -> None:
        parts = [f"{n} {state}" for state, n in self.counts.items() if n]
        detail = f" ({', '.join(parts)})" if parts else ""
        log.info("tube %s: %s drained%s", self.tube, jobs(self._drained()), detail)
        try:
            running = self.conn.stats_tube(self.tube)["current-jobs-reserved"]
        except greenstalk.NotFoundError:
            running = 0
        if running:
            log.warning(
                "tube %s: %d reserved jobs are running and were left (drain "
                "again once they are done)", self.tube, running,
            )  # fmt: skip


def jobs(count: int) -> str:
    """Returns `1 job`, `2 jobs`."""
    return f"{count} job" if count == 1 else f"{count} jobs"


def _is_pipe(exc: OSError) -> bool:
    return isinstance(exc, BrokenPipeError | ConnectionResetError)


def main() -> None:
    """Runs glow-drain."""
    cli.run(app, "glow-drain")
