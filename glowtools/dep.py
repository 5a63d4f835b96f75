"""glow-dep: releases held jobs once the tubes and jobs they wait on have drained."""

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import defaultdict
from typing import Annotated

import typer

from . import cli, hold, options
from .connection import Connection, connect, parse_address, queue_address
from .defaults import DEP_CHECK, DEP_SWEEP, TUBE_REFRESH, VIEW_REFRESH, VIEW_TTL
from .errors import QueueUnreachable
from .hold import Group, Record, Upstream, Verdict

log = logging.getLogger("glowtools.dep")
HOST = socket.gethostname()
BACKOFF_MAX = 30.0
# A view lists at most this many job ids per group, and stays below the smallest
# job size beanstalkd may be started with.
VIEW_IDS = 50
VIEW_MAX_BYTES = 60_000


class Releaser:
    """Adopts index records and releases their held jobs when their upstream drains.

    Each check costs one pipelined stats command per distinct upstream tube or
    job, whatever the number of held jobs; a drain releases all that wait on it.
    """

    def __init__(self, address: str, show: bool = True) -> None:
        self.address = address
        self.conn: Connection | None = None
        self.records: dict[int, Record] = {}
        self.by_key: dict[tuple, dict[int, Record]] = defaultdict(dict)
        self.watching: set[str] = set()
        self.verdicts: dict[tuple, Verdict] = {}
        self.changes = 0
        self._cycle: list[str] | None = None
        self._cycle_checked = -1
        self.stopping = threading.Event()
        self.view = View() if show else None
        self._refreshed = self._swept = 0.0

    def run(self) -> None:
        """Checks and releases until stopped. Blocks."""
        log.info("glow-dep %d on %s: queue %s", os.getpid(), HOST, self.address)
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self.check(wait=True)
                backoff = 0.5
            except QueueUnreachable as exc:
                self.disconnect()
                log.warning("%s; retrying in %.1f s", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self.stop()
        log.info("glow-dep %d stopped", os.getpid())

    def check(self, wait: bool = False) -> list[Record]:
        """Adopts new records, releases what can be released; returns those records.

        With `wait`, waits for new records up to DEP_CHECK s (1 s when idle).
        """
        if self.conn is None:
            self._connect()
        self._adopt(wait)
        if self.changes != self._cycle_checked:
            self._say_cycle()
        released = self._release()
        if time.monotonic() - self._swept > DEP_SWEEP:
            self._sweep()
        if self.view and self.view.publish(self.conn, self):
            # A glow-dep died: take over the records it had adopted.
            hold.unbury_records(self.conn)
        return released

    def stop(self) -> None:
        """Hands the adopted records back and disconnects (a clean stop)."""
        try:
            if self.conn is not None:
                hold.hand_back(self.conn, list(self.records.values()))
                if self.view:
                    self.view.withdraw(self.conn)
        except QueueUnreachable:
            pass
        self.disconnect()

    def disconnect(self) -> None:
        """Closes the connection and forgets the records; they stay adopted."""
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None
        self.records.clear()
        self.by_key.clear()
        self.verdicts.clear()

    def _connect(self) -> None:
        self.conn = connect(self.address)
        self.watching = {"default"}
        log.debug("connected to %s", self.address)
        # Records a stopped glow-dep had adopted, or this one before a reconnect.
        kicked = hold.unbury_records(self.conn)
        if kicked:
            log.info("took over %d index record(s) adopted before", kicked)

    def _adopt(self, wait: bool) -> None:
        if time.monotonic() - self._refreshed > TUBE_REFRESH:
            self.watching = hold.watch_index_tubes(self.conn, self.watching)
            self._refreshed = time.monotonic()
        if wait and not self.records:
            # Idle: one blocking reserve instead of a check every DEP_CHECK s.
            answer = hold.pipeline(self.conn, [b"reserve-with-timeout 1\r\n"])[0]
            if answer.word != b"RESERVED":
                return
            for record in hold.record_or_bury(self.conn, answer):
                hold.pipeline(self.conn, [b"bury %d 0\r\n" % record.record_id])
                self._add(record)
        elif wait:
            self.stopping.wait(DEP_CHECK)
        for record in hold.adopt_records(self.conn):
            self._add(record)

    def _add(self, record: Record) -> None:
        self.records[record.record_id] = record
        self.by_key[record.key][record.record_id] = record
        self.changes += 1

    def _forget(self, records: list[Record]) -> None:
        for record in records:
            if self.records.pop(record.record_id, None):
                group = self.by_key[record.key]
                del group[record.record_id]
                if not group:
                    del self.by_key[record.key]
                    self.verdicts.pop(record.key, None)
        self.changes += 1

    def _release(self) -> list[Record]:
        if not self.records:
            return []
        # One record per key stands for its group: the cost is per upstream.
        groups = [list(group.values()) for group in list(self.by_key.values())]
        upstream = hold.fetch_upstream(self.conn, [g[0] for g in groups])
        ready = [r for group in groups if self._judge(group, upstream) for r in group]
        if not ready:
            return []
        released, gone, lost = hold.release_held(self.conn, ready)
        self._forget(ready)
        _say_released(released)
        _say_gone(gone)
        _say_lost(lost)
        return released

    def _judge(self, records: list[Record], upstream: Upstream) -> bool:
        """Judges records that share a key; says so when their state changes."""
        verdict = hold.judge(records[0], upstream)
        before = self.verdicts.get(records[0].key)
        self.verdicts[records[0].key] = verdict
        self.changes += verdict != before
        # A waiting job's reason changes with every job upstream: say it once.
        if verdict != before and not (
            before and before.state == verdict.state == "waiting"
        ):
            _say_verdict(records, verdict, before)
        return verdict.state == "release"

    def _say_cycle(self) -> None:
        cycle = _find_cycle(self.by_key)
        if cycle and cycle != self._cycle:
            log.warning(_cycle_message(cycle))
        self._cycle, self._cycle_checked = cycle, self.changes

    def _sweep(self) -> None:
        _, gone, lost = hold.sweep_held(self.conn, list(self.records.values()))
        self._forget([*gone, *lost])
        _say_gone(gone)
        self._swept = time.monotonic()


def _say_verdict(records: list[Record], verdict: Verdict, before) -> None:
    tube, count = records[0].tube, len(records)
    jobs = f"{count} held job" + ("s" if count > 1 else "")
    if verdict.state == "blocked":
        log.warning("tube %s: %s blocked: %s", tube, jobs, verdict.reason)
    elif before and before.state == "blocked":
        log.info("tube %s: %s no longer blocked", tube, jobs)
    elif verdict.state == "waiting":
        log.debug("tube %s: %s waiting: %s", tube, jobs, verdict.reason)


def _say_released(released: list[Record]) -> None:
    by_key: dict[tuple, list[Record]] = defaultdict(list)
    for record in released:
        by_key[record.key].append(record)
        log.debug("job %d (tube %s) released", record.job_id, record.tube)
    for (tube, after, after_jobs, after_any), records in by_key.items():
        ids = _ids(r.job_id for r in records)
        settled = "settled" if after_any else "drained"
        waited = ", ".join([*after, *(f"job {j}" for j in after_jobs)])
        log.info("tube %s: released job(s) %s; %s %s", tube, ids, waited, settled)


def _say_gone(gone: list[Record]) -> None:
    for record in gone:
        log.info(
            "job %d (tube %s) is no longer held (deleted or kicked); "
            "its index record is dropped", record.job_id, record.tube,
        )  # fmt: skip


def _say_lost(lost: list[Record]) -> None:
    if lost:
        log.info("another glow-dep acted first on %d index record(s)", len(lost))


def _ids(ids) -> str:
    ids = sorted(ids)
    shown = ",".join(map(str, ids[:20]))
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


class View:
    """What this glow-dep holds, shown to glow-stats and glow-dep --graph.

    One job in GLOW_DEP.<host>.<pid>, delayed VIEW_TTL s and renewed every
    VIEW_REFRESH s, so that a ready one is known to be a dead glow-dep's.
    """

    def __init__(self) -> None:
        self.tube = hold.view_tube(HOST)
        self.job_id: int | None = None
        self.body = b""
        self.changes = -1
        self._shown = 0.0

    def publish(self, conn: Connection, releaser: Releaser) -> bool:
        """Renews the view if it changed or is due; True if a dead one was found."""
        due = time.monotonic() - self._shown > VIEW_REFRESH
        if releaser.changes == self.changes and not due:
            return False
        body = self.body
        if releaser.changes != self.changes:
            body = _view_body(releaser.records.values(), releaser.verdicts)
            self.changes = releaser.changes
        conn.use(self.tube)
        new_id = conn.put(body, priority=0, delay=VIEW_TTL, ttr=1)
        self.withdraw(conn)
        self.job_id, self.body, self._shown = new_id, body, time.monotonic()
        return due and _drop_dead_views(conn, self.tube)

    def withdraw(self, conn: Connection) -> None:
        """Deletes the view."""
        if self.job_id is not None:
            hold.pipeline(conn, [b"delete %d\r\n" % self.job_id])
            self.job_id = None


def _view_body(records, verdicts: dict) -> bytes:
    groups = [_trimmed(g) for g in hold.group_records(records, verdicts)]
    daemon = f"{HOST}:{os.getpid()}"
    body = json.dumps({"daemon": daemon, "groups": groups})
    while len(body) > VIEW_MAX_BYTES and len(groups) > 1:
        groups = groups[: len(groups) // 2]
        body = json.dumps({"daemon": daemon, "groups": groups})
    return body.encode()


def _trimmed(group: Group) -> dict:
    data = group.to_dict()
    data["ids"] = sorted(data["ids"])[:VIEW_IDS]
    return data


def _drop_dead_views(conn: Connection, mine: str) -> bool:
    """Deletes the views of dead glow-deps; returns whether there were any."""
    found = False
    for tube in conn.tubes():
        if tube.startswith(hold.VIEW_PREFIX) and tube != mine:
            conn.use(tube)
            answer = hold.pipeline(conn, [b"peek-ready\r\n"])[0]
            if answer.word == b"FOUND":
                hold.pipeline(conn, [b"delete %s\r\n" % answer.args[0]])
                log.info("a glow-dep stopped (%s); taking over its records", tube)
                found = True
    conn.use("default")
    return found


app = options.app(
    "Release held jobs once the tubes and jobs they wait on have drained."
)
Opt = typer.Option


@app.command()
def dep(
    once: Annotated[
        bool, Opt("--once", help="Release what can be released, then exit.")
    ] = False,
    graph: Annotated[
        bool, Opt("--graph", help="Print what is held now, and on what.")
    ] = False,
    queue: options.Queue = None,
    json_out: options.Json = False,
    verbose: options.Verbose = 0,
    quiet: options.Quiet = False,
) -> None:
    """Release held jobs when their upstream tubes and jobs have drained.

    glow-dep -v   (runs until SIGINT or SIGTERM; several may run at once)
    """
    cli.setup_logging("glow-dep", verbose, quiet, base=logging.INFO)
    address = queue_address(queue)
    parse_address(address)
    if graph:
        _print_graph(address, json_out)
        return
    if once:
        releaser = Releaser(address, show=False)
        try:
            for record in releaser.check():
                print(record.job_id)
        finally:
            releaser.stop()
        return
    releaser = Releaser(address)
    signal.signal(signal.SIGINT, lambda *_: releaser.stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: releaser.stopping.set())
    releaser.run()


def _print_graph(address: str, json_out: bool) -> None:
    with connect(address) as conn:
        groups = hold.held_groups(conn)
    for group in groups:
        print(json.dumps(group.to_dict()) if json_out else _describe(group))
    cycle = _find_cycle((g.tube, g.after) for g in groups)
    if cycle:
        print(f"glow-dep: {_cycle_message(cycle)}", file=sys.stderr)


def _find_cycle(keys) -> list[str] | None:
    """Returns a cycle of tubes whose held jobs wait on each other, or None."""
    rules = defaultdict(set)
    for tube, after, *_ in keys:
        rules[tube].update(after)
    return hold.find_cycle({tube: sorted(up) for tube, up in rules.items()})


def _cycle_message(cycle: list[str]) -> str:
    return (
        f"held jobs wait on each other in a cycle: {' -> '.join(cycle)}; they are "
        "never released (delete some of them)"
    )


def _describe(group: Group) -> str:
    upstream = [*group.after, *(f"job {j}" for j in group.after_jobs)]
    any_ = " (settled, failed or not)" if group.after_any else ""
    state = f"{group.state}: {group.reason}" if group.reason else group.state
    return f"{group.tube} after {', '.join(upstream)}{any_}: {group.held} held, {state}"


def main() -> None:
    """Runs glow-dep."""
    cli.run(app, "glow-dep")
