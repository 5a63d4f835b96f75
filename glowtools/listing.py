"""Seeing a tube's jobs, which beanstalkd cannot list, and writing them back out.

A job is written as one JSON line that glow-put takes back as it is: the body's
fields with the priority, TTR and remaining delay that beanstalkd holds now.
"""

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import greenstalk

from . import hold
from .connection import Connection, connect
from .defaults import ERROR_TUBE, REPORT_SCAN_MAX, is_internal_tube
from .errors import GlowError, JobInvalid, NotFound, ServerRefused
from .job import encode, parse_body, tube_name

log = logging.getLogger("glowtools.listing")
STATES = ("ready", "delayed", "buried")
# Ids whose stats-job answers are read after one write, in the id scan.
SCAN_WINDOW = 500
PROBE_TUBE = "GLOW_PROBE"


def user_tube(name: str) -> str:
    """Validates a tube named on the command line; raises JobInvalid if it is bad."""
    try:
        tube_name(name)
    except ValueError as exc:
        raise JobInvalid(
            f"tube {name!r}", str(exc).removeprefix(f"{name!r} ")
        ) from None
    if is_internal_tube(name):
        raise JobInvalid(f"tube {name!r}", "is one of glowtools' own GLOW_ tubes")
    return name


def tube_stats(conn: Connection, tube: str) -> dict:
    """Returns stats-tube for `tube`; raises NotFound if the tube does not exist."""
    try:
        return conn.stats_tube(tube)
    except greenstalk.NotFoundError:
        raise NotFound(
            f"tube {tube!r} does not exist on {conn.address} (it has no jobs and "
            "nobody uses it; glow-stats lists the tubes there are)"
        ) from None


def job_stats(conn: Connection, job_id: int) -> dict:
    """Returns stats-job for a job; raises NotFound if there is no such job."""
    try:
        return conn.stats_job(job_id)
    except greenstalk.NotFoundError:
        raise NotFound(
            f"job {job_id} does not exist on {conn.address} (it was deleted, or "
            "completed)"
        ) from None


def is_held(stats: dict) -> bool:
    """Tells whether stats-job describes a held job (delayed until released)."""
    return hold.is_held(stats)


def drop_stale_records(conn: Connection, tube: str) -> int:
    """Deletes the index records of `tube` whose job is no longer held.

    Records a running glow-dep has leased are left to it; it drops them itself.
    """
    index = hold.index_tube(tube)
    conn.watch(index)
    conn.ignore("default")
    try:
        held, gone, _ = hold.confirm_held(conn, hold.take_records(conn))
        commands = [b"delete %d\r\n" % r.record_id for r in gone]
        commands += [b"release %d 0 0\r\n" % r.record_id for r, _ in held]
        hold.pipeline(conn, commands)
    finally:
        conn.watch("default")
        conn.ignore(index)
    return len(gone)


def state_of(stats: dict) -> str:
    """Returns a job's state in glow's words: beanstalkd's, or held."""
    return "held" if is_held(stats) else stats["state"]


def job_line(body: bytes, stats: dict) -> bytes:
    """Returns the glow-put line for a job; raises JobInvalid if it is not a job.

    Priority and TTR come from the server; a delayed job keeps the delay it has
    left, a held job the body's own delay (its dependencies hold it again).
    """
    job = parse_body(body)
    job.tube, job.pri, job.ttr = stats["tube"], stats["pri"], stats["ttr"]
    if stats["state"] == "delayed" and not is_held(stats):
        job.delay = stats["time-left"]
    elif not job.held:
        job.delay = 0
    return job.to_body()


def describe_body(body: bytes) -> Any:
    """Returns a body as JSON if it is, else as text."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return body.decode(errors="replace")


def peek(conn: Connection, tube: str, state: str) -> greenstalk.Job | None:
    """Returns the next job of `tube` in `state` (ready, delayed, buried), or None."""
    conn.use(tube)
    try:
        return getattr(conn, f"peek_{state}")()
    except greenstalk.NotFoundError:
        return None


def scan_jobs(conn: Connection, tube: str, expected: int) -> list[dict]:
    """Returns stats-job of the jobs of `tube`, found by asking for every job id.

    Walks down from the newest id and stops once `expected` jobs are found. It
    changes nothing but a probe job put and deleted in GLOW_PROBE.
    """
    found: list[dict] = []
    top = _newest_id(conn)
    while top > 0 and len(found) < expected:
        ids = range(top, max(top - SCAN_WINDOW, 0), -1)
        for stats in _stats_many(conn, ids):
            if stats and stats["tube"] == tube and stats["state"] != "reserved":
                found.append(stats)
        top -= SCAN_WINDOW
    return found


def _newest_id(conn: Connection) -> int:
    conn.use(PROBE_TUBE)
    probe = conn.put(b"", ttr=1)
    conn.delete(probe)
    return probe - 1


def _stats_many(conn: Connection, ids: range) -> list[dict | None]:
    wire = b"".join(b"stats-job %d\r\n" % job_id for job_id in ids)
    with conn._translated():
        conn._sock.sendall(wire)
        return [_read_stats(conn) for _ in ids]


def _read_stats(conn: Connection) -> dict | None:
    line = conn._reader.readline()
    word, _, size = line.strip().partition(b" ")
    if word == b"NOT_FOUND":
        return None
    if word != b"OK" or not size.isdigit():
        raise ServerRefused(
            f"beanstalkd at {conn.address} answered {line.strip()!r} to stats-job"
        )
    text = conn._reader.read(int(size) + 2).decode()
    stats: dict = {}
    for item in text.splitlines()[1:]:
        key, _, value = item.partition(": ")
        stats[key] = int(value) if value.lstrip("-").isdigit() else value.strip('"')
    return stats


def drain_order(found: list[dict]) -> list[dict]:
    """Orders jobs as a drain takes them: ready, delayed (soonest), buried."""

    def key(stats: dict) -> tuple:
        rank = STATES.index(stats["state"])
        if stats["state"] == "ready":
            return rank, stats["pri"], stats["id"]
        if stats["state"] == "delayed":
            return rank, stats["time-left"], stats["id"]
        return rank, 0, stats["id"]

    return sorted(found, key=key)


def failure_reports(address: str, wanted: set[int] | None = None) -> dict[int, dict]:
    """Returns the failure reports in GLOW_ERRORS by job id, newest last.

    Reserves the reports and then closes the connection, which puts them back
    as they were. Stops early once every id in `wanted` is found.
    """
    reports: dict[int, dict] = {}
    conn = connect(address, watch=ERROR_TUBE)
    try:
        for report in _reserve_all(conn):
            if isinstance(report.get("id"), int):
                reports[report["id"]] = report
            if wanted is not None and wanted <= reports.keys():
                break
    finally:
        conn.close()
    return reports


def _reserve_all(conn: Connection) -> Iterator[dict]:
    for _ in range(REPORT_SCAN_MAX):
        try:
            job = conn.reserve(timeout=0)
        except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
            return
        report = describe_body(job.body)
        if isinstance(report, dict):
            yield report


def invalid_line(job_id: int, stats: dict, body: bytes) -> bytes:
    """Returns a JSON line for a body that is not a job: id, tube and the body."""
    return encode({"id": job_id, "tube": stats["tube"], "body": describe_body(body)})


def each_job(
    job_ids: list[int], act: Callable[[int], Any], done: str
) -> Iterator[tuple[int, Any]]:
    """Yields (id, act(id)) for each job, going on past the ones that fail.

    Raises, once all were tried, the failure itself if there was one job, else
    an error of the last failure's kind that counts the jobs not `done` (each
    failure is logged).
    """
    failed: list[GlowError] = []
    for job_id in job_ids:
        try:
            result = act(job_id)
        except GlowError as exc:
            if len(job_ids) > 1:
                log.error("%s", exc)
            failed.append(exc)
            continue
        yield job_id, result
    if failed and len(job_ids) > 1:
        failed[-1].args = (f"{len(failed)} of {len(job_ids)} jobs were not {done}",)
    if failed:
        raise failed[-1]
