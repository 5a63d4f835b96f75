"""Listener presence through beanstalkd itself.

A listener keeps one connection watching its own tube GLOW_LISTENER.<host>.<pid>
and one status job in it. The tube lives while the connection does, so a listener
that died leaves a tube nobody watches; readers skip it and delete its status job.
"""

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable

import greenstalk

from .connection import Connection, connect
from .defaults import LISTENER_PREFIX, MAX_TUBE_NAME, PRESENCE_INTERVAL, WAKE_PREFIX
from .errors import GlowError, QueueUnreachable

log = logging.getLogger("glowtools.presence")
CMD_MAX = 200
STATUS_TTR = 3600


def status_tube(host: str, pid: int, prefix: str = LISTENER_PREFIX) -> str:
    """Returns the tube a listener on `host` with process id `pid` watches."""
    safe = re.sub(r"[^A-Za-z0-9\-+;.$_()]", "_", host)
    room = MAX_TUBE_NAME - len(prefix) - len(str(pid)) - 1
    return f"{prefix}{safe[:room]}.{pid}"


def wake_tube(host: str, pid: int) -> str:
    """Returns the tube whose jobs wake the idle slots of a listener."""
    return status_tube(host, pid, WAKE_PREFIX)


class Presence(threading.Thread):
    """Publishes what `status()` returns, replacing it when it changes.

    Runs on its own connection; `stop` deletes the status job and closes it.
    """

    def __init__(self, address: str, status: Callable[[], dict]) -> None:
        super().__init__(name="presence", daemon=True)
        self.address = address
        self.status = status
        self.tube = status_tube(socket.gethostname(), os.getpid())
        self.stopping = threading.Event()
        self.conn: Connection | None = None
        self.job_id: int | None = None
        self.published: dict | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._publish()
            except (GlowError, greenstalk.Error) as exc:
                log.debug("presence on %s: %s", self.address, exc)
                self._close()
            self.stopping.wait(PRESENCE_INTERVAL)
        self._withdraw()

    def stop(self) -> None:
        """Withdraws the status job and ends the thread; blocks until it has."""
        self.stopping.set()
        if self.is_alive():
            self.join(PRESENCE_INTERVAL + 5)

    def _publish(self) -> None:
        status = self.status()
        if self.conn is None:
            self.conn = connect(self.address, use=self.tube, watch=self.tube)
            self._clear()
            self.published = None
        if status == self.published:
            return
        body = json.dumps({**status, "updated": round(time.time(), 3)}).encode()
        new_id = self.conn.put(body, priority=0, ttr=STATUS_TTR)
        if self.job_id is not None:
            self._delete_status(self.job_id)
        self.job_id, self.published = new_id, status

    def _clear(self) -> None:
        # After a reconnect the old status job may still be there (binlog).
        while True:
            try:
                self.conn.delete(self.conn.peek_ready())
            except greenstalk.NotFoundError:
                break
        self.job_id = None

    def _delete_status(self, job_id: int) -> None:
        try:
            self.conn.delete(job_id)
        except greenstalk.NotFoundError:
            pass

    def _withdraw(self) -> None:
        try:
            if self.conn is not None and self.job_id is not None:
                self._delete_status(self.job_id)
        except (QueueUnreachable, greenstalk.Error):
            pass
        self._close()

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def running_entry(job_id: int, tube: str, cmd: str, started: float) -> dict:
    """Returns how a status job describes one running job."""
    if len(cmd) > CMD_MAX:
        cmd = cmd[: CMD_MAX - 3] + "..."
    return {"id": job_id, "tube": tube, "cmd": cmd, "started": round(started, 3)}


def listener_status(listener) -> dict:
    """Returns what a glow-listen Listener publishes: who it is and what it runs.

    Reads only the listener's memory, so its slots pay nothing for it.
    """
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queue": listener.address,
        "concurrency": listener.concurrency,
        "tubes": sorted(listener.chooser.known),
        "stopping": listener.stopping.is_set(),
        "running": listener.running(),
    }


def read_listeners(conn: Connection) -> list[dict]:
    """Returns the status of every listener connected now, by host and pid.

    Deletes the status and wake jobs that listeners which died left behind.
    """
    found = []
    for tube in sorted(conn.tubes()):
        if not tube.startswith((LISTENER_PREFIX, WAKE_PREFIX)):
            continue
        try:
            watching = conn.stats_tube(tube)["current-watching"]
        except greenstalk.NotFoundError:
            continue
        conn.use(tube)
        if watching == 0:
            delete_ready(conn)  # a dead listener's status or wake jobs
            continue
        if tube.startswith(LISTENER_PREFIX):
            found.append(_status_in(conn, tube))
    return found


def _status_in(conn: Connection, tube: str) -> dict:
    host, _, pid = tube[len(LISTENER_PREFIX) :].rpartition(".")
    try:
        status = json.loads(conn.peek_ready().body)
    except (greenstalk.NotFoundError, ValueError, RecursionError):
        status = {"host": host, "pid": int(pid) if pid.isdigit() else pid}
    return {**status, "tube": tube}


def delete_ready(conn: Connection) -> None:
    """Deletes every ready job of the tube `conn` uses."""
    while True:
        try:
            conn.delete(conn.peek_ready())
        except greenstalk.NotFoundError:
            return
