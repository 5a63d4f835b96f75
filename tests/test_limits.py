"""Limits, timeouts and leftovers: real jobs, run as a user made by the test,
that go over each limit; the listener and other jobs carry on."""

import json
from pathlib import Path

import pytest
from conftest import error_reports, wait_for
from support import gone, needs_root, put, user_factory

pytestmark = needs_root
PYTHON = "/usr/bin/python3"
HOG = "b = b'x' * (300 << 20); print(len(b))"


@pytest.fixture
def make_user():
    yield from user_factory()


def processes_of(uid: int) -> list[str]:
    """Returns the command lines of the live processes a user owns."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or entry.stat().st_uid != uid:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            found.append((entry / "cmdline").read_bytes().replace(b"\0", b" "))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return [cmd.decode(errors="replace").strip() for cmd in found]


@pytest.fixture
def user(make_user):
    return make_user()


def failure_of(client, job_id: int) -> dict:
    (report,) = error_reports(client, 1, timeout=30)
    assert report["id"] == job_id
    assert client.stats_job(job_id)["state"] == "buried"
    return report


@pytest.mark.parametrize("cgroups", ["--cgroups", "--no-cgroups"])
def test_memory_limit_stops_the_job_and_says_so(listen, client, user, cgroups):
    listener = listen("--allow-user", user.name, cgroups)
    job_id = put("-t", "t", "--user", user.name, "--memory", "64M", "--",
                 PYTHON, "-c", HOG)  # fmt: skip

    report = failure_of(client, job_id)

    if cgroups == "--cgroups":
        assert "cgroup v1" in listener.log or "cgroup v2" in listener.log
        assert report["error"] == "memory limit 64M exceeded (killed by SIGKILL)"
    else:
        assert "cgroups not used: memory and nproc limits by rlimits" in listener.log
        assert report["error"] == "memory limit 64M reached (exit 1)"
    after = put("-t", "t", "--user", user.name, "--", "true")
    wait_for(lambda: gone(client, after), what="the next job to run")


def test_cpu_time_limit_stops_a_busy_job(listen, client, user):
    listen("--allow-user", user.name)
    job_id = put("-t", "t", "--user", user.name, "--cpu-time", "1", "--",
                 PYTHON, "-c", "while True: pass")  # fmt: skip

    report = failure_of(client, job_id)

    assert report["error"] == "cpu-time limit 1 s exceeded (killed by SIGXCPU)"


def test_nofile_limit_stops_a_job_that_opens_too_many_files(listen, client, user):
    listen("--allow-user", user.name)
    script = "files = [open('/dev/null') for _ in range(100)]"
    job_id = put("-t", "t", "--user", user.name, "--nofile", "16", "--",
                 PYTHON, "-c", script)  # fmt: skip

    report = failure_of(client, job_id)

    assert report["error"] == "nofile limit 16 reached (exit 1)"
    assert "Too many open files" in report["stderr_tail"]


@pytest.mark.parametrize("cgroups", ["--cgroups", "--no-cgroups"])
def test_nproc_limit_stops_a_job_that_forks_too_much(listen, client, user, cgroups):
    listen("--allow-user", user.name, cgroups)
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done; wait"
    job_id = put("-t", "t", "--user", user.name, "--nproc", "4", "--",
                 "sh", "-c", script)  # fmt: skip

    report = failure_of(client, job_id)

    assert report["error"].startswith("nproc limit 4 reached (exit ")
    wait_for(lambda: not processes_of(user.uid), what="the job's sleeps to end")


def test_nice_is_applied_to_the_job(listen, client, user):
    listen("--allow-user", user.name)
    out = user.folder / "nice.out"
    job_id = put("-t", "t", "--user", user.name, "--nice", "7", "--out", str(out),
                 "--", "nice")  # fmt: skip

    wait_for(lambda: gone(client, job_id))
    assert out.read_text() == "7\n"


def test_nice_below_the_listeners_is_refused(listen, client):
    listen()
    job_id = put("-t", "t", "--nice", "-5", "--", "true")

    report = failure_of(client, job_id)

    assert report["error"] == (
        "job asks for nice -5; jobs here run at 0 or nicer (give --nice 0 or more)"
    )


def test_timeout_kills_children_that_ignore_sigterm(listen, client, user):
    listener = listen("--allow-user", user.name)
    script = "trap '' TERM; sleep 301 & sleep 302 & wait"
    job_id = put("-t", "t", "--user", user.name, "--timeout", "1", "--",
                 "sh", "-c", script)  # fmt: skip

    report = failure_of(client, job_id)

    assert report["error"] == "timeout (killed by SIGKILL)"
    assert report["reason"] == "timeout"
    assert f"job {job_id} (tube t) failed: timeout" in listener.log
    assert not processes_of(user.uid)


def test_timeout_is_independent_of_ttr(listen, client):
    listen()
    job_id = put("-t", "t", "--ttr", "1", "--timeout", "30", "--", "sleep", "3")

    wait_for(lambda: gone(client, job_id), what="the job to outlive its ttr")


def test_detached_children_do_not_outlive_their_job(listen, client, user):
    listen("--allow-user", user.name)
    script = "setsid sleep 303 & (setsid sh -c 'sleep 304' &) ; echo started"
    job_id = put("-t", "t", "--user", user.name, "--", "sh", "-c", script)

    wait_for(lambda: gone(client, job_id))
    wait_for(lambda: not processes_of(user.uid), what="detached sleeps to end")


def test_detached_children_of_a_job_with_limits_end_with_it(listen, client, user):
    listen("--allow-user", user.name)
    script = "setsid sleep 305 > /dev/null 2>&1 & echo started"
    job_id = put("-t", "t", "--user", user.name, "--memory", "256M", "--nproc", "20",
                 "--", "sh", "-c", script)  # fmt: skip

    wait_for(lambda: gone(client, job_id))
    wait_for(lambda: not processes_of(user.uid), what="detached sleep to end")


def test_a_tube_cap_leaves_the_other_slots_to_other_tubes(listen, client, tmp_path):
    listen("-c", "2", "--limit", "solo=1")
    go = tmp_path / "go"
    wait_go = f"until [ -e {go} ]; do sleep 0.05; done"
    first = put("-t", "solo", "--", "sh", "-c", wait_go)
    wait_for(lambda: client.stats_job(first)["state"] == "reserved")
    second = put("-t", "solo", "--", "true")
    other = put("-t", "other", "--", "true")

    wait_for(lambda: gone(client, other), what="the other tube's job to run")
    assert client.stats_job(second)["state"] == "ready"
    go.touch()
    wait_for(lambda: gone(client, first) and gone(client, second))


def test_limits_given_to_glow_put_reach_the_body(beanstalkd, client):
    job_id = put(
        "-t", "t", "--memory", "512M", "--cpu-time", "60", "--nofile", "64",
        "--nproc", "10", "--nice", "5", "--timeout", "9.5", "--", "true",
    )  # fmt: skip

    body = json.loads(client.peek(job_id).body)
    assert body["limits"] == {
        "memory": 512 << 20, "cpu_time": 60, "nofile": 64, "nproc": 10, "nice": 5
    }  # fmt: skip
    assert body["timeout"] == 9.5
