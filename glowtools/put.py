"""glow-put: puts jobs into beanstalkd tubes, one from the command line or many
from stdin."""

import collections
import contextlib
import gc
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import greenstalk

from . import cli
from .connection import Connection, PartialPut, connect
from .defaults import DEPS_ENV, QUEUE_ENV, SECRET_ENV, UNDO_SLACK, UNDO_TUBE
from .errors import Interrupted, JobInvalid, QueueUnreachable
from .job import LIMIT_NAMES, Job, encode, json_problem, parse_job

if TYPE_CHECKING:
    from .sign import Secret

PATH_FIELDS = ("workdir", "out", "stdout", "stderr")
PROGRESS_FROM = 2000
# JSON Lines batches of this many bytes are read on two processes, if the process
# may use two cores: below it, starting the second saves next to nothing.
HELP_FROM = 512 * 1024
_scan = json.scanner.make_scanner(json.JSONDecoder())  # what json.loads runs in C
_SPACE = re.compile(rb"\s*")
_NOT_SPACE = re.compile(rb"\S")
# Variables --export leaves out: credentials, and what only means something here.
_PRIVATE_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "KEY", "AUTH")
_LOCAL_NAMES = {"_", "PWD", "OLDPWD", "SHLVL", "TERM", "DISPLAY", "SSH_AUTH_SOCK"}
# Who the job runs as is the listener's to say: a job's user gets its own.
_LOCAL_NAMES |= {"HOME", "USER", "LOGNAME", "MAIL", "SHELL"}
_EXPORT_VALUE_MAX = 4096
# --export keeps the environment within this many bytes, leaving out the largest.
_EXPORT_TOTAL_MAX = 16384

# Options a plain command line may give, each once and with a value.
_PLAIN_OPTIONS = {
    "--queue": "queue",
    "--tube": "tube",
    "-t": "tube",
    "--secret-file": "secret_file",
}
# The job fields the options fill in, by option name where the two differ.
_FIELD_OPTIONS = (
    "tube", "pri", "delay", "ttr", "workdir", "out", "stdout", "stderr", "mailto",
    "user", "retries", "retry_delay", "timeout", "after",
)  # fmt: skip


@dataclass
class Batch:
    """Jobs read and validated, in the order given."""

    jobs: list[tuple[str, Job]]  # (where, job): where names it in errors
    # For JSON Lines, each job's (value, line, line number) as given.
    given: list[tuple[Any, bytes, int]] = field(default_factory=list)
    # Jobs read on two processes, which follow `jobs`, as they will be put:
    # (where, line number, (tube, body, pri, delay, ttr)).
    ready: list[tuple[str, int, tuple]] = field(default_factory=list)


def put(given: dict[str, Any]) -> None:
    """Puts the jobs a command line asks for and prints their ids.

    `given` holds the command line's values by option name; options left out
    may be absent or empty.
    """
    option = given.get
    if option("export") or option("verbose"):
        # Only --export has anything to say; logging is imported only then.
        cli.setup_logging("glow-put", option("verbose") or 0, option("quiet") or False)
    secret_files = option("secret_file")
    secret = _load_secret(secret_files[0]) if secret_files else None
    limits = _given({name: option(name) for name in LIMIT_NAMES})
    defaults = _given({name: option(name) for name in _FIELD_OPTIONS})
    defaults.update(_given({"after_jobs": option("after_job")}))
    if limits:
        defaults["limits"] = limits
    if option("after_any"):
        defaults["after_any"] = True
    variables = _exported() if option("export") else {}
    variables.update(_env_options(option("env") or []))
    if variables:
        defaults["env"] = variables
    defaults = _absolute_paths(defaults)

    command, deps = option("command"), option("deps")
    if command:
        raw = {"cmd": command[0], "args": command[1:]}
        batch = Batch([("the job", parse_job(raw, "the job", defaults))])
    elif sys.stdin.isatty():
        raise JobInvalid("stdin", "is a terminal (give a command, or pipe jobs in)")
    else:
        # A helper process makes the bodies of the jobs it reads: no rules may
        # change them, and --json would need the jobs themselves.
        helped = not deps and not option("json_out")
        with _collector_paused():
            data = sys.stdin.buffer.read()
            batch = read_jobs(data, defaults, helped, secret)
    batch.jobs = _with_rules(batch.jobs, _hold().load_rules(deps) if deps else {})

    ids = put_jobs(option("queue"), batch, secret)
    if not option("json_out"):
        sys.stdout.write("".join(f"{job_id}\n" for job_id in ids))
    else:
        for (_, job), job_id in zip(batch.jobs, ids, strict=True):
            print(json.dumps({"id": job_id, "tube": job.tube, "cmd": job.describe()}))
    _end_at_once()


def plain_options(argv: list[str], environ: Mapping[str, str]) -> dict | None:
    """Reads a plain command line, or returns None for typer to read.

    Plain: `--queue`, `--tube`/`-t` and `--secret-file`, each at most once with
    a value of its own (`--tube x` or `--tube=x`), then nothing or `-- CMD
    [ARG...]`. Importing typer is half of a single put's start-up, and shell
    loops and pipelines call glow-put with no more than this. The values are
    those typer would give, environment variables included.
    """
    given = _plain_words(argv)
    if given is None:
        return None
    files = environ.get(SECRET_ENV, "").split(os.pathsep)
    if "secret_file" in given:
        files = [given["secret_file"]]
    elif files == [""]:
        files = []
    if "" in files:
        return None  # an empty path, which typer makes "."
    given["secret_file"] = [Path(path) for path in files]
    given["queue"] = given.get("queue") or environ.get(QUEUE_ENV) or None
    given["deps"] = environ.get(DEPS_ENV) or None
    return given


def _plain_words(argv: list[str]) -> dict[str, Any] | None:
    given: dict[str, Any] = {}
    words = iter(argv)
    for word in words:
        if word == "--":
            given["command"] = list(words)
            return given if given["command"] else None
        name, equals, value = word.partition("=")
        key = _PLAIN_OPTIONS.get(name)
        if key is None or key in given or (equals and name == "-t"):
            return None
        if not equals:
            value = next(words, "")
        if not value or value.startswith("-"):
            return None
        given[key] = value
    return given


def _app():
    """Returns glow-put's typer app, which reads every command line that is
    not plain."""
    import typer

    from . import options

    app = options.app("Put jobs into beanstalkd tubes.")
    Opt = typer.Option

    @app.command()
    def glow_put(
        command: Annotated[
            list[str] | None, typer.Argument(metavar="[-- CMD [ARG...]]")
        ] = None,
        tube: Annotated[
            str | None, Opt("--tube", "-t", help="Tube to put into.")
        ] = None,
        pri: Annotated[str | None, Opt(help="Priority, 0 most urgent.")] = None,
        delay: Annotated[
            str | None, Opt(help="Seconds before the job is ready.")
        ] = None,
        ttr: Annotated[
            str | None, Opt(help="Seconds a listener's lease lasts.")
        ] = None,
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
        queue: options.Queue = None,
        secret_file: options.SecretFile = None,
        json_out: options.Json = False,
        verbose: options.Verbose = 0,
        quiet: options.Quiet = False,
    ) -> None:
        """Put jobs into beanstalkd tubes; print one job id per line.

        One job:  glow-put --tube nightly -- ls -l /var

        Many:     glow-put --tube nightly < jobs.jsonl  (a JSON array or JSON Lines)
        """
        put(locals())  # first: the options, by name

    return app


def _end_at_once() -> NoReturn:
    """Ends glow-put without freeing its objects one by one, which took a
    tenth of a 10,000-job batch's run: the ids are out, nothing else is due."""
    sys.stdout.flush()
    sys.stderr.flush()
    helper = sys.modules.get("glowtools.helper")  # imported for large batches
    if helper:
        helper.reap_all()
    os._exit(0)


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


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


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
    data: bytes,
    defaults: dict[str, Any],
    helped: bool = False,
    secret: "Secret | None" = None,
) -> Batch:
    """Parses stdin: a JSON array, one JSON object, or JSON Lines.

    With `helped`, a large JSON Lines batch is read on two processes, the
    second half by a helper that makes its jobs' bodies (signed with `secret`).
    Raises JobInvalid at the first bad job.
    """
    if not data or data.isspace():
        raise JobInvalid("stdin", "holds no jobs (pipe JSON, or give a command)")
    if _json_lines(data):
        return _read_lines(data, defaults, helped, secret)
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise JobInvalid("stdin", f"is not UTF-8 (byte {exc.start})") from None
    if text.isspace():
        raise JobInvalid("stdin", "holds no jobs (pipe JSON, or give a command)")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if text.lstrip().startswith("[") or getattr(exc, "msg", "") != "Extra data":
            if not _looks_like_lines(text):
                raise JobInvalid("stdin", f"is not JSON ({_problem(exc)})") from None
        return _read_lines(data, defaults, False, secret)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise JobInvalid("stdin", "holds JSON that is neither an array nor objects")
    return Batch([_parse(raw, f"job {n}", defaults) for n, raw in enumerate(value, 1)])


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


def _json_lines(data: bytes) -> bool:
    """Tells, without decoding all of stdin, whether it is JSON Lines: its first
    line that is not blank holds one whole object, and something follows."""
    start = _SPACE.match(data).end()
    end = data.find(b"\n", start)
    if end < 0 or not _NOT_SPACE.search(data, end):
        return False
    try:
        line = data[start:end].decode()
        value, stop = _scan(line, 0)
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
        return False
    return isinstance(value, dict) and (stop == len(line) or line[stop:].isspace())


def _looks_like_lines(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0].strip()
    return first.startswith("{") and first.endswith("}")


def _read_lines(
    data: bytes, defaults: dict[str, Any], helped: bool, secret: "Secret | None"
) -> Batch:
    wires = data.split(b"\n")
    half = len(wires) // 2
    cores = len(os.sched_getaffinity(0))
    if not helped or len(data) < HELP_FROM or half < 2 or cores < 2:
        return Batch(*_read_range(wires, 0, len(wires), defaults))
    from .helper import Helper  # pickle and all: only a large batch needs them

    counted = sum(1 for wire in wires[:half] if wire and not wire.isspace())
    args = (wires, half, len(wires), defaults, counted, secret, True)
    with Helper(_ready_puts, *args, raises=(JobInvalid,)) as helper:
        mine = _ready_puts(wires, 0, half, defaults, 0, secret)
        theirs = helper.result()
    if mine is None or theirs is None:
        # A held job takes the usual path; so does a half the helper failed on.
        return Batch(*_read_range(wires, 0, len(wires), defaults))
    for where, lineno, put in theirs:
        if put[1] is None:
            put = (put[0], _as_body(wires[lineno - 1]), *put[2:])
        mine.append((where, lineno, put))
    return Batch([], ready=mine)


def _ready_puts(wires, start, stop, defaults, counted, secret, lean=False):
    """Reads the lines wires[start:stop] into (where, line number, put) for
    each job, ready to send; None if a job is held, whose put is made later.

    `lean` (the helper's answer, which is pickled) leaves out a body that is
    the line as given, as None: the parent has the line.
    """
    jobs, given = _read_range(wires, start, stop, defaults, counted)
    if any(job.held for _, job in jobs):
        return None
    bodies = _signed(_bodies(jobs, given, as_read=not defaults), secret)
    ready = []
    for (where, job), (_, as_given, n), body in zip(jobs, given, bodies, strict=True):
        body = None if lean and body is as_given else body
        ready.append((where, n, _put_of(job, body)))
    return ready


def _read_range(wires, start, stop, defaults, counted=0):
    """Reads the lines wires[start:stop]; `counted` jobs came before them.
    Returns (where, job) pairs and each job's (value, line, line number)."""
    jobs, given = [], []
    for lineno in range(start + 1, stop + 1):
        wire = wires[lineno - 1]
        if not wire or wire.isspace():
            continue
        where = f"job {counted + len(jobs) + 1} on line {lineno}"
        try:
            raw = _loads(wire.decode())
        except UnicodeDecodeError as exc:
            at = sum(len(before) + 1 for before in wires[: lineno - 1]) + exc.start
            raise JobInvalid("stdin", f"is not UTF-8 (byte {at})") from None
        except (ValueError, RecursionError) as exc:
            problem = f"is not JSON ({_problem(exc, line_too=False)})"
            raise JobInvalid(where, problem) from None
        jobs.append(_parse(raw, where, defaults))
        given.append((raw, _as_body(wire), lineno))
    return jobs, given


def _as_body(wire: bytes) -> bytes:
    return wire.strip() if wire[-1:].isspace() else wire


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
    queue: str | None, batch: Batch, secret: "Secret | None" = None
) -> list[int]:
    """Puts a batch over one connection; all of its jobs or none.

    Signs each body of `batch.jobs` with `secret` if given (`batch.ready` is
    signed already). Raises JobInvalid for a body the server would refuse,
    Interrupted if the connection broke part-way (after deleting what had been
    put).
    """
    jobs = batch.jobs
    bodies = _signed(_bodies(jobs, batch.given), secret)
    puts = [_put_of(job, body) for (_, job), body in zip(jobs, bodies, strict=True)]
    puts += [put for _, _, put in batch.ready]
    conn = connect(queue)
    try:
        _check_sizes(conn, batch, puts)
        try:
            return _put_all(conn, jobs, puts)
        except PartialPut as exc:
            raise _undo(queue, exc, len(puts)) from exc.cause
    finally:
        conn.close()


def _put_of(job: Job, body: bytes) -> tuple[str, bytes, int, int, int]:
    """Returns the (tube, body, pri, delay, ttr) put that queues `job`."""
    if job.held:
        return _hold().held_put(job, body)
    return (job.tube, body, job.pri, job.delay, job.ttr)


def _signed(bodies: list[bytes], secret: "Secret | None") -> list[bytes]:
    if not secret:
        return bodies
    from .sign import sign

    return [sign(body, secret) for body in bodies]


def _bodies(jobs: list[tuple[str, Job]], given: list, as_read=False) -> list[bytes]:
    """Returns each job's body: the line it came on when that line decodes to
    exactly the job's fields (it was validated as it is; nothing was added),
    else the canonical encoding.

    `as_read` says the jobs are as parsed from their lines alone (no defaults,
    no rules), which lets a line be checked without making the job's fields.
    """
    bodies = []
    for n, (_, job) in enumerate(jobs):
        raw, line, _ = given[n] if given else (None, b"", 0)
        if as_read and job.parsed_as_is(raw):
            bodies.append(line)
            continue
        data = job.to_dict()
        bodies.append(line if raw == data else encode(data))
    return bodies


def _put_all(conn: Connection, jobs: list, puts: list) -> list[int]:
    """Puts the jobs, then the index records of held ones, which name their ids.

    With held jobs, SIGINT and SIGTERM wait until the records are put too: a held
    job without its record would never be released.
    """
    held = [(job, n) for n, (_, job) in enumerate(jobs) if job.held]
    with _signals_deferred(bool(held)):
        ids = conn.put_many(puts, _progress(len(puts)))
        if not held:
            return ids
        records = [_hold().record_put(job, ids[n]) for job, n in held]
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


def _check_sizes(conn: Connection, batch: Batch, puts: list) -> None:
    limit = conn.max_job_size()
    if max(len(body) for _, body, *_ in puts) <= limit:
        return
    wheres = [where for where, _ in batch.jobs] + [w for w, _, _ in batch.ready]
    for where, (_, body, *_) in zip(wheres, puts, strict=True):
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
    """Runs glow-put; typer reads any command line that is not plain."""
    given = plain_options(sys.argv[1:], os.environ)
    if given is None:
        cli.run(_app(), "glow-put")
    cli.guarded(lambda: put(given), "glow-put")
