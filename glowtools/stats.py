"""glow-stats: the tubes' jobs by state, the server, and the listeners at work."""

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import typer

from . import cli, fleet_options, hold, listing, options, paused
from .connection import Connection, connect
from .defaults import is_internal_tube
from .errors import NotFound, QueueUnreachable
from .presence import read_listeners

app = options.app("Show the tubes, the server and the listeners.")
Opt = typer.Option
COLUMNS = ("ready", "reserved", "delayed", "buried", "held")
BLOCKED_SHOWN = 20
UP_HELP = "1 if beanstalkd answered, else 0."


@dataclass
class Figures:
    """One tube's jobs by state, its pause, and the jobs that wait on a failure."""

    tube: str
    counts: dict[str, int]
    pause: int = 0
    until_resumed: bool = False
    blocked: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Returns the number of jobs in the tube."""
        return sum(self.counts.values())

    def as_json(self) -> dict:
        """Returns the figures under the original glow's keys, plus glow's own."""
        data = {f"jobs-{state}": self.counts[state] for state in COLUMNS}
        data["pause"] = self.pause
        data["pause-until-resumed"] = self.until_resumed
        data["blocked"] = self.blocked
        return data


@app.command()
def stats(
    tubes: Annotated[
        list[str] | None, typer.Argument(metavar="TUBE", help="Only these tubes.")
    ] = None,
    watch: Annotated[
        float | None,
        Opt("--watch", "-w", min=0.1, metavar="SECONDS", help="Refresh until Ctrl-C."),
    ] = None,
    listeners: Annotated[
        bool, Opt("--listeners", "-l", help="Show the listeners and their jobs.")
    ] = False,
    prometheus: Annotated[
        bool, Opt("--prometheus", help="Print Prometheus text format.")
    ] = False,
    queue: options.Queue = None,
    json_out: options.Json = False,
    hosts: fleet_options.Hosts = None,
    inventory: fleet_options.Inventory = None,
    group: fleet_options.Group = fleet_options.DEFAULT_GROUP,
    ssh_config: fleet_options.SshConfig = None,
) -> None:
    """Show each tube's jobs by state (held and blocked work too) and the server.

    glow-stats      glow-stats --watch 2 nightly      glow-stats --listeners
    glow-stats --inventory inventory.ini   (listener services per host, over SSH)
    """
    if fleet_options.is_fleet(hosts, inventory):
        fleet_options.status(hosts, inventory, group, json_out, ssh_config)
    names = [listing.user_tube(tube) for tube in tubes or []]
    render = _renderer(names, listeners, prometheus, json_out)
    if watch:
        watch_loop(queue, render, watch)
        return
    try:
        with connect(queue) as conn:
            text = render(conn)
    except QueueUnreachable:
        if prometheus:
            # node_exporter then reports the server as down, not stale figures.
            print("\n".join(_metric("glow_up", UP_HELP, [("", 0)])), flush=True)
        raise
    if text:
        print(text, flush=True)


def _renderer(
    names: list[str], listeners: bool, prometheus: bool, json_out: bool
) -> Callable[[Connection], str]:
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if prometheus:
        return lambda conn: prometheus_text(conn, names)
    if listeners:
        return lambda conn: listeners_text(read_listeners(conn), json_out, colour)
    if json_out:
        return lambda conn: tubes_json(gather(conn, names))
    return lambda conn: (
        server_line(conn) + "\n" + tubes_text(gather(conn, names), colour)
    )


def watch_loop(queue: str | None, render: Callable[[Connection], str], every: float):
    """Prints `render` every `every` seconds, in place on a terminal, until Ctrl-C.

    A server that goes away is shown as such and reconnected to.
    """
    in_place = sys.stdout.isatty()
    conn = None
    try:
        while True:
            clear = "\x1b[H\x1b[2J" if in_place else ""
            try:
                conn = conn or connect(queue)
                print(clear + render(conn), flush=True)
            except QueueUnreachable as exc:
                conn = None
                print(clear, end="", flush=True)
                print(f"glow-stats: {exc}; trying again", file=sys.stderr, flush=True)
            time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        if conn is not None:
            conn.close()


def gather(conn: Connection, names: list[str]) -> list[Figures]:
    """Returns the figures of the tubes named, else of every user tube."""
    all_tubes = conn.tubes()
    pauses = paused.paused_in(all_tubes)
    if not names:
        names = sorted({t for t in all_tubes if not is_internal_tube(t)} | pauses)
    held = hold.held_counts(conn)
    figures = [
        _figures(conn, t, t in pauses, t in all_tubes, held.get(t, 0)) for t in names
    ]
    _add_buried_reasons(conn, [f for f in figures if f.counts["buried"]])
    _add_held_reasons(conn, [f for f in figures if f.counts["held"]])
    return figures


def _figures(
    conn: Connection, tube: str, until_resumed: bool, exists: bool, held: int
) -> Figures:
    if until_resumed and not exists:
        return Figures(tube, dict.fromkeys(COLUMNS, 0), paused.FOREVER, True)
    stats = listing.tube_stats(conn, tube)
    counts = {state: stats[f"current-jobs-{state}"] for state in COLUMNS[:4]}
    counts["delayed"] = max(counts["delayed"] - held, 0)
    counts["held"] = held
    pause = stats["pause-time-left"] or (paused.FOREVER if until_resumed else 0)
    return Figures(tube, counts, pause, until_resumed)


def _add_buried_reasons(conn: Connection, figures: list[Figures]) -> None:
    if not figures:
        return
    by_tube = {f.tube: f for f in figures}
    for job_id, report in listing.failure_reports(conn.address).items():
        figure = by_tube.get(report.get("tube"))
        if figure is None:
            continue
        stats = _stats_or_none(conn, job_id)
        if stats and stats["state"] == "buried" and stats["tube"] == figure.tube:
            reason = f"{report.get('error', 'failed')} on {report.get('host', '?')}"
            figure.blocked.append({"id": job_id, "state": "buried", "reason": reason})


def _add_held_reasons(conn: Connection, figures: list[Figures]) -> None:
    if not figures:
        return
    by_tube = {f.tube: f for f in figures}
    for group in hold.held_groups(conn):
        figure = by_tube.get(group.tube)
        if figure is not None and group.state == "blocked":
            for job_id in group.ids:
                item = {"id": job_id, "state": "held", "reason": group.reason}
                figure.blocked.append(item)


def _stats_or_none(conn: Connection, job_id: int) -> dict | None:
    try:
        return listing.job_stats(conn, job_id)
    except NotFound:
        return None


def server_line(conn: Connection) -> str:
    """Returns `beanstalkd VERSION at ADDRESS, up TIME, N connections`."""
    info = conn.stats()
    return (
        f"beanstalkd {info['version']} at {conn.address}, up "
        f"{duration(info['uptime'])}, {info['current-connections']} connections"
    )


def tubes_text(figures: list[Figures], colour: bool) -> str:
    """Returns the table of tubes, then the blocked jobs."""
    width = max([len("TUBE"), *(len(f.tube) for f in figures)])
    head = f"{'TUBE':<{width}}" + "".join(f"{c.upper():>10}" for c in COLUMNS)
    lines = [_paint(head + f"{'TOTAL':>8}  PAUSED", "1", colour)]
    for f in figures:
        cells = "".join(_cell(f.counts[c], c, colour) for c in COLUMNS)
        pause = _paint(_pause_text(f), "33" if f.pause else None, colour)
        lines.append(f"{f.tube:<{width}}{cells}{f.total:>8}  {pause}")
    if not figures:
        lines.append("(no tubes with jobs)")
    return "\n".join(lines + _blocked_lines(figures))


def _cell(count: int, state: str, colour: bool) -> str:
    code = {"buried": "31", "held": "33"}.get(state) if count else None
    text = f"{count:>10}"
    return _paint(text, code, colour) if code else text


def _pause_text(f: Figures) -> str:
    if f.until_resumed:
        return "until resumed"
    return f"{duration(f.pause)} left" if f.pause else "-"


def _blocked_lines(figures: list[Figures]) -> list[str]:
    blocked = [(f.tube, b) for f in figures for b in f.blocked]
    if not blocked:
        return []
    lines = ["", "blocked:"]
    for tube, item in blocked[:BLOCKED_SHOWN]:
        lines.append(
            f"  job {item['id']} (tube {tube}) {item['state']}: {item['reason']}"
        )
    if len(blocked) > BLOCKED_SHOWN:
        lines.append(f"  ... and {len(blocked) - BLOCKED_SHOWN} more (--json)")
    return lines


def tubes_json(figures: list[Figures]) -> str:
    """Returns one JSON object keyed by tube."""
    return json.dumps({f.tube: f.as_json() for f in figures})


def listeners_text(found: list[dict], json_out: bool, colour: bool) -> str:
    """Returns the listeners connected now and the jobs they run."""
    now = time.time()
    for status in found:
        for run in status.get("running", []):
            run["seconds"] = round(max(now - run.get("started", now), 0), 1)
    if json_out:
        return "\n".join(json.dumps(status) for status in found)
    if not found:
        return "(no listeners connected)"
    head = f"{'HOST':<20}{'PID':>8}{'CONCURRENCY':>13}{'RUNNING':>9}  TUBES"
    lines = [_paint(head, "1", colour)]
    for status in found:
        running = status.get("running", [])
        tubes = ", ".join(status.get("tubes", [])) or "-"
        if status.get("stopping"):
            tubes += " (stopping)"
        lines.append(
            f"{status.get('host', '?'):<20}{status.get('pid', '?'):>8}"
            f"{status.get('concurrency', '?'):>13}{len(running):>9}  {tubes}"
        )
        for run in running:
            lines.append(
                f"    job {run['id']} (tube {run['tube']}) for "
                f"{duration(run['seconds'])}: {run['cmd']}"
            )
    return "\n".join(lines)


def prometheus_text(conn: Connection, names: list[str]) -> str:
    """Returns the figures in the Prometheus text format (for node_exporter)."""
    info = conn.stats()
    out = [
        *_metric("glow_up", UP_HELP, [("", 1)]),
        *_metric("glow_server_uptime_seconds", "beanstalkd's uptime.",
                 [("", info["uptime"])]),
        *_metric("glow_server_connections", "Connections open now.",
                 [("", info["current-connections"])]),
    ]  # fmt: skip
    figures = gather(conn, names)
    jobs = [
        (f'tube="{f.tube}",state="{state}"', f.counts[state])
        for f in figures
        for state in COLUMNS
    ]
    out += _metric("glow_tube_jobs", "Jobs of a tube by state.", jobs)
    pauses = [(f'tube="{f.tube}"', f.pause) for f in figures]
    out += _metric("glow_tube_pause_seconds", "Seconds a pause has left.", pauses)
    blocked = [(f'tube="{f.tube}"', len(f.blocked)) for f in figures]
    out += _metric(
        "glow_tube_blocked_jobs", "Buried jobs and held jobs whose upstream failed.",
        blocked,
    )  # fmt: skip
    found = read_listeners(conn)
    out += _metric("glow_listeners", "Listeners connected now.", [("", len(found))])
    running = [
        (f'host="{s.get("host")}",pid="{s.get("pid")}"', len(s.get("running", [])))
        for s in found
    ]
    out += _metric("glow_listener_running_jobs", "Jobs a listener runs.", running)
    return "\n".join(out)


def _metric(name: str, help_text: str, samples: list[tuple[str, int]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
    return lines


def duration(seconds: float) -> str:
    """Returns a duration in at most two units: `45 s`, `3 min 2 s`, `2 d 1 h`."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    for size, unit, small, small_unit in (
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "min"),
        (60, "min", 1, "s"),
    ):
        if seconds >= size:
            rest = (seconds % size) // small
            return f"{seconds // size} {unit}" + (
                f" {rest} {small_unit}" if rest else ""
            )
    return f"{seconds} s"


def _paint(text: str, code: str | None, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def main() -> None:
    """Runs glow-stats."""
    cli.run(app, "glow-stats")
