"""glow-pause: pauses tubes for a while or until resumed, and resumes them."""

import logging
from typing import Annotated

import greenstalk
import typer

from . import cli, listing, options, paused
from .connection import Connection, connect
from .defaults import MAX_DELAY
from .errors import NotFound

log = logging.getLogger("glowtools.pause")

app = options.app("Pause tubes so that no job of theirs is reserved, or resume them.")


@app.command()
def pause(
    tubes: Annotated[
        list[str], typer.Argument(metavar="TUBE", help="Tubes to pause or resume.")
    ],
    seconds: Annotated[
        int | None,
        typer.Option(
            "--for", min=1, max=MAX_DELAY, metavar="SECONDS", help="Pause this long."
        ),
    ] = None,
    until_resumed: Annotated[
        bool,
        typer.Option(
            "--until-resumed",
            help="Pause until --resume, across listener and server restarts.",
        ),
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="End a pause of either kind.")
    ] = False,
    queue: options.Queue = None,
    verbose: options.Verbose = 0,
    quiet: options.Quiet = False,
) -> None:
    """Pause tubes (no job of theirs is reserved meanwhile), or resume them.

    glow-pause nightly --for 600 (then --resume, or wait), or --until-resumed
    """
    cli.setup_logging("glow-pause", verbose, quiet, base=logging.INFO, stamp=False)
    if [seconds is not None, until_resumed, resume].count(True) != 1:
        raise typer.BadParameter(
            "give exactly one of --for SECONDS, --until-resumed and --resume"
        )
    names = [listing.user_tube(tube) for tube in tubes]
    with connect(queue) as conn:
        for tube in names:
            if resume:
                resume_tube(conn, tube)
            elif until_resumed:
                pause_until_resumed(conn, tube)
            else:
                pause_for(conn, tube, seconds)


def pause_for(conn: Connection, tube: str, seconds: int) -> None:
    """Pauses a tube with beanstalkd's timed pause."""
    try:
        conn.pause_tube(tube, seconds)
    except greenstalk.NotFoundError:
        raise NotFound(
            f"tube {tube!r} does not exist on {conn.address}, so beanstalkd cannot "
            "pause it (--until-resumed pauses it before its jobs arrive)"
        ) from None
    log.info("tube %s paused for %d s", tube, seconds)


def pause_until_resumed(conn: Connection, tube: str) -> None:
    """Pauses a tube until `glow-pause --resume`."""
    if paused.pause(conn, tube):
        log.info("tube %s paused until resumed (glow-pause --resume %s)", tube, tube)
    else:
        log.info("tube %s was already paused until resumed", tube)


def resume_tube(conn: Connection, tube: str) -> None:
    """Ends a tube's pause; raises NotFound if there is no such tube."""
    if paused.resume(conn, tube):
        log.info("tube %s resumed", tube)
        return
    listing.tube_stats(conn, tube)
    log.info("tube %s was not paused", tube)


def main() -> None:
    """Runs glow-pause."""
    cli.run(app, "glow-pause")
