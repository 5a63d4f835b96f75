"""Drains, restarts and inspects the listeners of a fleet over SSH.

Listeners run as instances of the systemd template unit glow-listen@.service that the
Ansible role installs. fabric (the optional extra glowtools[fleet]) is imported here
only, when a connection is first made, so glow-put and glow-listen never load it.
"""

import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import GlowError

log = logging.getLogger(__name__)
# Whole command lines (-ww): a listener's workers are told apart by theirs.
PROCESS_TABLE = "ps -ww -eo pid=,ppid=,args="

# Loaded listener units, and enabled ones: systemd unloads a stopped instance.
SHOW_UNITS = (
    "[ -d /run/systemd/system ] || { echo 'systemd is not running' >&2; exit 1; }; "
    "{ systemctl show -p Id --value 'glow-listen@*.service'; "
    "ls /etc/systemd/system/*.wants/ 2>/dev/null "
    "| grep '^glow-listen@.*[.]service$'; } "
    "| sort -u | grep . "
    "| xargs -r systemctl show -p Id -p ActiveState -p SubState -p MainPID"
)
# How long listeners get to release their jobs after SIGTERM past the deadline.
RELEASE_GRACE = 30.0
POLL_INTERVAL = 1.0
# Without waiting, idle listeners still get this long to exit before the report.
NO_WAIT_GRACE = 3.0
CONNECT_TIMEOUT = 10

# The states a host ends a drain in.
DRAINED = "drained"
RUNNING = "running"
TIMED_OUT = "timed-out"
UNREACHABLE = "unreachable"
RESTARTED = "restarted"
SKIPPED = "skipped"
FAILED = "failed"


class FleetError(GlowError):
    """The fleet cannot be described: no hosts, or an unusable inventory."""

    exit_status = 7


class InventoryInvalid(FleetError):
    """An inventory file cannot be read or has no such group."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"inventory {path}: {problem}")


@dataclass(frozen=True)
class Host:
    """One host of the fleet: its inventory name and how to reach it."""

    name: str
    address: str = ""
    user: str | None = None
    port: int | None = None


@dataclass
class Unit:
    """One listener unit on a host, as systemd reports it."""

    unit: str
    state: str
    sub_state: str
    pid: int
    command: str = ""
    jobs: list[str] = field(default_factory=list)


@dataclass
class HostResult:
    """What a drain did to one host."""

    host: str
    state: str
    units: list[str] = field(default_factory=list)
    jobs: int = 0
    seconds: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict:
        """Returns the result as a plain dict for JSON."""
        return asdict(self)


def resolve_hosts(
    hosts: str | Iterable[str] | None = None,
    inventory: str | None = None,
    group: str | None = None,
) -> list[Host]:
    """Returns the hosts named by --hosts (a,b) or by a group of an Ansible inventory.

    Raises FleetError when neither names any host, InventoryInvalid for a bad file.
    """
    if isinstance(hosts, str):
        hosts = [part.strip() for part in hosts.split(",")]
    found = [Host(name) for name in hosts or [] if name]
    if inventory:
        found += inventory_hosts(inventory, group or "all")
    if not found:
        raise FleetError(
            "no hosts: give --hosts h1,h2 or --inventory FILE --group NAME"
        )
    return list(dict.fromkeys(found))


def inventory_hosts(path: str, group: str) -> list[Host]:
    """Returns the hosts of a group (children included) in an Ansible inventory.

    INI files are read directly; YAML ones through ansible-inventory when installed.
    """
    if not Path(path).is_file():
        raise InventoryInvalid(path, "no such file")
    if Path(path).suffix in (".yml", ".yaml", ".json"):
        groups, hostvars = _ansible_inventory(path)
    else:
        groups, hostvars = _read_ini(path)
    if group not in groups:
        known = ", ".join(sorted(groups)) or "none"
        raise InventoryInvalid(path, f"no group {group!r} (groups: {known})")
    return [
        _host_from_vars(name, hostvars.get(name, {}))
        for name in _members(groups, group)
    ]


def _members(groups: dict, group: str, seen: frozenset = frozenset()) -> list[str]:
    if group in seen:
        return []
    entry = groups.get(group, {})
    names = list(entry.get("hosts", []))
    for child in entry.get("children", []):
        names += _members(groups, child, seen | {group})
    return list(dict.fromkeys(names))


def _host_from_vars(name: str, hostvars: dict) -> Host:
    port = hostvars.get("ansible_port") or hostvars.get("ansible_ssh_port")
    return Host(
        name=name,
        address=str(
            hostvars.get("ansible_host") or hostvars.get("ansible_ssh_host") or ""
        ),
        user=hostvars.get("ansible_user") or hostvars.get("ansible_ssh_user"),
        port=int(port) if port else None,
    )


def _read_ini(path: str) -> tuple[dict, dict]:
    groups: dict[str, dict] = {"all": {"hosts": [], "children": [], "vars": {}}}
    hostvars: dict[str, dict] = {}
    section = "ungrouped"
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            groups.setdefault(section.partition(":")[0], _new_group())
            continue
        _add_ini_line(groups, hostvars, section, line, path)
    _adopt_orphans(groups)
    return groups, _merge_vars(groups, hostvars)


def _new_group() -> dict:
    return {"hosts": [], "children": [], "vars": {}}


def _add_ini_line(groups: dict, hostvars: dict, section: str, line: str, path: str):
    group, _, kind = section.partition(":")
    entry = groups.setdefault(group, _new_group())
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise InventoryInvalid(path, f"line {line!r}: {exc}") from None
    if kind == "children":
        entry["children"].append(words[0])
        groups.setdefault(words[0], _new_group())
    elif kind == "vars":
        key, _, value = line.partition("=")
        entry["vars"][key.strip()] = value.strip().strip("'\"")
    else:
        for name in _expand_range(words[0]):
            entry["hosts"].append(name)
            hostvars.setdefault(name, {}).update(_pairs(words[1:]))


def _pairs(words: list[str]) -> dict:
    return dict(word.partition("=")[::2] for word in words if "=" in word)


def _expand_range(pattern: str) -> list[str]:
    """Expands one numeric range such as web[01:03] the way Ansible does."""
    head, sep, rest = pattern.partition("[")
    if not sep or ":" not in rest or "]" not in rest:
        return [pattern]
    span, _, tail = rest.partition("]")
    first, _, last = span.partition(":")
    if not (first.isdigit() and last.isdigit()):
        return [pattern]
    width = len(first) if first.startswith("0") else 0
    return [f"{head}{n:0{width}d}{tail}" for n in range(int(first), int(last) + 1)]


def _adopt_orphans(groups: dict) -> None:
    children = {child for entry in groups.values() for child in entry["children"]}
    for name in groups:
        if name != "all" and name not in children:
            groups["all"]["children"].append(name)


def _merge_vars(groups: dict, hostvars: dict) -> dict:
    """Applies group vars to hosts: all first, then the other groups, then host vars."""
    merged: dict[str, dict] = {}
    order = ["all"] + [name for name in groups if name != "all"]
    for name in set(_members(groups, "all")):
        merged[name] = {}
        for group in order:
            if name in _members(groups, group):
                merged[name].update(groups[group]["vars"])
        merged[name].update(hostvars.get(name, {}))
    return merged


def _ansible_inventory(path: str) -> tuple[dict, dict]:
    # A venv's ansible-inventory sits beside its python, on PATH or not.
    beside = Path(sys.executable).with_name("ansible-inventory")
    tool = shutil.which("ansible-inventory") or (beside.exists() and str(beside))
    if not tool:
        raise InventoryInvalid(
            path, "reading YAML needs ansible-inventory (ansible-core)"
        )
    done = subprocess.run(
        [tool, "-i", path, "--list"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["ansible-inventory failed"]
        raise InventoryInvalid(path, lines[-1])
    data = json.loads(done.stdout)
    hostvars = data.pop("_meta", {}).get("hostvars", {})
    return data, hostvars


class RemoteFailed(FleetError):
    """A command on a host exited non-zero."""

    exit_status = 8

    def __init__(self, host: str, command: str, problem: str) -> None:
        self.host = host
        self.command = command
        self.problem = problem
        super().__init__(f"{host}: {command!r} failed: {problem}")


def require_fabric() -> None:
    """Raises FleetError unless fabric (glowtools[fleet]) can be imported."""
    try:
        import fabric  # noqa: F401 (only checked for)
    except ImportError:
        raise FleetError(
            "fabric is not installed (pip install 'glowtools[fleet]')"
        ) from None


def connect(host: Host, ssh_config: str | None = None):
    """Returns a fabric Connection to a host; user, port and key follow SSH config.

    ssh_config replaces ~/.ssh/config, like ssh -F. Does not connect yet.
    """
    from fabric import Config, Connection

    config = Config(runtime_ssh_path=ssh_config) if ssh_config else Config()
    return Connection(
        host.address or host.name,
        user=host.user,
        port=host.port,
        config=config,
        connect_timeout=CONNECT_TIMEOUT,
    )


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    from paramiko.ssh_exception import SSHException

    return (OSError, EOFError, SSHException)


def _run(conn, host: Host, command: str) -> str:
    """Runs a command as root on a host (through sudo -n for other users)."""
    if conn.user != "root":
        command = f"sudo -n {command}"
    result = conn.run(command, hide=True, warn=True, in_stream=False)
    if result.exited != 0:
        problem = (result.stderr.strip() or f"exit status {result.exited}").splitlines()
        raise RemoteFailed(host.name, command, problem[-1])
    return result.stdout


def inspect(conn, host: Host) -> list[Unit]:
    """Returns the listener units on a host with their command and running jobs."""
    shown = _run(conn, host, f"sh -c {shlex.quote(SHOW_UNITS)}")
    units = [_unit_from(block) for block in shown.split("\n\n") if "Id=" in block]
    if any(unit.pid for unit in units):
        _add_processes(units, _run(conn, host, PROCESS_TABLE))
    return sorted(units, key=lambda unit: unit.unit)


def _unit_from(block: str) -> Unit:
    props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
    return Unit(
        unit=props.get("Id", ""),
        state=props.get("ActiveState", ""),
        sub_state=props.get("SubState", ""),
        pid=int(props.get("MainPID") or 0),
    )


def _add_processes(units: list[Unit], table: str) -> None:
    by_pid = {unit.pid: unit for unit in units if unit.pid}
    rows = []
    for line in table.splitlines():
        pid, ppid, args = (line.split(None, 2) + ["", ""])[:3]
        rows.append((int(pid), int(ppid), args))
        if int(pid) in by_pid:
            by_pid[int(pid)].command = args
    # A listener of more than one slot forks a worker per slot, with its own
    # command line; the jobs are the workers' children.
    workers = {
        pid: by_pid[ppid]
        for pid, ppid, args in rows
        if ppid in by_pid and args == by_pid[ppid].command
    }
    for pid, ppid, args in rows:
        unit = by_pid.get(ppid) or workers.get(ppid)
        if unit and pid not in workers:
            unit.jobs.append(args)


def _is_stopped(unit: Unit) -> bool:
    return unit.state in ("inactive", "failed")


def _jobs(units: list[Unit]) -> int:
    return sum(len(unit.jobs) for unit in units)


def drain_host(
    host: Host,
    deadline: float | None = None,
    restart: bool = False,
    wait: bool = True,
    ssh_config: str | None = None,
) -> HostResult:
    """Drains the listeners on one host; blocks until done, past deadline seconds.

    Listeners stop reserving and exit once their running jobs finish; past the
    deadline they get SIGTERM, which kills the jobs left and releases them.
    """
    started = time.monotonic()
    result = HostResult(host.name, FAILED)
    try:
        with connect(host, ssh_config) as conn:
            _drain(conn, host, result, deadline, restart, wait)
    except _unreachable_errors() as exc:
        result.state, result.detail = UNREACHABLE, str(exc) or type(exc).__name__
    except RemoteFailed as exc:
        result.state, result.detail = FAILED, exc.problem
    result.seconds = round(time.monotonic() - started, 1)
    log.info("host %s: %s after %.1f s", host.name, result.state, result.seconds)
    return result


def _drain(conn, host: Host, result: HostResult, deadline, restart, wait) -> None:
    units = inspect(conn, host)
    result.units = [unit.unit for unit in units]
    if not units:
        result.state, result.detail = DRAINED, "no listener units"
        return
    names = " ".join(shlex.quote(name) for name in result.units)
    _run(conn, host, f"systemctl stop --no-block {names}")
    units = _wait_stopped(conn, host, deadline if wait else NO_WAIT_GRACE)
    if all(map(_is_stopped, units)):
        result.state = DRAINED
    elif not wait:
        result.state, result.jobs = RUNNING, _jobs(units)
    else:
        result.state, result.jobs = TIMED_OUT, _jobs(units)
        _release(conn, host, names)
    if restart:
        _run(conn, host, f"systemctl start {names}")
        result.state = RESTARTED


def _wait_stopped(conn, host: Host, seconds: float | None) -> list[Unit]:
    """Polls until every unit is stopped or the seconds (None: forever) run out."""
    until = None if seconds is None else time.monotonic() + seconds
    while True:
        units = inspect(conn, host)
        if all(map(_is_stopped, units)):
            return units
        if until is not None and time.monotonic() >= until:
            return units
        time.sleep(POLL_INTERVAL)


def _release(conn, host: Host, names: str) -> None:
    """Sends SIGTERM so listeners kill their jobs and release them, then waits."""
    _run(conn, host, f"systemctl kill --kill-who=main --signal=SIGTERM {names}")
    units = _wait_stopped(conn, host, RELEASE_GRACE)
    if not all(map(_is_stopped, units)):
        _run(conn, host, f"systemctl kill --signal=SIGKILL {names}")


def drain(
    hosts: list[Host],
    deadline: float | None = None,
    restart: bool = False,
    wait: bool = True,
    ssh_config: str | None = None,
) -> Iterator[HostResult]:
    """Drains hosts and yields one result per host as each finishes.

    Without restart the hosts drain in parallel; with restart they go one after
    another (a rolling restart), and a host that does not come back stops the roll:
    the hosts after it are reported skipped. Raises FleetError without fabric.
    """
    require_fabric()
    if restart:
        yield from _roll(hosts, deadline, ssh_config)
        return
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = [
            pool.submit(drain_host, host, deadline, False, wait, ssh_config)
            for host in hosts
        ]
        for future in as_completed(futures):
            yield future.result()


def _roll(hosts: list[Host], deadline, ssh_config) -> Iterator[HostResult]:
    for index, host in enumerate(hosts):
        result = drain_host(host, deadline, True, True, ssh_config)
        yield result
        if result.state != RESTARTED:
            for later in hosts[index + 1 :]:
                yield HostResult(later.name, SKIPPED, detail=f"{host.name} failed")
            return


def status_host(host: Host, ssh_config: str | None = None) -> dict:
    """Returns one host's listener units, their state, command and running jobs."""
    report = {"host": host.name, "state": "up", "detail": "", "units": []}
    try:
        with connect(host, ssh_config) as conn:
            report["units"] = [asdict(unit) for unit in inspect(conn, host)]
    except _unreachable_errors() as exc:
        report.update(state=UNREACHABLE, detail=str(exc) or type(exc).__name__)
    except RemoteFailed as exc:
        report.update(state=FAILED, detail=exc.problem)
    return report


def status(hosts: list[Host], ssh_config: str | None = None) -> list[dict]:
    """Returns status_host for every host, in the order given; runs in parallel.

    Raises FleetError without fabric.
    """
    require_fabric()
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        return list(pool.map(lambda host: status_host(host, ssh_config), hosts))
