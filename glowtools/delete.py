"""glow-delete: deletes jobs by id, printing each first as a line glow-put takes."""

import logging
import sys
from typing import Annotated

import greenstalk
import typer

from . import cli, listing, options
from .connection import Connection, connect
from .defaults import MAX_JOB_ID
from .errors import JobInvalid, NotFound, ServerRefused

log = logging.getLogger("glowtools.delete")

app = options.app("Delete jobs by id, printing each first so it can be put back.")


@app.command()
def delete(
    ids: Annotated[
        list[int],
        typer.Argument(metavar="ID", min=1, max=MAX_JOB_ID, help="Jobs to delete."),
    ],
    queue: options.Queue = None,
    verbose: options.Verbose = 0,
    quiet: options.Quiet = False,
) -> None:
    """Delete jobs, printing each first as a JSON line that glow-put takes back.

    glow-delete 41 42 > deleted.jsonl    (glow-put < deleted.jsonl undoes it)
    """
    cli.setup_logging("glow-delete", verbose, quiet, stamp=False)
    with connect(queue) as conn:
        for _ in listing.each_job(ids, lambda i: delete_one(conn, i), "deleted"):
            pass


def delete_one(conn: Connection, job_id: int) -> None:
    """Prints a job's line and then deletes it; a reserved job cannot be deleted."""
    stats = listing.job_stats(conn, job_id)
    if stats["state"] == "reserved":
        raise ServerRefused(
            f"job {job_id} (tube {stats['tube']}) is reserved: a listener runs it "
            "(delete it once it is buried or released, or stop that listener)"
        )
    try:
        body = conn.peek(job_id).body
    except greenstalk.NotFoundError:
        raise NotFound(f"job {job_id} was deleted by someone else meanwhile") from None
    try:
        line = listing.job_line(body, stats)
    except JobInvalid:
        line = listing.invalid_line(job_id, stats, body)
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.buffer.flush()
    try:
        conn.delete(job_id)
    except greenstalk.NotFoundError:
        raise NotFound(
            f"job {job_id} was printed but reserved or deleted by someone else "
            "before glow-delete deleted it"
        ) from None
    if listing.is_held(stats):
        listing.drop_stale_records(conn, stats["tube"])


def main() -> None:
    """Runs glow-delete."""
    cli.run(app, "glow-delete")
