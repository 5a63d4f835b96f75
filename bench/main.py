"""Runs every group of figures on a private beanstalkd and prints the table."""

import argparse
import compileall
import platform
import sys
import tempfile
import time
from pathlib import Path

from . import figures
from .procs import Server, environment_note
from .report import Figure, as_json, notes, table

GLOWTOOLS = Path(__file__).resolve().parent.parent / "glowtools"
GROUPS = ("startup", "put", "dispatch", "latency", "dependencies")


def main(argv: list[str]) -> int:
    """Runs the benchmark; returns 0 when every measured target is met."""
    args = _parse(argv)
    context = {"machine": environment_note(), "python": platform.python_version()}
    began = time.monotonic()
    # Installed tools run from compiled modules; a tree being edited, or one
    # run with PYTHONDONTWRITEBYTECODE, would charge each start a compile.
    compileall.compile_dir(GLOWTOOLS, quiet=1)
    server = Server().start()
    try:
        with tempfile.TemporaryDirectory(prefix="glowbench-") as work:
            results = _measure(server, Path(work), args)
    finally:
        server.stop()
    context["seconds"] = round(time.monotonic() - began, 1)
    if args.json:
        print(as_json(results, context))
    else:
        print(table(results))
        print(f"\n{context['machine']}; took {context['seconds']} s\n")
        print(notes(results))
    return 0 if all(f.met is not False for f in results) else 1


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"groups, a,b of {GROUPS}"
    )
    return parser.parse_args(argv)


def _measure(server: Server, work: Path, args) -> list[Figure]:
    only = set(args.only.split(","))
    results: list[Figure] = []
    peaks: list[float] = []
    if "startup" in only:
        _say("start-up")
        results += figures.startup_figures(server, args.repeat)
    if "put" in only:
        _say("put")
        results += figures.put_figures(server, work, args.repeat)
    if "dispatch" in only:
        _say("dispatch")
        found, peak = figures.dispatch_figures(server, work, args.repeat)
        results += found
        peaks.append(peak)
    if "latency" in only:
        _say("latency")
        found, peak = figures.latency_figures(server, work)
        results += found
        peaks.append(peak)
    if peaks:
        results += figures.memory_figures(max(peaks))
    if "dependencies" in only:
        _say("dependencies")
        results += figures.dependency_figures(server, work)
    return results


def _say(group: str) -> None:
    print(f"bench: measuring {group}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
