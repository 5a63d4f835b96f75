"""glow-put: puts jobs into beanstalkd tubes, one from the command line or many
from stdin."""

import collections
import contextlib
import gc
import json
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import greenstalk
import typer

from . import cli
from .connection import Connection, PartialPut, connect
from .defaults import DEPS_ENV, UNDO_SLACK, UNDO_TUBE
from .errors import Interrupted, JobInvalid, QueueUnreachable
from .job import Job, encode, json_problem, parse_job

if TYPE_CHECKING:
    from .sign import Secret

PATH_FIELDS = ("workdir", "out", "stdout", "stderr")
PROGRESS_FROM = 2000
_scan = json.scanner.make_scanner(json.JSONDecoder())  # what json.loads runs in C
# Variables --export leaves out: credentials, and what only means something here.
_PRIVATE_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "KEY", "AUTH")
_LOCAL_NAMES = {"_", "PWD", "OLDPWD", "SHLVL", "TERM", "DISPLAY", "SSH_AUTH_SOCK"}
# Who the job runs as is the listener's to say: a job's user gets its own.
_LOCAL_NAMES |= {"HOME", "USER", "LOGNAME", "MAIL", "SHELL"}
_EXPORT_VALUE_MAX = 4096
# --export keeps the environment within this many bytes, leaving out the largest.
_EXPORT_TOTAL_MAX = 16384

app = cli.app("Put jobs into beanstalkd tubes.")
Opt = typer.Option


@app.command()
def put(
    command: Annotated[
        list[str] | None, typer.Argument(metavar="[-- CMD [ARG...]]")
    ] = None,
    tube: Annotated[str | None, Opt("--tube", "-t", help="Tube to put into.")] = None,
    pri: Annotated[str | None, Opt(help="Priority, 0 most urgent.")] = None,
    delay: Annotated[str | None, Opt(help="Seconds before the job is ready.")] = None,
    ttr: Annotated[str | None, Opt(help="Seconds a listener's lease lasts.")] = None,
    workdir: Annotated[str | None, Opt(help="Folder the command runs in.")] = None,
    out: Annotated[str | None, Opt(help="File for stdout and stderr.")] = None,
    stdout: Annotated[str | None, Opt(help="File for stdout.")] = None,
    stderr: Annotated[str | None, Opt(help="File for stderr.")] = None,
    mailto: Annotated[str | None, Opt(help="Addresses to mail on failure.")] = None,
    env: Annotated[list[str] | None, Opt(help="NAME=value for the job.")] = None,
    export: Annotated[bool, Opt(help="Pass this shell's environment on.")] = False,
    user: Annotated[str | None, Opt(help="User the job runs as.")] = None,
    retries: Annotated[str | None, Opt(help="Attempts after a failure.")] = None,
    retry_delay: Annotated[str | None, Opt(help="Seconds before a retry.")] = None,
    timeout: Annotated[str | None, Opt(help="Seconds the job may run.")] = None,
    memory: Annotated[str | None, Opt(help="Memory limit, e.g. 512M.")] = None,
    cpu_time: Annotated[str | None, Opt(help="CPU seconds limit.")] = None,
    nofile: Annotated[str | None, Opt(help="Open files limit.")] = None,
    nproc: Annotated[str | None, Opt(help="Processes limit.")] = None,
    nice: Annotated[str | None, Opt(help="Niceness, -20..19.")] = None,
    after: Annotated[str | None, Opt(help="Upstream tubes, a,b.")] = None,
    after_job: Annotated[str | None, Opt(help="Upstream job ids, 41,42.")] = None,
    after_any: Annotated[bool, Opt(help="Run once upstream settles.")] = False,
    deps: Annotated[
        str | None,
        Opt(envvar=DEPS_ENV, metavar="FILE", help='Rules: {"tube": ["upstream"]}.'),
    ] = None,
    queue: cli.Queue = None,
    secret_file: cli.SecretFile = None,
    json_out: cli.Json = False,
    verbose: cli.Verbose = 0,
    quiet: cli.Quiet = False,
) -> None:
    """Put jobs into beanstalkd tubes; print one job id per line.

    One job:  glow-put --tube nightly -- ls -l /var

    Many:     glow-put --tube nightly < jobs.jsonl  (a JSON array or JSON Lines)
    """
    if export or verbose:
        # Only --export has anything to say; logging is imported only then.
        cli.setup_logging("glow-put", verbose, quiet)
    secret = _load_secret(secret_file[0]) if secret_file else None
    limits = _given(memory=memory, cpu_time=cpu_time, nofile=nofile, nproc=nproc)
    limits.update(_given(nice=nice))
    defaults = _given(
        tube=tube, pri=pri, delay=delay, ttr=ttr, workdir=workdir, out=out,
        stdout=stdout, stderr=stderr, mailto=mailto, user=user, retries=retries,
        retry_delay=retry_delay, timeout=timeout, after=after, after_jobs=after_job,
    )  # fmt: skip
    if limits:
        defaults["limits"] = limits
    if after_any:
        defaults["after_any"] = True
    variables = _exported() if export else {}
    variables.update(_env_options(env or []))
    if variables:
        defaults["env"] = variables
    defaults = _absolute_paths(defaults)

    if command:
        raw = {"cmd": command[0], "args": command[1:]}
        jobs, given = [("the job", parse_job(raw, "the job", defaults))], []
    elif sys.stdin.isatty():
        raise JobInvalid("stdin", "is a terminal (give a command, or pipe jobs in)")
    else:
        with _collector_paused():
            jobs, given = read_jobs(sys.stdin.buffer.read(), defaults)
    jobs = _with_rules(jobs, _hold().load_rules(deps) if deps else {})

    ids = put_jobs(queue, jobs, secret, given)
    if not json_out:
        sys.stdout.write("".join(f"{job_id}\n" for job_id in ids))
        return
    for (_, job), job_id in zip(jobs, ids, strict=True):
        print(json.dumps({"id": job_id, "tube": job.tube, "cmd": job.describe()}))


def _load_secret(path) -> "Secret":
    # Signing (hashlib, hmac) is imported only by puts that sign: it costs an
    # unsigned single put a twentieth of its start-up.
    from .sign import load_secret

    return load_secret(path)


def _hold():
    # Held jobs and --deps rules are the exception: their module costs a single
    # put of an ordinary job a twentieth of its start-up.
    from . import hold

    return hold


def _given(**options: Any) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


def _env_options(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise JobInvalid("--env", f"{pair!r} is not NAME=value")
        env[name] = value
    return env


def _exported() -> dict[str, str]:
    """Returns this process's environment less secrets and host-local variables."""
    chosen = {
        name: value
        for name, value in os.environ.items()
        if name not in _LOCAL_NAMES
        and not name.startswith(("GLOW_", "SSH_", "XDG_"))
        and not any(word in name.upper() for word in _PRIVATE_WORDS)
        and len(value) <= _EXPORT_VALUE_MAX
    }
    size = sum(len(name) + len(value) for name, value in chosen.items())
    dropped = []
    for name in sorted(chosen, key=lambda n: len(chosen[n]), reverse=True):
        if size <= _EXPORT_TOTAL_MAX:
            break
        size -= len(name) + len(chosen.pop(name))
        dropped.append(name)
    if dropped:
        import logging

        log = logging.getLogger(__name__)
        log.warning("--export left out %s (too large for a job)", ", ".join(dropped))
    return chosen


def _absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """Makes relative paths absolute against the caller's folder, as glow did."""
    for name in PATH_FIELDS:
        value = raw.get(name)
        if isinstance(value, str) and value and not value.startswith("/"):
            raw[name] = os.path.abspath(value)
    return raw


def read_jobs(
    data: bytes, defaults: dict[str, Any]
) -> tuple[list[tuple[str, Job]], list[tuple[Any, bytes]]]:
    """Parses stdin: a JSON array, one JSON object, or JSON Lines.

    Returns (where, job) pairs and, for JSON Lines, each job's (value, line) as
    given; raises JobInvalid at the first bad job.
    """
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise JobInvalid("stdin", f"is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise JobInvalid("stdin", "holds no jobs (pipe JSON, or give a command)")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if text.lstrip().startswith("[") or getattr(exc, "msg", "") != "Extra data":
            if not _looks_like_lines(text):
                raise JobInvalid("stdin", f"is not JSON ({_problem(exc)})") from None
        return _read_lines(text, data, defaults)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise JobInvalid("stdin", "holds JSON that is neither an array nor objects")
    return [_parse(raw, f"job {n}", defaults) for n, raw in enumerate(value, 1)], []


@contextlib.contextmanager
def _collector_paused():
    """Pauses the cyclic garbage collector while a batch is read, then exempts
    the batch from it: thousands of jobs that live to the end, walked over and
    over, cost about a fifth of the read."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _looks_like_lines(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0].strip()
    return first.startswith("{") and first.endswith("}")


def _read_lines(text: str, data: bytes, defaults: dict[str, Any]):
    jobs, given = [], []
    # A newline is one byte in UTF-8, so the text's lines and the bytes' match.
    lines = zip(text.split("\n"), data.split(b"\n"), strict=True)
    for lineno, (line, wire) in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        where = f"job {len(jobs) + 1} on line {lineno}"
        try:
            raw = _loads(line)
        except (ValueError, RecursionError) as exc:
            problem = f"is not JSON ({_problem(exc, line_too=False)})"
            raise JobInvalid(where, problem) from None
        jobs.append(_parse(raw, where, defaults))
        given.append((raw, wire.strip() if wire[-1:].isspace() else wire))
    return jobs, given


def _loads(line: str) -> Any:
    """json.loads for a line that is exactly one value, without its whitespace
    passes; anything else goes to json.loads, for its words."""
    try:
        value, end = _scan(line, 0)
    except (StopIteration, ValueError):
        return json.loads(line)
    return value if end == len(line) else json.loads(line)


def _problem(exc: Exception, line_too: bool = True) -> str:
    if not isinstance(exc, json.JSONDecodeError):
        return json_problem(exc)
    at_line = f"line {exc.lineno} " if line_too else ""
    # json's "Invalid control character at" carries its own "at".
    return f"{exc.msg.removesuffix(' at')} at {at_line}column {exc.colno}"


def _parse(raw: Any, where: str, defaults: dict[str, Any]) -> tuple[str, Job]:
    if isinstance(raw, dict) and not raw.keys().isdisjoint(PATH_FIELDS):
        raw = _absolute_paths(dict(raw))
    return where, parse_job(raw, where, defaults)


def _with_rules(jobs: list[tuple[str, Job]], rules: dict) -> list[tuple[str, Job]]:
    """Adds the rules' upstream tubes; raises JobInvalid for a job that cannot wait."""
    if not rules and not any(job.held for _, job in jobs):
        return jobs
    hold = _hold()
    jobs = [(where, hold.apply_rules(job, rules)) for where, job in jobs]
    waits_on = {tube: set(upstream) for tube, upstream in rules.items()}
    for where, job in jobs:
        problem = job.held and hold.holding_problem(job)
        if problem:
            raise JobInvalid(where, problem)
        waits_on.setdefault(job.tube, set()).update(job.after)
    cycle = hold.find_cycle({tube: sorted(up) for tube, up in waits_on.items()})
    if cycle:
        raise JobInvalid(
            "the batch", f"its jobs would wait on each other forever: "
            f"{' -> '.join(cycle)} (each tube waits on the next)",
        )  # fmt: skip
    return jobs


def put_jobs(
    queue: str | None,
    jobs: list[tuple[str, Job]],
    secret: "Secret | None" = None,
    given: list[tuple[Any, bytes]] | None = None,
) -> list[int]:
    """Puts validated jobs over one connection; all of them or none.

    Signs each body with `secret` if given. `given` holds each job's (value,
    line) as read, if any. Raises JobInvalid for a body the server would refuse,
    Interrupted if the connection broke part-way (after deleting what had been
    put).
    """
    bodies = _bodies(jobs, given or [])
    if secret:
        from .sign import sign

        bodies = [sign(body, secret) for body in bodies]
    conn = connect(queue)
    try:
        _check_sizes(conn, jobs, bodies)
        puts = [
            _hold().held_put(job, body)
            if job.held
            else (job.tube, body, job.pri, job.delay, job.ttr)
            for (_, job), body in zip(jobs, bodies, strict=True)
        ]
        try:
            return _put_all(conn, jobs, puts)
        except PartialPut as exc:
            raise _undo(queue, exc, len(puts)) from exc.cause
    finally:
        conn.close()


def _bodies(jobs: list[tuple[str, Job]], given: list) -> list[bytes]:
    """Returns each job's body: the line it came on when that line decodes to
    exactly the job's fields (it was validated as it is; nothing was added),
    else the canonical encoding."""
    bodies = []
    for n, (_, job) in enumerate(jobs):
        data = job.to_dict()
        raw, line = given[n] if given else (None, b"")
        bodies.append(line if raw == data else encode(data))
    return bodies


def _put_all(conn: Connection, jobs: list, puts: list) -> list[int]:
    """Puts the jobs, then the index records of held ones, which name their ids.

    With held jobs, SIGINT and SIGTERM wait until the records are put too: a held
    job without its record would never be released.
    """
    with _signals_deferred(any(job.held for _, job in jobs)):
        ids = conn.put_many(puts, _progress(len(puts)))
        held = zip(jobs, ids, strict=True)
        records = [_hold().record_put(job, j) for (_, job), j in held if job.held]
        try:
            conn.put_many(records)
        except PartialPut as exc:
            raise PartialPut(ids + exc.ids, exc.cause, exc.unanswered) from exc.cause
    return ids


@contextlib.contextmanager
def _signals_deferred(defer: bool):
    if not defer:
        yield
        return
    import signal

    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _check_sizes(conn: Connection, jobs: list, bodies: list[bytes]) -> None:
    limit = conn.max_job_size()
    for (where, _), body in zip(jobs, bodies, strict=True):
        if len(body) > limit:
            raise JobInvalid(
                where,
                f"is {len(body):,} bytes; the server at {conn.address} takes at "
                f"most {limit:,} (start beanstalkd with a larger -z)",
            )


def _progress(total: int):
    if total < PROGRESS_FROM or not sys.stderr.isatty():
        return None

    def show(done: int) -> None:
        end = "\n" if done == total else ""
        print(f"\rglow-put: {done:,}/{total:,} jobs put", end=end, file=sys.stderr)

    return show


def _undo(queue: str | None, exc: PartialPut, total: int) -> Exception:
    """Deletes the jobs of a broken batch, answered or not; returns the error."""
    if not exc.ids and not exc.unanswered:
        return exc.cause
    try:
        with connect(queue) as conn:
            for job_id in exc.ids:
                # A held job's index record may already be leased by glow-dep,
                # which drops it once it sees the job gone.
                with contextlib.suppress(greenstalk.NotFoundError):
                    conn.delete(job_id)
            done = len(exc.ids) + _delete_unanswered(conn, exc)
    except QueueUnreachable:
        return _stranded(exc, total)
    if not done:
        return exc.cause
    return Interrupted(
        f"{exc.cause}; the {done} of {total} jobs put before it were deleted "
        "again, so nothing is queued (run glow-put again)"
    )


def _stranded(exc: PartialPut, total: int) -> Interrupted:
    said = []
    if exc.ids:
        said.append(
            f"{len(exc.ids)} of {total} jobs were put and could not be taken back "
            f"(ids {_ranges(exc.ids)})"
        )
    if exc.unanswered:
        more = "more" if exc.ids else f"of {total} jobs"
        said.append(
            f"up to {len(exc.unanswered)} {more} may have been put without an answer"
        )
    return Interrupted(f"{exc.cause}; {', and '.join(said)}; the rest were not put")


def _delete_unanswered(conn: Connection, exc: PartialPut) -> int:
    """Deletes jobs the server took but never answered for; returns how many.

    They lie between the last answered id and a mark put now, as bodies we sent.
    """
    pending = collections.Counter(exc.unanswered)
    conn.use(UNDO_TUBE)
    mark = conn.put(b"glow-put undo mark")
    conn.delete(mark)
    floor = max(exc.ids or [0])
    floor = max(floor, mark - len(exc.unanswered) - UNDO_SLACK)
    found = 0
    for job_id in range(mark - 1, floor, -1):
        if not pending:
            break
        try:
            body = conn.peek(job_id).body
            if pending[body]:
                conn.delete(job_id)
                pending -= collections.Counter([body])
                found += 1
        except greenstalk.NotFoundError:
            continue
    return found


def _ranges(ids: list[int]) -> str:
    """Writes ids compactly: 5-9,12."""
    spans: list[list[int]] = []
    for job_id in sorted(ids):
        if spans and job_id == spans[-1][1] + 1:
            spans[-1][1] = job_id
        else:
            spans.append([job_id, job_id])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def main() -> None:
    """Runs glow-put."""
    cli.run(app, "glow-put")
