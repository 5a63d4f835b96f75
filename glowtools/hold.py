"""Holding a job until its upstream drains, and releasing it exactly once.

A held job is put into its own tube delayed by HOLD_DELAY: no listener can reserve
it, and it counts as a job of its tube, which makes holds transitive. Beside it an
index record, a ready job in GLOW_HELD.<tube>, names the job and its upstream.
glow-dep adopts records (reserves, then buries them), watches the upstream, and to
release a job reserves its record by id (so one glow-dep acts on it), kicks the job
(or reserves and releases it with the user's delay) and deletes the record. A job
is held only while delayed with delay HOLD_DELAY, so a record that outlives its
job's release (a crash in between) is dropped, never released twice.

Public API, kept stable for glow-put, glow-dep, glow-stats and glow-drain:
  index_tube(tube) -> str           the tube holding the index records of `tube`
  Record, parse_record(body)        an index record and its body
  held_put(job, body)               the put tuple that queues a job held
  record_put(job, job_id)           the put tuple of the job's index record
  holding_problem(job) -> str|None  why a job cannot be held, if it cannot
  is_held(stats_job) -> bool        whether stats-job says a job is still held
  held_counts(conn) -> {tube: n}    held jobs per tube, from the index tubes
  held_groups(conn) -> [Group]      what is held now, by tube and upstream, each
                                    waiting or blocked with the reason
  forget_held(conn, tube) -> int    deletes the held jobs of a tube, and their
                                    records
  load_rules(path), find_cycle(rules), apply_rules(job, rules)
  fetch_upstream(conn, records), judge(record, upstream) -> Verdict
  take_records(conn), adopt_records(conn), unbury_records(conn),
  hand_back(conn, records), watch_index_tubes(conn, watching)
  confirm_held(conn, records), sweep_held(conn, records), release_held(conn, records)
  group_records(records, upstream) -> [Group], read_views(conn), view_tube(host)
  pipeline(conn, commands) -> [Answer]
Reserve at most a few hundred records on one connection at a time (see CHUNK), or
read them on a connection of their own and close it, as held_groups does.
"""

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .connection import Connection, connect
from .defaults import (
    HELD_PREFIX,
    HELD_TTR,
    HOLD_DELAY,
    MAX_TUBE_NAME,
    VIEW_PREFIX,
)
from .errors import ConfigInvalid, JobInvalid, ServerRefused
from .job import Job, tube_name

# Commands sent before their answers are read; see Connection.put_many.
WINDOW = 512
# Records reserved at once: beanstalkd scans a connection's reservations on
# every touch, release, bury and delete, so a glow-dep keeps few of them.
CHUNK = 256
# Words beanstalkd answers with that are followed by a data chunk.
_WITH_DATA = {b"RESERVED": 1, b"FOUND": 1, b"OK": 0}
_ERRORS = {b"OUT_OF_MEMORY", b"INTERNAL_ERROR", b"BAD_FORMAT", b"UNKNOWN_COMMAND"}


def index_tube(tube: str) -> str:
    """Returns the tube that holds the index records of `tube`'s held jobs."""
    return HELD_PREFIX + tube


def held_tube(index: str) -> str | None:
    """Returns the tube an index tube stands for, or None if it is not one."""
    return index[len(HELD_PREFIX) :] if index.startswith(HELD_PREFIX) else None


@dataclass(frozen=True)
class Record:
    """An index record: a held job, its upstream, and the record's own id."""

    job_id: int
    tube: str
    after: tuple[str, ...] = ()
    after_jobs: tuple[int, ...] = ()
    after_any: bool = False
    delay: int = 0
    record_id: int = 0

    @property
    def key(self) -> tuple:
        """Returns what decides the record's fate: its tube and its upstream."""
        return (self.tube, self.after, self.after_jobs, self.after_any)

    def to_body(self) -> bytes:
        """Returns the record's body: compact JSON."""
        data = {"id": self.job_id, "tube": self.tube, "after": list(self.after)}
        data.update(after_jobs=list(self.after_jobs), after_any=self.after_any)
        data["delay"] = self.delay
        return json.dumps(data, separators=(",", ":")).encode()


def parse_record(body: bytes, record_id: int = 0) -> Record:
    """Reads an index record's body; raises JobInvalid if it is not one."""
    try:
        data = json.loads(body)
        return Record(
            job_id=int(data["id"]),
            tube=str(data["tube"]),
            after=tuple(str(t) for t in data.get("after", ())),
            after_jobs=tuple(int(j) for j in data.get("after_jobs", ())),
            after_any=bool(data.get("after_any", False)),
            delay=int(data.get("delay", 0)),
            record_id=record_id,
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        problem = f"is not an index record ({exc!r})"
        raise JobInvalid(f"record {record_id}", problem) from None


def held_put(job: Job, body: bytes) -> tuple[str, bytes, int, int, int]:
    """Returns the (tube, body, pri, delay, ttr) put that queues `job` held."""
    return (job.tube, body, job.pri, HOLD_DELAY, job.ttr)


def record_put(job: Job, job_id: int) -> tuple[str, bytes, int, int, int]:
    """Returns the put of the index record of held job `job_id`."""
    record = Record(
        job_id, job.tube, tuple(job.after), tuple(job.after_jobs), job.after_any,
        job.delay,
    )  # fmt: skip
    return (index_tube(job.tube), record.to_body(), 0, 0, HELD_TTR)


def holding_problem(job: Job) -> str | None:
    """Returns why `job` cannot be held, or None if it can."""
    if job.tube in job.after:
        return f"waits on its own tube {job.tube!r}, which then never drains"
    room = MAX_TUBE_NAME - len(HELD_PREFIX)
    if len(job.tube.encode()) > room:
        return f"has a tube name too long to be held (at most {room} characters)"
    return None


def is_held(stats: dict | None) -> bool:
    """Tells whether a job's stats-job answer (None: gone) says it is still held."""
    return bool(stats) and stats["state"] == "delayed" and stats["delay"] == HOLD_DELAY


# Rules files: {"load": ["extract", "transform"]}, load waits on both.


def load_rules(path: str) -> dict[str, list[str]]:
    """Reads a rules file; raises ConfigInvalid if it is unusable or has a cycle."""
    try:
        with open(path, "rb") as file:
            raw = json.load(file)
    except OSError as exc:
        raise ConfigInvalid(f"rules file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigInvalid(f"rules file {path}: is not JSON ({exc})") from None
    rules = _valid_rules(raw, path)
    cycle = find_cycle(rules)
    if cycle:
        raise ConfigInvalid(
            f"rules file {path}: tubes wait on each other in a cycle: "
            f"{' -> '.join(cycle)} (remove one of these rules)"
        )
    return rules


def _valid_rules(raw: Any, path: str) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise ConfigInvalid(f'rules file {path}: write {{"tube": ["upstream", ...]}}')
    rules = {}
    for tube, upstream in raw.items():
        items = upstream.split(",") if isinstance(upstream, str) else upstream
        try:
            if not isinstance(items, list):
                raise ValueError("must be a list of tubes")
            rules[tube_name(tube)] = [tube_name(str(t).strip()) for t in items]
        except ValueError as exc:
            raise ConfigInvalid(f"rules file {path}: tube {tube!r}: {exc}") from None
    return rules


def find_cycle(rules: dict[str, Sequence[str]]) -> list[str] | None:
    """Returns a cycle [a, b, a] of tubes waiting on each other, or None."""
    done: set[str] = set()
    for start in rules:
        path: list[str] = []
        stack = [(start, iter(rules.get(start, ())))]
        on_path = {start}
        path.append(start)
        while stack:
            tube, upstream = stack[-1]
            nxt = next(upstream, None)
            if nxt is None:
                stack.pop()
                on_path.discard(path.pop())
                done.add(tube)
            elif nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in done:
                stack.append((nxt, iter(rules.get(nxt, ()))))
                on_path.add(nxt)
                path.append(nxt)
    return None


def apply_rules(job: Job, rules: dict[str, list[str]]) -> Job:
    """Returns `job` with the upstream tubes the rules give its tube added."""
    extra = [t for t in rules.get(job.tube, ()) if t not in job.after]
    return replace(job, after=[*job.after, *extra]) if extra else job


# Talking to beanstalkd in pipelined windows.


@dataclass
class Answer:
    """One answer: its first word, the words after it, and its data chunk."""

    word: bytes
    args: list[bytes]
    data: bytes | None = None

    def stats(self) -> dict[str, Any] | None:
        """Returns the YAML dict of an OK answer to a stats command, else None."""
        if self.word != b"OK" or self.data is None:
            return None
        stats: dict[str, Any] = {}
        for line in self.data.decode().split("\n")[1:]:
            key, _, value = line.partition(": ")
            stats[key] = int(value) if value.isdigit() else value
        return stats


def pipeline(conn: Connection, commands: Sequence[bytes]) -> list[Answer]:
    """Sends commands (each with its CRLF) in windows; returns one answer each.

    Raises QueueUnreachable if the connection breaks, ServerRefused on an error
    answer that concerns the server rather than the job.
    """
    answers: list[Answer] = []
    for start in range(0, len(commands), WINDOW):
        window = commands[start : start + WINDOW]
        with conn._translated():
            conn._sock.sendall(b"".join(window))
            answers.extend(_read_answer(conn) for _ in window)
    return answers


def _read_answer(conn: Connection) -> Answer:
    line = conn._reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionResetError("closed the connection")
    word, *args = line.split()
    if word in _ERRORS:
        hint = " (held jobs need beanstalkd 1.12 or later)" * (
            word == b"UNKNOWN_COMMAND"
        )
        raise ServerRefused(
            f"beanstalkd at {conn.address} answered {word.decode()}{hint}"
        )
    answer = Answer(word, args)
    if word in _WITH_DATA:
        size = int(args[_WITH_DATA[word]])
        chunk = conn._reader.read(size + 2)
        if len(chunk) != size + 2:
            raise ConnectionResetError("closed the connection")
        answer.data = chunk[:-2]
    return answer


def take_records(conn: Connection, limit: int = 100_000) -> list[Record]:
    """Reserves the ready index records on the watched tubes, without waiting.

    A record that is not one is buried, so that it is neither lost nor retried.
    """
    records: list[Record] = []
    size = 16
    while len(records) < limit:
        answers = pipeline(conn, [b"reserve-with-timeout 0\r\n"] * size)
        for answer in answers:
            if answer.word == b"RESERVED":
                records.extend(record_or_bury(conn, answer))
        if answers[-1].word != b"RESERVED":
            return records
        size = min(size * 2, WINDOW)
    return records


def record_or_bury(conn: Connection, answer: Answer) -> list[Record]:
    """Reads a RESERVED answer as a record, or buries it if it is not one."""
    record_id = int(answer.args[0])
    try:
        return [parse_record(answer.data or b"", record_id)]
    except JobInvalid:
        pipeline(conn, [b"bury %d 0\r\n" % record_id])
        return []


def watch_index_tubes(conn: Connection, watching: set[str]) -> set[str]:
    """Makes `conn` watch every index tube; returns the tubes it now watches."""
    wanted = {t for t in conn.tubes() if t.startswith(HELD_PREFIX)} or {"GLOW_IDLE"}
    pipeline(conn, [b"watch %s\r\n" % t.encode() for t in sorted(wanted - watching)])
    pipeline(conn, [b"ignore %s\r\n" % t.encode() for t in sorted(watching - wanted)])
    return wanted


# Judging a record against its upstream.


@dataclass
class Upstream:
    """The state of upstream tubes (stats-tube, None if missing) and jobs."""

    tubes: dict[str, dict | None] = field(default_factory=dict)
    jobs: dict[int, dict | None] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """What to do with a held job: release it, or keep it waiting or blocked."""

    state: str  # "release", "waiting" or "blocked"
    reason: str = ""


def fetch_upstream(conn: Connection, records: Iterable[Record]) -> Upstream:
    """Asks for the stats of every distinct upstream tube and job, pipelined."""
    records = list(records)
    tubes = sorted({t for r in records for t in r.after})
    jobs = sorted({j for r in records for j in r.after_jobs})
    commands = [b"stats-tube %s\r\n" % t.encode() for t in tubes]
    commands += [b"stats-tube %s\r\n" % index_tube(t).encode() for t in tubes]
    commands += [b"stats-job %d\r\n" % j for j in jobs]
    answers = iter(pipeline(conn, commands))
    upstream = Upstream()
    for tube in tubes:
        upstream.tubes[tube] = next(answers).stats()
    for tube in tubes:
        upstream.held[tube] = _total(next(answers).stats() or {})
    for job_id in jobs:
        upstream.jobs[job_id] = next(answers).stats()
    return upstream


def judge(record: Record, upstream: Upstream) -> Verdict:
    """Decides whether a held job's upstream has drained (or settled)."""
    waiting = ""
    for tube in record.after:
        stats, held = upstream.tubes.get(tube), upstream.held.get(tube, 0)
        verdict = _judge_tube(tube, stats, held, record.after_any)
        if verdict.state == "blocked":
            return verdict
        waiting = waiting or verdict.reason
    for job_id in record.after_jobs:
        verdict = _judge_job(job_id, upstream.jobs.get(job_id), record.after_any)
        if verdict.state == "blocked":
            return verdict
        waiting = waiting or verdict.reason
    return Verdict("waiting", waiting) if waiting else Verdict("release")


def _judge_tube(tube: str, stats: dict | None, held: int, after_any: bool) -> Verdict:
    if stats is None:
        return Verdict("release")
    buried = stats["current-jobs-buried"]
    if buried and not after_any:
        jobs = "job" if buried == 1 else "jobs"
        return Verdict("blocked", f"upstream tube {tube} has {buried} buried {jobs}")
    delayed = stats["current-jobs-delayed"]
    # Held jobs count as delayed in their tube; a stale record can make more.
    counts = [(stats["current-jobs-ready"], "ready"), (min(held, delayed), "held")]
    counts += [(max(delayed - held, 0), "delayed")]
    counts += [(stats["current-jobs-reserved"], "reserved")]
    busy = ", ".join(f"{n} {s}" for n, s in counts if n)
    if busy:
        return Verdict("waiting", f"upstream tube {tube} has jobs ({busy})")
    return Verdict("release")


def _judge_job(job_id: int, stats: dict | None, after_any: bool) -> Verdict:
    if stats is None:
        return Verdict("release")
    state = stats["state"]
    if state == "buried":
        if after_any:
            return Verdict("release")
        return Verdict("blocked", f"upstream job {job_id} is buried")
    return Verdict("waiting", f"upstream job {job_id} is {_state(stats)}")


def _state(stats: dict) -> str:
    return "held" if is_held(stats) else stats["state"]


# Adopting and releasing. A glow-dep adopts a record by reserving and burying it:
# buried, it is out of every other glow-dep's way, and beanstalkd does no work for
# it (a connection holding thousands of reservations makes every touch and delete
# scan them all). To act on a record a glow-dep reserves it by id first, so only
# one glow-dep acts on it; a dead glow-dep's records are kicked back to ready.


def adopt_records(conn: Connection, chunk: int = CHUNK) -> list[Record]:
    """Reserves the ready records on the watched tubes and buries them, in chunks."""
    adopted: list[Record] = []
    while True:
        records = take_records(conn, limit=chunk)
        pipeline(conn, [b"bury %d 0\r\n" % r.record_id for r in records])
        adopted += records
        if len(records) < chunk:
            return adopted


def unbury_records(conn: Connection) -> int:
    """Kicks every buried record back to ready, for a glow-dep to adopt again.

    Returns how many were kicked. Harmless while other glow-deps run: a record
    adopted twice is still released once (see release_held).
    """
    indexes = [t for t in conn.tubes() if t.startswith(HELD_PREFIX)]
    commands = []
    for tube in indexes:
        commands += [b"use %s\r\n" % tube.encode(), b"kick %d\r\n" % 2**31]
    answers = pipeline(conn, commands)
    conn.use("default")
    return sum(int(a.args[0]) for a in answers if a.word == b"KICKED")


def hand_back(conn: Connection, records: Sequence[Record]) -> None:
    """Kicks adopted records back to ready, for another glow-dep (on a clean stop)."""
    pipeline(conn, [b"kick-job %d\r\n" % r.record_id for r in records])


def confirm_held(
    conn: Connection, records: Sequence[Record]
) -> tuple[list[tuple[Record, dict]], list[Record], list[Record]]:
    """Checks records and their jobs, pipelined.

    Returns (held: records with their job's stats, gone: records whose job is no
    longer held, lost: records that no longer exist).
    """
    return _sort_out(conn, records, b"stats-job", b"OK")


def _sort_out(conn: Connection, records: Sequence[Record], verb: bytes, ok: bytes):
    """Sends `verb` for each record and stats-job for its job; sorts them out."""
    commands = []
    for record in records:
        commands.append(b"%s %d\r\n" % (verb, record.record_id))
        commands.append(b"stats-job %d\r\n" % record.job_id)
    answers = pipeline(conn, commands)
    held, gone, lost = [], [], []
    for n, record in enumerate(records):
        stats = answers[2 * n + 1].stats()
        if answers[2 * n].word != ok:
            lost.append(record)
        elif is_held(stats):
            held.append((record, stats))
        else:
            gone.append(record)
    return held, gone, lost


def sweep_held(
    conn: Connection, records: Sequence[Record]
) -> tuple[list[Record], list[Record], list[Record]]:
    """Deletes the records whose job is not held any more (deleted, kicked by hand).

    Returns (held, gone, lost) as confirm_held, without the stats.
    """
    held, gone, lost = confirm_held(conn, records)
    for start in range(0, len(gone), CHUNK):
        chunk = gone[start : start + CHUNK]
        answers = pipeline(conn, [b"reserve-job %d\r\n" % r.record_id for r in chunk])
        mine = [r for r, a in zip(chunk, answers, strict=True) if a.word == b"RESERVED"]
        pipeline(conn, [b"delete %d\r\n" % r.record_id for r in mine])
    return [r for r, _ in held], gone, lost


def release_held(
    conn: Connection, records: Sequence[Record]
) -> tuple[list[Record], list[Record], list[Record]]:
    """Releases the held jobs of adopted records, then deletes the records.

    Returns (released, gone, lost): the records whose job this call made ready
    (or delayed by the user's delay), those whose job was no longer held, and
    those another glow-dep had taken or deleted first.
    """
    released, gone, lost = [], [], []
    for start in range(0, len(records), CHUNK):
        done = _release_chunk(conn, records[start : start + CHUNK])
        for total, part in zip((released, gone, lost), done, strict=True):
            total += part
    return released, gone, lost


def _release_chunk(conn: Connection, records: Sequence[Record]) -> tuple[list, ...]:
    # Reserving the record by id makes this connection the only one acting on it;
    # a job is held only while delayed by HOLD_DELAY, so it is released once.
    held, gone, lost = _sort_out(conn, records, b"reserve-job", b"RESERVED")
    released = _release_jobs(conn, held)
    done = {r.record_id for r in released}
    gone += [r for r, _ in held if r.record_id not in done]
    pipeline(conn, [b"delete %d\r\n" % r.record_id for r in [*released, *gone]])
    return released, gone, lost


def _release_jobs(conn: Connection, held: list[tuple[Record, dict]]) -> list[Record]:
    commands = []
    for record, stats in held:
        if record.delay:
            # reserve-job takes a delayed job, so that release restarts the user's
            # delay: the job is never ready early, and has one owner at a time.
            commands.append(b"reserve-job %d\r\n" % record.job_id)
            release = (record.job_id, stats["pri"], record.delay)
            commands.append(b"release %d %d %d\r\n" % release)
        else:
            commands.append(b"kick-job %d\r\n" % record.job_id)
    answers = iter(pipeline(conn, commands))
    released = []
    for record, _ in held:
        if record.delay:
            next(answers)
        if next(answers).word in (b"KICKED", b"RELEASED"):
            released.append(record)
    return released


# What is held now, for glow-stats and glow-dep --graph.


@dataclass
class Group:
    """Held jobs of one tube that wait on the same upstream, and their state."""

    tube: str
    after: list[str]
    after_jobs: list[int]
    after_any: bool
    held: int
    ids: list[int]
    state: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Returns the group as a JSON-ready dict."""
        return dict(self.__dict__)


_RELEASABLE = "its upstream has drained; no glow-dep has released it yet"


def group_records(
    records: Iterable[Record], upstream: Upstream | dict[tuple, Verdict]
) -> list[Group]:
    """Groups records by tube and upstream, each group judged once.

    `upstream` is the upstream's state, or the verdicts already made, by key.
    """
    groups: dict[tuple, Group] = {}
    for record in records:
        group = groups.get(record.key)
        if group is None:
            if isinstance(upstream, dict):
                verdict = upstream.get(record.key, Verdict("waiting"))
            else:
                verdict = judge(record, upstream)
            if verdict.state == "release":
                verdict = Verdict("releasable", _RELEASABLE)
            group = groups[record.key] = Group(
                record.tube, list(record.after), list(record.after_jobs),
                record.after_any, 0, [], verdict.state, verdict.reason,
            )  # fmt: skip
        group.held += 1
        group.ids.append(record.job_id)
    return sorted(groups.values(), key=lambda g: (g.tube, g.after, g.after_jobs))


def held_counts(conn: Connection) -> dict[str, int]:
    """Returns how many held jobs each tube has (index records, leased or not)."""
    indexes = sorted(t for t in conn.tubes() if t.startswith(HELD_PREFIX))
    answers = pipeline(conn, [b"stats-tube %s\r\n" % t.encode() for t in indexes])
    counts = {}
    for index, answer in zip(indexes, answers, strict=True):
        stats = answer.stats()
        if stats and _total(stats):
            counts[held_tube(index)] = _total(stats)
    return counts


def _total(stats: dict) -> int:
    states = ("ready", "delayed", "reserved", "buried")
    return sum(stats.get(f"current-jobs-{s}", 0) for s in states)


def held_groups(conn: Connection) -> list[Group]:
    """Returns what is held now: the groups running glow-deps show, and the rest.

    Records no glow-dep has adopted are read on a connection of their own, which
    is closed at once (beanstalkd then gives them back in one go). With no
    glow-dep running, records a stopped one had adopted are kicked back first.
    Leaves `conn` using the default tube.
    """
    views = read_views(conn)
    if not views:
        unbury_records(conn)
    reader = connect(conn.address)
    try:
        watch_index_tubes(reader, {"default"})
        records = take_records(reader)
        upstream = fetch_upstream(reader, records)
    finally:
        reader.close()
    # A record that can be read directly is adopted by no one: a view that lists
    # it is a dead glow-dep's, not yet expired.
    free = {r.job_id for r in records}
    groups = [g for view in views if not free & _ids_of(view) for g in view]
    groups += group_records(records, upstream)
    return sorted(groups, key=lambda g: (g.tube, g.after, g.after_jobs))


def _ids_of(view: list[Group]) -> set[int]:
    return {job_id for group in view for job_id in group.ids}


def read_views(conn: Connection) -> list[list[Group]]:
    """Returns the groups each running glow-dep holds; a dead one's are skipped.

    Leaves `conn` using the default tube.
    """
    views = []
    for tube in conn.tubes():
        if tube.startswith(VIEW_PREFIX):
            conn.use(tube)
            answer = pipeline(conn, [b"peek-delayed\r\n"])[0]
            if answer.word == b"FOUND":
                views.append(_groups_of(answer.data or b"{}"))
    conn.use("default")
    return views


def _groups_of(body: bytes) -> list[Group]:
    try:
        return [Group(**g) for g in json.loads(body).get("groups", [])]
    except (ValueError, TypeError, AttributeError, RecursionError):
        return []


def view_tube(host: str) -> str:
    """Returns the tube where this glow-dep process shows what it holds."""
    name = f"{VIEW_PREFIX}{host}.{os.getpid()}"
    return "".join(
        c if c.isascii() and c.isalnum() or c in "-.;_" else "_" for c in name
    )


def forget_held(conn: Connection, tube: str) -> int:
    """Deletes the held jobs of `tube` and their records; returns how many jobs.

    Records a running glow-dep has adopted are kicked back first; that glow-dep
    forgets a record once it finds it deleted.
    """
    conn.use(index_tube(tube))
    pipeline(conn, [b"kick %d\r\n" % 2**31])
    conn.use("default")
    reader = connect(conn.address, watch=index_tube(tube))
    try:
        records = take_records(reader)
        answers = pipeline(reader, [b"stats-job %d\r\n" % r.job_id for r in records])
        doomed = [
            r for r, a in zip(records, answers, strict=True) if is_held(a.stats())
        ]
        pipeline(reader, [b"delete %d\r\n" % r.job_id for r in doomed])
        reader.close()
        reader = connect(conn.address)
        pipeline(reader, [b"delete %d\r\n" % r.record_id for r in records])
    finally:
        reader.close()
    return len(doomed)
