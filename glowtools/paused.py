"""Pauses that last until resumed, kept as a record job in tube GLOW_PAUSED.<tube>.

beanstalkd forgets a pause when it restarts; a record job survives that (with a
binlog) and a listener restart, and listeners leave out tubes that have one.
"""

import getpass
import json
import socket
import time
from collections.abc import Iterable

import greenstalk

from .connection import Connection
from .defaults import HOLD_DELAY, MAX_TUBE_NAME, PAUSED_PREFIX
from .errors import JobInvalid

# beanstalkd's pause-tube takes a delay of up to 2**32-1 seconds; this is plenty.
FOREVER = HOLD_DELAY


def record_tube(tube: str) -> str:
    """Returns the name of the tube that holds `tube`'s pause record."""
    name = PAUSED_PREFIX + tube
    if len(name) > MAX_TUBE_NAME:
        limit = MAX_TUBE_NAME - len(PAUSED_PREFIX)
        raise JobInvalid(
            f"tube {tube!r}", f"is too long to pause until resumed (at most {limit})"
        )
    return name


def paused_in(tubes: Iterable[str]) -> set[str]:
    """Returns the tubes whose pause record is among `tubes` (a list-tubes answer)."""
    return {t[len(PAUSED_PREFIX) :] for t in tubes if t.startswith(PAUSED_PREFIX)}


def record(conn: Connection, tube: str) -> dict | None:
    """Returns the pause record of `tube`, or None if it is not paused until resumed."""
    conn.use(record_tube(tube))
    try:
        job = conn.peek_ready()
    except greenstalk.NotFoundError:
        return None
    try:
        return json.loads(job.body)
    except (ValueError, RecursionError):
        return {}


def pause(conn: Connection, tube: str) -> bool:
    """Pauses `tube` until resumed; returns False if it already was."""
    if record(conn, tube) is not None:
        _pause_server(conn, tube, FOREVER)
        return False
    body = {"tube": tube, "by": _who(), "since": round(time.time())}
    conn.use(record_tube(tube))
    conn.put(json.dumps(body).encode(), ttr=1)
    _pause_server(conn, tube, FOREVER)
    return True


def resume(conn: Connection, tube: str) -> bool:
    """Ends a pause of either kind; returns False if `tube` was not paused."""
    was = False
    conn.use(record_tube(tube))
    while True:
        try:
            conn.delete(conn.peek_ready())
        except greenstalk.NotFoundError:
            break
        was = True
    try:
        was = was or conn.stats_tube(tube)["pause-time-left"] > 0
        conn.pause_tube(tube, 0)
    except greenstalk.NotFoundError:
        pass
    return was


def _pause_server(conn: Connection, tube: str, seconds: int) -> None:
    # The tube exists only while it has jobs or users; the record alone is enough.
    try:
        conn.pause_tube(tube, seconds)
    except greenstalk.NotFoundError:
        pass


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"
