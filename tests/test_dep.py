"""glow-dep and held jobs against a real beanstalkd, with listeners as processes."""

import json
import os
import signal
import subprocess
from pathlib import Path

import greenstalk
import pytest
from conftest import BIN, tool, wait_for

from glowtools.defaults import HOLD_DELAY


@pytest.fixture
def glow_dep(daemons):
    """Starts glow-dep -vv processes on the test's GLOW_QUEUE; kills them after."""
    return lambda: daemons("glow-dep", "-vv")


def put(tube: str, name: str, out: Path, *options: str, script: str = "") -> int:
    """Puts a job that writes `start name` and `end name` to `out`; returns its id."""
    script = script or f"echo start {name}; sleep 0.2; echo end {name}"
    args = ["-t", tube, "--out", str(out), *options, "--", "sh", "-c", script]
    result = tool("glow-put", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def events(out: Path) -> list[tuple[str, str]]:
    if not out.exists():
        return []
    return [tuple(line.split()) for line in out.read_text().splitlines()]


def ended(out: Path, count: int, timeout: float = 60) -> list[tuple[str, str]]:
    """Waits until `count` jobs have written their end line; returns the events."""
    what = f"{count} jobs to end"
    wait_for(lambda: sum(e[0] == "end" for e in events(out)) >= count, timeout, what)
    return events(out)


def assert_runs_after(evs: list, upstream: str, downstream: str) -> None:
    ends = [i for i, (word, name) in enumerate(evs) if word == "end" and
            name.startswith(upstream)]  # fmt: skip
    starts = [i for i, (word, name) in enumerate(evs) if word == "start" and
              name.startswith(downstream)]  # fmt: skip
    assert ends and starts and max(ends) < min(starts), evs


def assert_each_ran_once(evs: list) -> None:
    starts = [name for word, name in evs if word == "start"]
    assert len(starts) == len(set(starts)), evs


def held(client, job_id: int) -> bool:
    stats = client.stats_job(job_id)
    return stats["state"] == "delayed" and stats["delay"] == HOLD_DELAY


def held_records(client, tube: str) -> int:
    try:
        stats = client.stats_tube(f"GLOW_HELD.{tube}")
    except Exception:
        return 0
    states = ("ready", "delayed", "reserved", "buried")
    return sum(stats[f"current-jobs-{s}"] for s in states)


def held_ready(client, tube: str) -> int:
    return client.stats_tube(f"GLOW_HELD.{tube}")["current-jobs-ready"]


def pipeline_of_three(out: Path) -> None:
    for n in (1, 2, 3):
        put("a", f"a{n}", out)
    for n in (1, 2, 3):
        put("b", f"b{n}", out, "--after", "a")
    for n in (1, 2, 3):
        put("c", f"c{n}", out, "--after", "b")


def test_three_tube_pipeline_runs_tube_after_tube(beanstalkd, client, listen,
                                                  glow_dep, tmp_path):  # fmt: skip
    out = tmp_path / "out"
    pipeline_of_three(out)

    glow_dep()
    listen("-c", "3")
    evs = ended(out, 9)

    assert_runs_after(evs, "a", "b")
    assert_runs_after(evs, "b", "c")
    assert_each_ran_once(evs)
    assert held_records(client, "b") == held_records(client, "c") == 0


def test_held_jobs_are_delayed_in_their_tube_beside_an_index_record(beanstalkd, client):
    text = '{"cmd":"true","tube":"t"}\n{"cmd":"true","tube":"t","after":["u"]}\n'
    result = tool("glow-put", input=text)

    assert result.returncode == 0, result.stderr
    plain, waiting = map(int, result.stdout.split())
    assert client.stats_job(plain)["state"] == "ready"
    assert held(client, waiting)
    client.watch("GLOW_HELD.t")
    record = json.loads(client.reserve(timeout=0).body)
    assert (record["id"], record["after"]) == (waiting, ["u"])


def test_a_failed_upstream_job_blocks_downstream_until_it_is_deleted(
    beanstalkd, client, listen, glow_dep, tmp_path
):
    out = tmp_path / "out"
    failed = put("a", "a1", out, script="echo start a1; exit 3")
    downstream = put("b", "b1", out, "--after", "a")

    dep = glow_dep()
    listen()
    dep.wait_log("tube b: 1 held job blocked: upstream tube a has 1 buried job")
    graph = "b after a: 1 held, blocked: upstream tube a has 1 buried job\n"

    wait_for(lambda: tool("glow-dep", "--graph").stdout == graph, 20, "the graph")
    assert held(client, downstream)
    client.delete(failed)
    assert ended(out, 1)[-1] == ("end", "b1")
    assert "tube b: 1 held job no longer blocked" in dep.log


def test_a_failed_upstream_job_that_is_kicked_and_succeeds_unblocks_downstream(
    beanstalkd, client, listen, glow_dep, tmp_path
):
    out, flag = tmp_path / "out", tmp_path / "flag"
    script = f"echo start a1; test -e {flag} && echo end a1"
    failed = put("a", "a1", out, script=script)
    put("b", "b1", out, "--after", "a")
    dep = glow_dep()
    listen()
    dep.wait_log("blocked: upstream tube a has 1 buried job")

    flag.touch()
    client.kick_job(failed)
    evs = ended(out, 2)

    assert_runs_after(evs, "a", "b")


def test_after_any_runs_once_upstream_has_settled_failed_or_not(
    beanstalkd, client, listen, glow_dep, tmp_path
):
    out = tmp_path / "out"
    failed = put("a", "a1", out, script="echo start a1; exit 3")
    put("b", "b1", out, "--after", "a", "--after-any")

    glow_dep()
    listen()

    assert ended(out, 1)[-1] == ("end", "b1")
    assert client.stats_job(failed)["state"] == "buried"


def test_after_job_chains_jobs_from_a_shell_script(beanstalkd, listen, glow_dep,
                                                   tmp_path):  # fmt: skip
    out = tmp_path / "out"
    script = f"""
        set -e
        job() {{
            name=$1; shift
            glow-put --out {out} "$@" -- \
                sh -c 'echo start $0; sleep 0.2; echo end $0' "$name"
        }}
        one=$(job x1 -t x)
        two=$(job y2 -t y --after-job "$one")
        job z3 -t x --after-job "$two"
    """
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True)
    assert result.returncode == 0, result.stderr

    glow_dep()
    listen("-c", "3")
    evs = ended(out, 3)

    assert_runs_after(evs, "x1", "y2")
    assert_runs_after(evs, "y2", "z3")


def test_a_buried_upstream_job_blocks_jobs_after_it(beanstalkd, client, listen,
                                                    glow_dep, tmp_path):  # fmt: skip
    out = tmp_path / "out"
    failed = put("a", "a1", out, script="echo start a1; exit 3")
    downstream = put("b", "b1", out, "--after-job", str(failed))

    dep = glow_dep()
    listen()

    dep.wait_log(f"tube b: 1 held job blocked: upstream job {failed} is buried")
    assert held(client, downstream)


def test_a_rules_file_gives_jobs_of_a_listed_tube_their_upstream(
    beanstalkd, client, tmp_path
):
    rules = tmp_path / "deps.json"
    rules.write_text('{"load": ["extract", "transform"]}')
    extract = int(tool("glow-put", "-t", "extract", "--", "true").stdout)

    by_env = tool("glow-put", "-t", "load", "--", "true", env={"GLOW_DEPS": str(rules)})
    by_flag = tool("glow-put", "--deps", str(rules), "-t", "load", "--", "true")
    other = tool("glow-put", "--deps", str(rules), "-t", "other", "--", "true")

    for result in (by_env, by_flag):
        assert result.returncode == 0, result.stderr
        assert held(client, int(result.stdout))
        body = json.loads(client.peek(int(result.stdout)).body)
        assert body["after"] == ["extract", "transform"]
    assert client.stats_job(int(other.stdout))["state"] == "ready"
    client.delete(extract)
    released = tool("glow-dep", "--once")
    assert sorted(map(int, released.stdout.split())) == [
        int(by_env.stdout),
        int(by_flag.stdout),
    ]


def test_a_rules_file_with_a_cycle_is_refused_naming_the_cycle(
    beanstalkd, client, tmp_path
):
    rules = tmp_path / "deps.json"
    rules.write_text('{"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}')

    result = tool("glow-put", "--deps", str(rules), "-t", "d", "--", "true")

    assert (result.returncode, result.stdout) == (7, "")
    assert result.stderr == (
        f"glow-put: rules file {rules}: tubes wait on each other in a cycle: "
        "a -> b -> c -> a (remove one of these rules)\n"
    )
    assert client.stats()["current-jobs-delayed"] == 0


def test_a_job_waiting_on_its_own_tube_is_refused(beanstalkd, client):
    result = tool("glow-put", "-t", "a", "--after", "a", "--", "true")

    assert result.returncode == 4
    assert result.stderr == (
        "glow-put: the job: waits on its own tube 'a', which then never drains\n"
    )


def test_glow_dep_killed_mid_pipeline_loses_and_repeats_nothing(
    beanstalkd, client, listen, glow_dep, tmp_path
):
    out = tmp_path / "out"
    pipeline_of_three(out)
    first = glow_dep()
    listen("-c", "3")
    first.wait_log("tube b: released")

    first.proc.kill()
    ended(out, 6)
    graph = tool("glow-dep", "--graph", "--json").stdout.splitlines()
    (c_jobs,) = [json.loads(line)["ids"] for line in graph if '"c"' in line]
    assert len(c_jobs) == 3
    assert all(held(client, job_id) for job_id in c_jobs)
    glow_dep()
    evs = ended(out, 9)

    assert_runs_after(evs, "b", "c")
    assert_each_ran_once(evs)


def test_a_record_whose_job_was_already_released_is_dropped_not_released_again(
    beanstalkd, client
):
    # As if a glow-dep had released both jobs and died before deleting the records.
    kicked = int(tool("glow-put", "-t", "b", "--after", "a", "--", "true").stdout)
    delayed = tool("glow-put", "-t", "b", "--after", "a", "--delay", "600", "--",
                   "true")  # fmt: skip
    delayed = int(delayed.stdout)
    client.kick_job(kicked)
    client.release(client.reserve_job(delayed), delay=600)

    result = tool("glow-dep", "--once")

    assert (result.returncode, result.stdout) == (0, "")
    assert held_records(client, "b") == 0
    assert client.stats_job(kicked)["kicks"] == 1
    stats = client.stats_job(delayed)
    assert (stats["state"], stats["delay"], stats["releases"]) == ("delayed", 600, 1)


def test_held_jobs_survive_a_beanstalkd_restart_with_its_binlog(
    beanstalkd_factory, monkeypatch, listen, glow_dep, tmp_path
):
    server = beanstalkd_factory(binlog=True)
    monkeypatch.setenv("GLOW_QUEUE", server.address)
    out = tmp_path / "out"
    pipeline_of_three(out)
    dep = glow_dep()
    dep.wait_log("tube b: 3 held jobs waiting")

    server.restart()
    dep.wait_log("retrying in")
    with server.client() as conn:
        assert held_records(conn, "b") == held_records(conn, "c") == 3
    listen("-c", "3")
    evs = ended(out, 9)

    assert_runs_after(evs, "a", "b")
    assert_runs_after(evs, "b", "c")
    assert_each_ran_once(evs)


def test_two_glow_deps_release_each_held_job_exactly_once(beanstalkd, client,
                                                          glow_dep):  # fmt: skip
    upstream = int(tool("glow-put", "-t", "a", "--", "true").stdout)
    glow_dep(), glow_dep()
    jobs = "".join(
        json.dumps({"cmd": "true", "tube": "b", "delay": 600 * (n % 2)}) + "\n"
        for n in range(400)
    )
    ids = tool("glow-put", "--after", "a", input=jobs).stdout.split()

    client.delete(upstream)
    wait_for(lambda: held_records(client, "b") == 0, 30, "the records to go")

    for job_id in map(int, ids):
        stats = client.stats_job(job_id)
        assert stats["kicks"] + stats["releases"] == 1, stats
        assert not held(client, job_id)


def test_the_users_delay_still_applies_after_release(beanstalkd, client):
    job_id = int(tool("glow-put", "-t", "b", "--after", "a", "--delay", "600",
                      "--", "true").stdout)  # fmt: skip

    released = tool("glow-dep", "--once")

    assert released.stdout == f"{job_id}\n"
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["delay"]) == ("delayed", 600)


def test_glow_dep_stopped_means_held_jobs_wait(beanstalkd, client, listen, tmp_path):
    out = tmp_path / "out"
    downstream = put("b", "b1", out, "--after", "a")
    listen()

    # No glow-dep runs: the job waits although its upstream tube never existed.
    assert tool("glow-dep", "--graph").stdout == (
        "b after a: 1 held, releasable: its upstream has drained; "
        "no glow-dep has released it yet\n"
    )
    assert held(client, downstream)


GRAPH = """\
b after a: 1 held, waiting: upstream tube a has jobs (1 ready)
c after job {a}: 1 held, waiting: upstream job {a} is ready
d after a (settled, failed or not): 2 held, waiting: upstream tube a has jobs (1 ready)
"""


@pytest.mark.parametrize("running", [False, True], ids=["alone", "beside-glow-dep"])
def test_graph_prints_what_is_held_and_on_what(beanstalkd, glow_dep, running):
    a = int(tool("glow-put", "-t", "a", "--", "true").stdout)
    tool("glow-put", "-t", "b", "--after", "a", "--", "true")
    tool("glow-put", "-t", "c", "--after-job", str(a), "--", "true")
    for _ in range(2):
        tool("glow-put", "-t", "d", "--after", "a", "--after-any", "--", "true")
    if running:
        dep = glow_dep()
        dep.wait_log("tube d: 2 held jobs waiting")

    expected = GRAPH.format(a=a)
    wait_for(lambda: tool("glow-dep", "--graph").stdout == expected, 20, "the graph")
    lines = tool("glow-dep", "--graph", "--json").stdout.splitlines()

    groups = [json.loads(line) for line in lines]
    assert [(g["tube"], g["held"], g["state"]) for g in groups] == [
        ("b", 1, "waiting"),
        ("c", 1, "waiting"),
        ("d", 2, "waiting"),
    ]
    assert groups[1]["after_jobs"] == [a]
    assert (groups[2]["after"], groups[2]["after_any"]) == (["a"], True)


def test_a_held_job_deleted_by_hand_drops_its_record(beanstalkd, client):
    job_id = int(tool("glow-put", "-t", "b", "--after", "a", "--", "true").stdout)
    client.delete(job_id)

    result = tool("glow-dep", "--once")

    assert (result.returncode, result.stdout) == (0, "")
    assert held_records(client, "b") == 0


def test_glow_dep_stops_on_sigint_and_gives_its_records_back(beanstalkd, client,
                                                             glow_dep):  # fmt: skip
    tool("glow-put", "-t", "a", "--", "true")
    tool("glow-put", "-t", "b", "--after", "a", "--", "true")
    dep = glow_dep()
    dep.wait_log("tube b: 1 held job waiting")

    dep.proc.send_signal(signal.SIGINT)

    assert dep.proc.wait(10) == 0
    wait_for(lambda: held_ready(client, "b") == 1, 10, "the record to be ready")


def test_a_glow_dep_that_dies_has_its_held_jobs_taken_over_by_another(
    beanstalkd, client, glow_dep
):
    upstream = int(tool("glow-put", "-t", "a", "--", "true").stdout)
    jobs = '{"cmd":"true","tube":"b"}\n' * 20
    ids = tool("glow-put", "--after", "a", input=jobs).stdout.split()
    first = glow_dep()
    first.wait_log("tube b: 20 held jobs waiting")
    second = glow_dep()

    first.proc.kill()
    client.delete(upstream)

    second.wait_log("a glow-dep stopped", timeout=60)
    wait_for(lambda: held_records(client, "b") == 0, 30, "the records to go")
    assert not any(held(client, int(job_id)) for job_id in ids)


def test_forget_held_deletes_a_tubes_held_jobs_and_their_records(beanstalkd, client):
    from glowtools import hold
    from glowtools.connection import connect

    tool("glow-put", "-t", "a", "--", "true")
    ids = [
        int(tool("glow-put", "-t", "b", "--after", "a", "--", "true").stdout)
        for _ in range(3)
    ]
    other = int(tool("glow-put", "-t", "c", "--after", "a", "--", "true").stdout)
    tool("glow-dep", "--once")

    with connect(beanstalkd.address) as conn:
        assert hold.forget_held(conn, "b") == 3
        assert hold.held_counts(conn) == {"c": 1}
    for job_id in ids:
        with pytest.raises(greenstalk.NotFoundError):
            client.stats_job(job_id)
    assert held(client, other)


def test_interrupting_glow_put_leaves_no_held_job_without_its_record(
    beanstalkd, client
):
    jobs = '{"cmd":"true","tube":"b","after":["a"]}\n' * 5000
    proc = subprocess.Popen(
        [str(BIN / "glow-put")], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    proc.stdin.write(jobs.encode())
    proc.stdin.close()
    wait_for(lambda: "b" in client.tubes(), 30, "the first puts")

    proc.send_signal(signal.SIGINT)
    proc.wait(30)

    delayed = client.stats_tube("b")["current-jobs-delayed"]
    assert delayed == held_records(client, "b"), proc.returncode


def test_held_jobs_waiting_on_each_other_are_reported_as_a_cycle(beanstalkd, glow_dep):
    tool("glow-put", "-t", "a", "--after", "b", "--", "true")
    tool("glow-put", "-t", "b", "--after", "a", "--", "true")

    dep = glow_dep()
    graph = tool("glow-dep", "--graph")

    dep.wait_log("held jobs wait on each other in a cycle: ")
    assert graph.stderr == (
        "glow-dep: held jobs wait on each other in a cycle: a -> b -> a; they are "
        "never released (delete some of them)\n"
    )


def test_a_batch_whose_jobs_would_wait_on_each_other_is_refused(beanstalkd, client):
    text = (
        '{"cmd":"true","tube":"a","after":["b"]}\n'
        '{"cmd":"true","tube":"b","after":["a"]}\n'
    )

    result = tool("glow-put", input=text)

    assert (result.returncode, result.stdout) == (4, "")
    assert result.stderr == (
        "glow-put: the batch: its jobs would wait on each other forever: "
        "a -> b -> a (each tube waits on the next)\n"
    )
