"""glow-listen against a real beanstalkd: running, failing, tubes, leases, signals."""

import json
import os
import re
import signal
import time

import greenstalk
import pytest
from conftest import error_reports, wait_for
from support import gone, put


def state(client, job_id: int) -> str:
    return client.stats_job(job_id)["state"]


def test_successful_job_is_deleted_and_its_output_appended(listen, client, tmp_path):
    out = tmp_path / "logs" / "out.txt"
    out.parent.mkdir()
    out.write_text("before\n")
    listen()

    job_id = put(
        "-t", "t", "--out", str(out), "--", "sh", "-c", "echo one; echo two >&2"
    )

    wait_for(lambda: gone(client, job_id), what="the job to be deleted")
    assert out.read_text() in ("before\none\ntwo\n", "before\ntwo\none\n")


def test_separate_stdout_and_stderr_files_get_their_own_stream(
    listen, client, tmp_path
):
    listen()
    job_id = put(
        "-t", "t", "--stdout", str(tmp_path / "o"), "--stderr", str(tmp_path / "new/e"),
        "--", "sh", "-c", "echo out; echo err >&2",
    )  # fmt: skip

    wait_for(lambda: gone(client, job_id))
    assert (tmp_path / "o").read_text() == "out\n"
    assert (tmp_path / "new/e").read_text() == "err\n"


def test_failed_job_is_buried_and_reported_with_its_output_tail(listen, client):
    listener = listen()
    script = "for i in $(seq 1 30); do echo line$i; done; echo oops >&2; exit 3"

    job_id = put("-t", "work", "--", "sh", "-c", script)

    (report,) = error_reports(client, 1)
    assert state(client, job_id) == "buried"
    assert report["id"] == job_id
    assert (report["tube"], report["cmd"], report["exit_code"]) == ("work", "sh", 3)
    assert report["args"] == ["-c", script]
    assert report["error"] == "exit 3"
    assert report["host"] == os.uname().nodename
    assert report["stderr_tail"] == "oops"
    assert report["stdout_tail"].splitlines() == [f"line{i}" for i in range(11, 31)]
    assert f"job {job_id} (tube work) failed: exit 3" in listener.log


def test_job_killed_by_a_signal_reports_the_signal(listen, client):
    listen()
    job_id = put("-t", "t", "--", "sh", "-c", "kill -KILL $$")

    (report,) = error_reports(client, 1)
    assert (report["id"], report["signal"], report["exit_code"]) == (job_id, 9, None)
    assert report["error"] == "killed by SIGKILL"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--", "no-such-command-x"], "command 'no-such-command-x' not found"),
        (["--workdir", "/nonexistent/dir", "--", "true"],
         "workdir /nonexistent/dir does not exist"),
        (["--out", "/proc/none/x", "--", "true"],
         "cannot open stdout file /proc/none/x: No such file or directory"),
    ],
    ids=["missing-command", "missing-workdir", "unwritable-output"],
)  # fmt: skip
def test_job_that_cannot_start_is_buried_with_the_reason(listen, client, args, error):
    listen()
    job_id = put("-t", "t", *args)

    (report,) = error_reports(client, 1)
    assert (report["id"], report["error"]) == (job_id, error)
    assert state(client, job_id) == "buried"


def test_garbage_body_is_buried_and_reported_and_the_listener_carries_on(
    listen, client, beanstalkd
):
    listen()
    client.use("t")
    garbage = client.put(b"\xff\x00 not a job")
    valid = put("-t", "t", "--", "true")

    (report,) = error_reports(client, 1)
    assert report["id"] == garbage
    assert report["error"].startswith("body: is not JSON")
    assert state(client, garbage) == "buried"
    wait_for(lambda: gone(client, valid))


def test_env_is_added_to_the_listeners_environment(listen, client, tmp_path):
    out = tmp_path / "env.txt"
    listen(env={"FROM_LISTENER": "base"})
    job_id = put(
        "-t", "t", "--env", "FROM_JOB=job", "--out", str(out), "--",
        "sh", "-c", 'echo "$FROM_LISTENER $FROM_JOB $GLOW_JOB_ID"',
    )  # fmt: skip

    wait_for(lambda: gone(client, job_id))
    assert out.read_text() == f"base job {job_id}\n"


def test_job_runs_in_its_workdir_without_a_shell(listen, client, tmp_path):
    out = tmp_path / "pwd.txt"
    listen()
    job_id = put("-t", "t", "--workdir", str(tmp_path), "--out", str(out), "--",
                 "echo", "$HOME", "*")  # fmt: skip

    wait_for(lambda: gone(client, job_id))
    assert out.read_text() == "$HOME *\n"


def test_original_glow_body_runs(listen, client, tmp_path):
    out = tmp_path / "go.out"
    listen()
    client.use("legacy")
    body = {
        "cmd": "sh", "args": ["-c", "echo $GREETING"], "tube": "legacy",
        "pri": 0, "delay": 0, "workdir": str(tmp_path), "stdout": str(out),
        "stderr": str(out), "mailto": "", "User": os.environ.get("USER", "root"),
        "Env": ["GREETING=hello"],
    }  # fmt: skip
    job_id = client.put(json.dumps(body).encode())

    wait_for(lambda: gone(client, job_id))
    assert out.read_text() == "hello\n"


def test_tubes_and_exclude_choose_what_is_reserved(listen, client):
    listen("--tubes", "keep-*,other", "--exclude", "keep-not")
    kept = put("-t", "keep-1", "--", "true")
    excluded = put("-t", "keep-not", "--", "true")
    unlisted = put("-t", "elsewhere", "--", "true")

    wait_for(lambda: gone(client, kept))
    time.sleep(1.5)
    assert state(client, excluded) == "ready"
    assert state(client, unlisted) == "ready"


def test_internal_tubes_are_never_reserved(listen, client):
    listen()
    client.use("GLOW_private")
    internal = client.put(json.dumps({"cmd": "true", "tube": "x"}).encode())
    plain = put("-t", "plain", "--", "true")

    wait_for(lambda: gone(client, plain))
    time.sleep(1.5)
    assert state(client, internal) == "ready"


def test_a_new_tube_is_picked_up_without_restart(listen, client):
    listen()
    time.sleep(1)
    job_id = put("-t", "brand-new-tube", "--", "true")

    wait_for(lambda: gone(client, job_id), timeout=10)


def test_a_new_tube_wakes_an_idle_slot_and_wake_jobs_never_fail(listen, client):
    listener = listen("-c", "2")
    pid = listener.proc.pid
    for n in range(3):
        time.sleep(0.3)
        job_id = put("-t", f"woken-{n}", "--", "true")
        listener.wait_log(f"job {job_id} (tube woken-{n}) completed")

    listener.wait_log("woken to watch a new tube")
    assert " failed" not in listener.log and "rejected" not in listener.log
    assert client.stats_tube("GLOW_ERRORS")["total-jobs"] == 0
    wake = [t for t in client.tubes() if t.startswith("GLOW_WAKE.")]
    assert wake and wake[0].endswith(f".{pid}")
    assert client.stats_tube(wake[0])["current-jobs-buried"] == 0
    assert listener.stop() == 0
    wait_for(lambda: wake[0] not in client.tubes(), what="the wake tube to go")


def test_concurrency_runs_jobs_at_the_same_time(listen, client, tmp_path):
    listen("--concurrency", "2")
    a, b = tmp_path / "a", tmp_path / "b"
    # Each job waits for the other's file: both finish only if they overlap.
    first = put(
        "-t",
        "t",
        "--",
        "sh",
        "-c",
        f"touch {a}; while [ ! -e {b} ]; do sleep 0.05; done",
    )
    second = put(
        "-t",
        "t",
        "--",
        "sh",
        "-c",
        f"touch {b}; while [ ! -e {a} ]; do sleep 0.05; done",
    )

    wait_for(lambda: gone(client, first) and gone(client, second), timeout=20)


def test_running_job_is_touched_so_its_ttr_acts_as_a_lease(listen, client, beanstalkd):
    listen()
    job_id = put("-t", "t", "--ttr", "1", "--", "sleep", "4")
    wait_for(lambda: state(client, job_id) == "reserved")

    client.watch("t")
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=3)
    assert state(client, job_id) == "reserved"
    wait_for(lambda: gone(client, job_id))


def test_sigint_lets_the_running_job_finish_then_exits_0(listen, client, tmp_path):
    listener = listen()
    done = tmp_path / "done"
    job_id = put("-t", "t", "--", "sh", "-c", f"sleep 1.5; touch {done}")
    listener.wait_log(f"job {job_id} (tube t) running")

    assert listener.stop(signal.SIGINT) == 0
    assert done.exists()
    assert gone(client, job_id)


def test_sigterm_kills_the_tree_and_releases_the_job_at_once(listen, client, tmp_path):
    listener = listen()
    marker = f"glowtest-{os.getpid()}-{time.monotonic_ns()}"
    script = f"sleep 300 & exec -a {marker} sleep 300"
    job_id = put("-t", "t", "--ttr", "600", "--", "bash", "-c", script)
    listener.wait_log(f"job {job_id} (tube t) running")
    wait_for(lambda: _processes_named(marker), what="the job's process")

    assert listener.stop(signal.SIGTERM) == 0
    assert state(client, job_id) == "ready"
    assert _processes_named(marker) == []
    assert f"job {job_id} (tube t) released" in listener.log


def _processes_named(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(marker.encode()):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_sighup_reopens_the_log_file(beanstalkd, tmp_path, listen):
    log = tmp_path / "listen.log"
    listener = listen("--log", str(log))
    wait_for(lambda: log.exists() and "slot(s)" in log.read_text())
    log.rename(tmp_path / "listen.log.1")

    listener.proc.send_signal(signal.SIGHUP)
    put("-t", "t", "--", "true")

    wait_for(lambda: log.exists() and "completed" in log.read_text())


@pytest.fixture
def quiet_listener(daemons):
    """A glow-listen without -v: INFO lines only."""
    return daemons("glow-listen", "--tubes", "t", ready="slot(s)")


def test_a_short_job_gets_one_log_line_when_it_ends(quiet_listener, client):
    job_id = put("-t", "t", "--", "echo", "hi")

    line = quiet_listener.wait_log(f"job {job_id} (tube t) completed in")
    assert f"job {job_id} (tube t) running" not in line
    assert re.search(rf"job {job_id} \(tube t\) completed in [0-9.]+ s: echo hi", line)


def test_a_long_job_is_said_to_be_running_after_a_second(quiet_listener, client):
    job_id = put("-t", "t", "--", "sleep", "3")

    quiet_listener.wait_log(f"job {job_id} (tube t) running: sleep 3")
    assert "completed" not in quiet_listener.log
    quiet_listener.wait_log(f"job {job_id} (tube t) completed in")


def test_verbose_says_a_short_jobs_start_at_once(listen, client):
    listener = listen()
    job_id = put("-t", "t", "--", "echo", "hi")

    log = listener.wait_log(f"job {job_id} (tube t) completed in")
    running = log.index(f"job {job_id} (tube t) running: echo hi")
    assert running < log.index(f"job {job_id} (tube t) completed in")


def test_listener_survives_beanstalkd_going_away_and_coming_back(
    beanstalkd_factory, tmp_path, monkeypatch, listen
):
    server = beanstalkd_factory(binlog=True)
    monkeypatch.setenv("GLOW_QUEUE", server.address)
    listener = listen()
    server.stop()
    listener.wait_log("retrying in")

    server.start()
    job_id = put("-t", "t", "--", "true")

    with server.client() as conn:
        wait_for(lambda: gone(conn, job_id), timeout=40)
    assert listener.proc.poll() is None
