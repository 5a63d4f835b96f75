"""glow-peek: shows a job's body, its stats and, if it failed, its failure report."""

import json
from typing import Annotated, Any

import greenstalk
import typer

from . import cli, hold, listing, options
from .connection import Connection, connect
from .defaults import MAX_JOB_ID
from .errors import NotFound

app = options.app("Show a job: its body, its stats and its failure report.")


@app.command()
def peek(
    target: Annotated[
        str,
        typer.Argument(metavar="ID|TUBE", help="A job id, or a tube with --buried."),
    ],
    buried: Annotated[
        bool, typer.Option("--buried", help="Show the first buried job of TUBE.")
    ] = False,
    queue: options.Queue = None,
    json_out: options.Json = False,
) -> None:
    """Show a job's body as JSON, its stats and, if it is buried, why it failed.

    glow-peek 42      glow-peek --buried nightly      glow-peek --json 42 | jq .
    """
    with connect(queue) as conn:
        if buried:
            job_id = first_buried(conn, listing.user_tube(target))
        elif target.isascii() and target.isdigit() and 0 < int(target) <= MAX_JOB_ID:
            job_id = int(target)
        else:
            raise typer.BadParameter(f"{target!r} is not a job id", param_hint="ID")
        shown = show_job(conn, job_id)
    print(json.dumps(shown, indent=None if json_out else 2))


def first_buried(conn: Connection, tube: str) -> int:
    """Returns the id of the oldest buried job of `tube`; raises NotFound if none."""
    listing.tube_stats(conn, tube)
    job = listing.peek(conn, tube, "buried")
    if job is None:
        raise NotFound(f"tube {tube!r} has no buried jobs")
    return job.id


def show_job(conn: Connection, job_id: int) -> dict[str, Any]:
    """Returns a job's id, tube, state, stats, body and failure report, if any."""
    stats = listing.job_stats(conn, job_id)
    try:
        body = conn.peek(job_id).body
    except greenstalk.NotFoundError:
        raise NotFound(f"job {job_id} was deleted while being read") from None
    shown = {
        "id": job_id,
        "tube": stats["tube"],
        "state": listing.state_of(stats),
        "stats": stats,
        "body": listing.describe_body(body),
    }
    if stats["state"] == "buried":
        report = listing.failure_reports(conn.address, {job_id}).get(job_id)
        shown["report"] = report
    elif shown["state"] == "held":
        shown["upstream"] = _upstream_of(conn, job_id)
    return shown


def _upstream_of(conn: Connection, job_id: int) -> dict | None:
    """Returns what a held job waits on and whether that is blocked, if known."""
    for group in hold.held_groups(conn):
        if job_id in group.ids:
            keys = ("after", "after_jobs", "after_any", "state", "reason")
            return {key: getattr(group, key) for key in keys}
    return None


def main() -> None:
    """Runs glow-peek."""
    cli.run(app, "glow-peek")
