"""Each group of figures of issue 7, measured beside its floor on the same server."""

import json
import os
import random
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import greenstalk

from .procs import (
    BIN,
    Server,
    children,
    cpu_seconds,
    cpu_timed_run,
    deleted,
    floor,
    median,
    peak_rss_mb,
    percentile,
    pss_mb,
    put_pipelined,
    spread,
    start,
    stop,
    tool,
    wait_deleted,
    wait_until,
)
from .report import Figure

PUT_JOBS = 10_000
DISPATCH_JOBS = 1_000
EXTRA_TUBES = 100
LATENCY_JOBS = 60
HELD_JOBS = 10_000
HELD_INDEX = "GLOW_HELD.bench-down"
NEW_TUBES = 6
HEAVY_MODULES = ("pydantic", "rich", "fabric", "paramiko", "invoke", "pygments")
IMPORT_FLOOR = "import typer, greenstalk"


def put_figures(server: Server, work: Path, repeat: int) -> list[Figure]:
    """glow-put from a JSON Lines file against a raw pipelined loop and greenstalk."""
    path = work / "jobs.jsonl"
    path.write_text("".join(_job_line(n) for n in range(PUT_JOBS)))
    runs: dict[str, list[float]] = {"glow": [], "raw": [], "greenstalk": []}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, argv in _put_programs(server, str(path)):
            server.restart()
            with open(path, "rb") as stdin:
                wall, used = cpu_timed_run(argv(server.address), stdin)
            runs[name].append(PUT_JOBS / wall)
            cpu[name].append(used)
    glow, raw, plain = (median(runs[n]) for n in ("glow", "raw", "greenstalk"))
    used = ", ".join(f"{name} {median(s):.2f} s" for name, s in cpu.items())
    size = path.stat().st_size // PUT_JOBS
    return [
        Figure(
            f"put: glow-put, {PUT_JOBS:,} jobs of {size:,} B",
            glow,
            "jobs/s",
            raw,
            "raw pipelined",
            ("ratio", ">=", 0.6),
            f"glow-put {spread(runs['glow'])}; raw floor {spread(runs['raw'])}; "
            f"CPU of the whole process: {used}",
        ),
        Figure(
            "put: plain greenstalk loop (for scale)",
            plain,
            "jobs/s",
            raw,
            "raw pipelined",
            note=spread(runs["greenstalk"]),
        ),
    ]


def _job_line(n: int) -> str:
    # About 1.6 KB a job, the size the floor was quoted for: a command
    # with a few arguments and an environment of twenty variables.
    env = {f"BENCH_VAR_{k:02d}": f"{n:08d}" + "x" * 52 for k in range(20)}
    job = {"tube": "bench-put", "cmd": "/usr/bin/env", "args": ["job", str(n)]}
    return json.dumps({**job, "env": env}) + "\n"


def _put_programs(server: Server, path: str):
    return [
        ("glow", lambda addr: tool("glow-put", "--queue", addr)),
        ("raw", lambda addr: floor("put-raw", addr, "bench-put", path)),
        ("greenstalk", lambda addr: floor("put-greenstalk", addr, "bench-put", path)),
    ]


def startup_figures(server: Server, repeat: int) -> list[Figure]:
    """A single glow-put and every tool's --help, in CPU time, and what a put
    imports; wall times, which a busy machine inflates, are in the notes.

    A single put is measured twice: with a plain command line, which glow-put
    reads without typer, and with `--pri`, which typer reads."""
    imports: list[tuple[float, float]] = []
    puts: dict[str, list[tuple[float, float]]] = {"plain": [], "typer": []}
    for _ in range(max(10, 5 * repeat)):
        imports.append(cpu_timed_run([sys.executable, "-c", IMPORT_FLOOR]))
        for kind, argv in _single_puts(server).items():
            puts[kind].append(cpu_timed_run(argv))
    floor_ms = median([cpu for _, cpu in imports]) * 1000
    figures = []
    labels = {"plain": "`glow-put -- true`", "typer": "`glow-put --pri 5 -- true`"}
    for kind, label in labels.items():
        cpu_ms = median([cpu for _, cpu in puts[kind]]) * 1000
        figures.append(
            Figure(
                f"start-up: one {label}, CPU",
                cpu_ms,
                "ms",
                floor_ms,
                IMPORT_FLOOR,
                ("ratio", "<=", 1.2),
                f"wall: put {_wall(puts[kind])}, imports {_wall(imports)}",
            )
        )
    slowest = max(median([cpu for _, cpu in runs]) for runs in puts.values())
    figures.append(
        Figure(
            "start-up: one put, absolute CPU (slower of the two)",
            slowest * 1000,
            "ms",
            goal=("value", "<", 300),
        )
    )
    figures += [_help_figure(name) for name in _tools()]
    figures.append(_heavy_imports(_single_puts(server)))
    return figures


def _single_puts(server: Server) -> dict[str, list[str]]:
    plain = ["--queue", server.address, "--tube", "t", "--", "true"]
    return {
        "plain": tool("glow-put", *plain),
        "typer": tool("glow-put", "--pri", "5", *plain),
    }


def _wall(runs: list[tuple[float, float]]) -> str:
    walls = [wall for wall, _ in runs]
    return f"median {median(walls) * 1000:.0f} ms ({spread(walls, 's')})"


def _tools() -> list[str]:
    scripts = entry_points(group="console_scripts")
    names = {s.name for s in scripts if s.value.startswith("glowtools.")}
    return sorted(name for name in names if (BIN / name).exists())


def _help_figure(name: str) -> Figure:
    runs = [cpu_timed_run(tool(name, "--help")) for _ in range(5)]
    return Figure(
        f"start-up: `{name} --help`, CPU",
        median([cpu for _, cpu in runs]) * 1000,
        "ms",
        goal=("value", "<", 300),
        note=f"wall {_wall(runs)}",
    )


def _heavy_imports(puts: dict[str, list[str]]) -> Figure:
    names = set()
    for argv in puts.values():
        result = subprocess.run(
            [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True
        )
        lines = result.stderr.splitlines()
        names |= {line.rpartition("|")[2].strip() for line in lines}
    heavy = sorted({n.split(".")[0] for n in names} & set(HEAVY_MODULES))
    return Figure(
        "start-up: heavy packages a put imports (either way)",
        len(heavy),
        "",
        goal=("value", "<=", 0),
        note=", ".join(heavy) or f"none of {', '.join(HEAVY_MODULES)}",
    )


# Where beanstalkd and a dispatcher run: on CPUs of their own, where the
# scheduler puts them, on one CPU together; "each": two dispatchers a CPU each.
LAYOUTS = ("apart", "free", "same", "each")
# The dispatch runs: (name, what runs, where).
DISPATCH_RUNS = (
    ("floor", "floor", "apart"),
    ("c1", "c1", "apart"),
    ("tubes", "c1", "apart"),
    ("c1-v", "c1-v", "apart"),
    ("floor-free", "floor", "free"),
    ("c1-free", "c1", "free"),
    ("floor-same", "floor", "same"),
    ("c1-same", "c1", "same"),
    ("c2", "c2", "free"),
    ("floor2", "floor2", "each"),
)


def dispatch_figures(
    server: Server, work: Path, repeat: int
) -> tuple[list[Figure], float]:
    """/bin/true jobs through one listener against a reserve/spawn/delete loop."""
    layouts = _layouts()
    runs: dict[str, list[float]] = {name: [] for name, _, _ in DISPATCH_RUNS}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    peaks: list[float] = []
    together: list[float] = []
    for _ in range(repeat):
        for name, what, where in DISPATCH_RUNS:
            server_cpu, cpus = layouts[where]
            server.restart(server_cpu)
            if name == "tubes":
                _fill_extra_tubes(server)
            rate, used, peak, pss = _dispatch(server, what, work / f"{name}.log", cpus)
            runs[name].append(rate)
            cpu[name].append(used)
            peaks.append(peak)
            if what == "c2":
                together.append(pss)
    rate = {name: median(values) for name, values in runs.items()}
    per_job = ", ".join(f"{n} {median(ms):.2f}" for n, ms in cpu.items())
    floor_name = "reserve/spawn/delete"
    figures = [
        Figure(
            "dispatch: listener, concurrency 1, beanstalkd on the other CPU",
            rate["c1"],
            "jobs/s",
            rate["floor"],
            floor_name,
            ("ratio", ">=", 0.85),
            f"{_where(layouts['apart'])}; listener {spread(runs['c1'])}; "
            f"floor {spread(runs['floor'])}; CPU ms per job, the jobs aside: {per_job}",
        ),
        Figure(
            "dispatch: the same with -v, a line at each job's start too (for scale)",
            rate["c1-v"],
            "jobs/s",
            rate["floor"],
            floor_name,
            note=f"listener {spread(runs['c1-v'])}",
        ),
        Figure(
            "dispatch: the same, CPUs left to the scheduler (for scale)",
            rate["c1-free"],
            "jobs/s",
            rate["floor-free"],
            floor_name,
            note=f"listener {spread(runs['c1-free'])}; "
            f"floor {spread(runs['floor-free'])}",
        ),
        Figure(
            "dispatch: the same, beanstalkd on the listener's CPU (for scale)",
            rate["c1-same"],
            "jobs/s",
            rate["floor-same"],
            floor_name,
            note=f"{_where(layouts['same'])}; listener {spread(runs['c1-same'])}; "
            f"floor {spread(runs['floor-same'])}",
        ),
        Figure(
            f"dispatch: with {EXTRA_TUBES} tubes of delayed jobs",
            rate["tubes"],
            "jobs/s",
            rate["c1"],
            "listener, 1 tube",
            ("ratio", ">=", 0.9),
            f"beanstalkd on the other CPU, as for its floor: {spread(runs['tubes'])}",
        ),
        Figure(
            "dispatch: listener, concurrency 2",
            rate["c2"],
            "jobs/s",
            rate["c1-free"],
            "concurrency 1, CPUs free",
            ("ratio", ">=", 1.6),
            "both cores run workers, so beanstalkd goes where the scheduler puts it, "
            f"as for its floor: {spread(runs['c2'])}",
        ),
        Figure(
            "dispatch: 2 reserve/spawn/delete loops, a CPU each (for scale)",
            rate["floor2"],
            "jobs/s",
            rate["floor-free"],
            "1 loop, CPUs free",
            note="what this machine gives a second dispatcher: "
            + spread(runs["floor2"]),
        ),
        Figure(
            "memory: listener of 2 slots, with its workers",
            max(together),
            "MB PSS",
            goal=("value", "<", 40),
            note="proportional set size of the 3 processes together, each after "
            f"{2 * DISPATCH_JOBS:,} jobs; the most over {repeat} runs",
        ),
    ]
    return figures, max(peaks)


def _layouts() -> dict[str, tuple[int | None, list[int | None]]]:
    """Returns each layout as (beanstalkd's CPU, the dispatchers' CPUs).

    None leaves a process to the scheduler; so does every layout on one CPU.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {where: (None, [None, None]) for where in LAYOUTS}
    return {
        "apart": (cpus[0], [cpus[1]]),
        "free": (None, [None]),
        "same": (cpus[0], [cpus[0]]),
        "each": (None, cpus[:2]),
    }


def _where(layout: tuple[int | None, list[int | None]]) -> str:
    server_cpu, cpus = layout
    if server_cpu is None:
        return "one CPU: nothing kept anywhere"
    return f"beanstalkd on CPU {server_cpu}, the dispatcher and its jobs on {cpus[0]}"


def _fill_extra_tubes(server: Server) -> None:
    body = json.dumps({"cmd": "/bin/true", "tube": "x"}).encode()
    for n in range(EXTRA_TUBES):
        put_pipelined(server.address, f"bench-idle-{n:03d}", [body], delay=3600)


def _dispatch(
    server: Server, what: str, log: Path, cpus: list[int | None]
) -> tuple[float, float, float, float]:
    """Returns jobs/s, CPU ms per job, peak RSS and the PSS of one run.

    `what` is floor, floor2 (two floor loops, on cpus[0] and cpus[1]), c1,
    c1-v (with -v) or c2; the dispatcher keeps to cpus[0]. A listener of two
    slots is counted with its two worker processes, which keep to a CPU each
    themselves.
    """
    tube = "bench-dispatch"
    jobs = DISPATCH_JOBS * (2 if what in ("c2", "floor2") else 1)
    if what == "floor":
        argv = floor("dispatch", server.address, tube, str(DISPATCH_JOBS + 1))
    elif what == "floor2":
        argv = floor("dispatch", server.address, tube, "0")
    else:
        concurrency = "2" if what == "c2" else "1"
        argv = tool("glow-listen", "--queue", server.address, "-c", concurrency)
        argv += ["-v"] if what == "c1-v" else []
    body = json.dumps({"cmd": "/bin/true", "tube": tube}).encode()
    proc = start(argv, log, cpus[0])
    second = start(argv, log, cpus[1]) if what == "floor2" else None
    try:
        # Watching keeps the tube, and its counters, after the floor has exited.
        with server.client(watch=tube) as client:
            put_pipelined(server.address, tube, [body])
            wait_deleted(client, tube, 1, timeout=15)
            pids = [proc.pid, *(children(proc.pid) if what == "c2" else [])]
            pids += [second.pid] if second else []
            began, cpu = time.perf_counter(), sum(map(cpu_seconds, pids))
            put_pipelined(server.address, tube, [body] * jobs)
            wait_deleted(client, tube, jobs + 1)
            rate = jobs / (time.perf_counter() - began)
            # The floor has exited by now, but is not reaped: its counters stay.
            used = sum(map(cpu_seconds, pids)) - cpu
        peak = 0.0 if what.startswith("floor") else peak_rss_mb(proc.pid)
        pss = pss_mb(pids) if what == "c2" else 0.0
    finally:
        stop(proc)
        if second:
            stop(second)
    return rate, used * 1000 / jobs, peak, pss


def latency_figures(server: Server, work: Path) -> tuple[list[Figure], float]:
    """Put-to-start for an idle listener, on a watched tube and on a new one."""
    server.restart()
    out = work / "latency.out"
    out.write_text("")
    proc = start(tool("glow-listen", "--queue", server.address), work / "lat.log")
    try:
        with server.client() as client:
            tubes = ["bench-latency"] * (LATENCY_JOBS + 1)
            watched = _latencies(client, out, tubes, (0.05, 0.15))
            tubes = [f"bench-new-{n}" for n in range(NEW_TUBES)]
            fresh = _latencies(client, out, tubes, (0.0, 1.0))
        peak = peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    spawn = _spawn_floor()
    watched = [ms - spawn for ms in watched[1:]]
    fresh = [ms - spawn for ms in fresh]
    method = f"command's own start-up ({spawn:.2f} ms) subtracted"
    return [
        Figure(
            f"latency: put-to-start p50, {LATENCY_JOBS} jobs",
            percentile(watched, 0.5),
            "ms",
            goal=("value", "<", 5),
            note=f"{method}; min {min(watched):.2f}, max {max(watched):.2f} ms",
        ),
        Figure(
            "latency: put-to-start p95",
            percentile(watched, 0.95),
            "ms",
            goal=("value", "<", 20),
        ),
        Figure(
            f"latency: a new tube picked up, max of {NEW_TUBES}",
            max(fresh),
            "ms",
            goal=("value", "<=", 1000),
            note="put at a random moment; " + ", ".join(f"{ms:.0f}" for ms in fresh),
        ),
    ], peak


def _latencies(client, out: Path, tubes: list[str], pause) -> list[float]:
    """Puts one date job per tube, each after the last ended and a random pause
    in seconds; returns each job's put-to-start in ms."""
    sent = []
    for tube in tubes:
        job = {"cmd": "/bin/date", "args": ["+%s%N"], "tube": tube, "out": str(out)}
        client.use(tube)
        before = deleted(client, tube)
        time.sleep(random.uniform(*pause))
        sent.append(time.time_ns())
        client.put(json.dumps(job).encode())
        wait_deleted(client, tube, before + 1, timeout=15)
    stamps = [int(word) for word in out.read_text().split()][-len(tubes) :]
    return [(stamp - put) / 1e6 for stamp, put in zip(stamps, sent, strict=True)]


def _spawn_floor() -> float:
    """Returns the median ms from spawning `date +%s%N` to its reading the clock."""
    times = []
    for _ in range(30):
        before = time.time_ns()
        out = subprocess.run(["/bin/date", "+%s%N"], capture_output=True).stdout
        times.append((int(out) - before) / 1e6)
    return median(times)


def memory_figures(listener_peak: float) -> list[Figure]:
    return [
        Figure(
            "memory: listener peak RSS",
            listener_peak,
            "MB",
            goal=("value", "<", 40),
            note="highest VmHWM over every listener the bench ran",
        )
    ]


def dependency_figures(server: Server, work: Path) -> list[Figure]:
    """Held jobs released by glow-dep after the last upstream job is deleted."""
    name = f"dependencies: {HELD_JOBS:,} held jobs released"
    if not (BIN / "glow-dep").exists():
        return [
            Figure(name, None, "s", goal=("value", "<=", 5), note="no glow-dep"),
            Figure("memory: glow-dep peak RSS", None, "MB"),
        ]
    server.restart()
    path = work / "held.jsonl"
    job = {"tube": "bench-down", "cmd": "/bin/true", "after": ["bench-up"]}
    path.write_text((json.dumps(job) + "\n") * HELD_JOBS)
    dep = start(tool("glow-dep", "--queue", server.address), work / "dep.log")
    try:
        with server.client(use="bench-up", watch="bench-up") as client:
            client.put(json.dumps({"cmd": "/bin/true", "tube": "bench-up"}).encode())
            with open(path, "rb") as stdin:
                cpu_timed_run(tool("glow-put", "--queue", server.address), stdin)
            seconds = _release_time(client)
        peak = peak_rss_mb(dep.pid)
    finally:
        stop(dep)
    return [
        Figure(
            name,
            seconds,
            "s",
            goal=("value", "<=", 5),
            note="from the bench's delete of the upstream job to all held jobs ready",
        ),
        Figure("memory: glow-dep peak RSS", peak, "MB", note=f"{HELD_JOBS:,} held"),
    ]


def _release_time(client) -> float:
    """Waits until glow-dep adopts every record, deletes the upstream job, and
    returns the seconds until every held job is ready."""
    wait_until(
        lambda: _count(client, HELD_INDEX, "current-jobs-buried") >= HELD_JOBS,
        120,
        "glow-dep to adopt (bury) every index record",
        step=0.05,
    )
    upstream = client.reserve(timeout=5)
    began = time.perf_counter()
    client.delete(upstream)
    wait_until(
        lambda: _count(client, "bench-down", "current-jobs-ready") >= HELD_JOBS,
        120,
        "the held jobs to be released",
    )
    return time.perf_counter() - began


def _count(client, tube: str, counter: str) -> int:
    try:
        return int(client.stats_tube(tube)[counter])
    except greenstalk.NotFoundError:
        return 0
