"""Command-line glue for the fleet options of glow-drain and glow-stats.

Typer-free: glow-drain and glow-stats declare --hosts, --inventory, --group,
--deadline, --restart, --no-wait and --ssh-config, then hand them to drain_main or
status_main, which print results on stdout and return the exit status:

  0  every host drained, restarted, timed out (its jobs released) or still running
     with --no-wait; for status, every host answered
  3  a host could not be reached
  7  no hosts, or an unusable inventory
  8  a host failed (a remote command went wrong) or was skipped in a rolling restart
"""

import json
import os
import sys
from typing import TextIO

from . import fleet

SSH_CONFIG_ENV = "GLOW_SSH_CONFIG"
OK_STATES = {fleet.DRAINED, fleet.RESTARTED, fleet.TIMED_OUT, fleet.RUNNING}


def drain_main(
    hosts: str | None = None,
    inventory: str | None = None,
    group: str | None = None,
    deadline: float | None = None,
    restart: bool = False,
    wait: bool = True,
    as_json: bool = False,
    ssh_config: str | None = None,
    prog: str = "glow-drain",
    out: TextIO | None = None,
) -> int:
    """Drains the listeners on each host, printing a line per host; returns the status.

    glow-drain --hosts h1,h2 --deadline 600 [--restart]
    """
    out = out or sys.stdout
    ssh_config = ssh_config or os.environ.get(SSH_CONFIG_ENV)
    results = []
    try:
        targets = fleet.resolve_hosts(hosts, inventory, group)
        for result in fleet.drain(targets, deadline, restart, wait, ssh_config):
            results.append(result)
            text = json.dumps(result.as_dict()) if as_json else _drain_line(result)
            print(text, file=out, flush=True)
    except fleet.FleetError as exc:
        return _fail(prog, exc)
    return _drain_status(results)


def status_main(
    hosts: str | None = None,
    inventory: str | None = None,
    group: str | None = None,
    as_json: bool = False,
    ssh_config: str | None = None,
    prog: str = "glow-stats",
    out: TextIO | None = None,
) -> int:
    """Prints the listener units of each host, their state and what they run.

    glow-stats --inventory ansible/inventory.ini --group glow_listeners
    """
    out = out or sys.stdout
    ssh_config = ssh_config or os.environ.get(SSH_CONFIG_ENV)
    try:
        targets = fleet.resolve_hosts(hosts, inventory, group)
        reports = fleet.status(targets, ssh_config)
    except fleet.FleetError as exc:
        return _fail(prog, exc)
    for report in reports:
        lines = [json.dumps(report)] if as_json else _status_lines(report)
        print("\n".join(lines), file=out, flush=True)
    return _status_status(reports)


def _fail(prog: str, exc: fleet.FleetError) -> int:
    print(f"{prog}: {exc}", file=sys.stderr, flush=True)
    return exc.exit_status


def _drain_line(result: fleet.HostResult) -> str:
    jobs = f"{result.jobs} job{'s' if result.jobs != 1 else ''}"
    detail = {
        fleet.DRAINED: f"in {result.seconds:.1f} s",
        fleet.RESTARTED: f"in {result.seconds:.1f} s"
        + (f" ({jobs} killed and released)" if result.jobs else ""),
        fleet.RUNNING: f"{jobs} still running",
        fleet.TIMED_OUT: f"{jobs} killed and released after {result.seconds:.1f} s",
    }.get(result.state, result.detail)
    return f"{result.host} {result.state} {detail}".rstrip()


def _drain_status(results: list[fleet.HostResult]) -> int:
    states = {result.state for result in results}
    if fleet.UNREACHABLE in states:
        return 3
    return 0 if states <= OK_STATES else 8


def _status_lines(report: dict) -> list[str]:
    host = report["host"]
    if report["state"] != "up":
        return [f"{host} - {report['state']} {report['detail']}".rstrip()]
    if not report["units"]:
        return [f"{host} - no-listeners"]
    return [f"{host} {_unit_summary(unit)}" for unit in report["units"]]


def _unit_summary(unit: dict) -> str:
    # The listener's options say what it runs; the interpreter and path do not.
    _, _, options = unit["command"].partition("glow-listen")
    state = f"{unit['state']}/{unit['sub_state']}"
    return f"{unit['unit']} {state} jobs={len(unit['jobs'])} {options.strip()}".rstrip()


def _status_status(reports: list[dict]) -> int:
    states = {report["state"] for report in reports}
    if fleet.UNREACHABLE in states:
        return 3
    return 0 if states <= {"up"} else 8
