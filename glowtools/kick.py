"""glow-kick: puts buried (failed) jobs back in the ready state."""

import json
import logging
from typing import Annotated

import greenstalk
import typer

from . import cli, listing, options
from .connection import Connection, connect
from .defaults import MAX_JOB_ID
from .errors import NotFound

log = logging.getLogger("glowtools.kick")

app = options.app("Kick buried jobs back to ready.")


@app.command()
def kick(
    targets: Annotated[
        list[str] | None,
        typer.Argument(metavar="TUBE|ID", help="A tube, or job ids with --id."),
    ] = None,
    ids: Annotated[
        bool, typer.Option("--id", help="The arguments are job ids.")
    ] = False,
    bound: Annotated[
        int | None, typer.Option(min=1, help="Kick at most N jobs of the tube.")
    ] = None,
    queue: options.Queue = None,
    json_out: options.Json = False,
    verbose: options.Verbose = 0,
    quiet: options.Quiet = False,
) -> None:
    """Kick buried jobs back to ready; print the id of each job kicked.

    glow-kick nightly --bound 10      glow-kick --id 41 42
    """
    cli.setup_logging("glow-kick", verbose, quiet, base=logging.INFO, stamp=False)
    if not targets:
        raise typer.BadParameter("give a tube, or --id and job ids", param_hint="TUBE")
    with connect(queue) as conn:
        if ids:
            kick_ids(conn, [_job_id(text) for text in targets], json_out)
        elif len(targets) > 1:
            raise typer.BadParameter("give one tube (or --id for job ids)")
        else:
            kick_tube(conn, listing.user_tube(targets[0]), bound, json_out)


def _job_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_JOB_ID:
        raise typer.BadParameter(f"{text!r} is not a job id", param_hint="ID")
    return int(text)


def kick_tube(conn: Connection, tube: str, bound: int | None, json_out: bool) -> int:
    """Kicks the buried jobs of `tube`, oldest first, at most `bound` of them."""
    listing.tube_stats(conn, tube)
    kicked = 0
    # One kick-job at a time: `kick N` would kick delayed (held) jobs once the
    # buried ones run out.
    while bound is None or kicked < bound:
        job = listing.peek(conn, tube, "buried")
        if job is None:
            break
        conn.kick_job(job.id)
        _print(job.id, tube, json_out)
        kicked += 1
    if not kicked:
        log.info("tube %s has no buried jobs", tube)
    return kicked


def kick_ids(conn: Connection, job_ids: list[int], json_out: bool) -> None:
    """Kicks each buried job by id; raises after trying them all if one failed."""
    for job_id, tube in listing.each_job(
        job_ids, lambda i: _kick_one(conn, i), "kicked"
    ):
        _print(job_id, tube, json_out)


def _kick_one(conn: Connection, job_id: int) -> str:
    stats = listing.job_stats(conn, job_id)
    if stats["state"] != "buried":
        raise NotFound(
            f"job {job_id} (tube {stats['tube']}) is {listing.state_of(stats)}, "
            "not buried; glow-kick kicks only buried jobs"
        )
    try:
        conn.kick_job(job_id)
    except greenstalk.NotFoundError:
        raise NotFound(f"job {job_id} was no longer buried when kicked") from None
    return stats["tube"]


def _print(job_id: int, tube: str, json_out: bool) -> None:
    print(json.dumps({"id": job_id, "tube": tube}) if json_out else job_id, flush=True)


def main() -> None:
    """Runs glow-kick."""
    cli.run(app, "glow-kick")
