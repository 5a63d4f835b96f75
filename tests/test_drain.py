"""glow-drain against a real beanstalkd: every state out, the same jobs back in."""

import json
import os
import subprocess

from conftest import BIN, tool

BEANSTALKD_STATES = ("ready", "delayed", "buried", "reserved")


def put(*args: str) -> int:
    result = tool("glow-put", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def bury(client, job_id: int) -> int:
    client.bury(client.reserve_job(job_id))
    return job_id


def counts(client, tube: str) -> dict:
    stats = client.stats_tube(tube)
    return {s: stats[f"current-jobs-{s}"] for s in BEANSTALKD_STATES}


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_drain_writes_every_state_and_put_brings_the_same_jobs_back(beanstalkd, client):
    put("-t", "nightly", "--pri", "5", "--ttr", "30", "--", "echo", "ready")
    put("-t", "nightly", "--delay", "600", "--", "echo", "delayed")
    put("-t", "nightly", "--after", "upstream", "--", "echo", "held")
    put("-t", "upstream", "--", "true")
    bury(client, put("-t", "nightly", "--", "echo", "failed"))

    result = tool("glow-drain", "nightly")

    assert result.returncode == 0, result.stderr
    drained = lines(result.stdout)
    assert [job["args"] for job in drained] == [
        ["ready"], ["delayed"], ["held"], ["failed"]
    ]  # fmt: skip
    assert drained[0]["pri"] == 5 and drained[0]["ttr"] == 30
    assert 590 <= drained[1]["delay"] <= 600
    assert drained[2]["after"] == ["upstream"]
    assert "nightly: 4 jobs drained (1 ready, 1 delayed, 1 held, 1 buried)" in (
        result.stderr
    )
    assert "nightly" not in client.tubes()
    assert "GLOW_HELD.nightly" not in client.tubes()

    back = tool("glow-put", input=result.stdout)

    assert back.returncode == 0, back.stderr
    assert counts(client, "nightly") == {
        "ready": 2, "delayed": 2, "buried": 0, "reserved": 0
    }  # fmt: skip
    assert tool("glow-drain", "--dry-run", "nightly").stdout.count("\n") == 4


def test_dry_run_prints_the_lines_and_takes_nothing(beanstalkd, client):
    put("-t", "nightly", "--", "echo", "one")
    put("-t", "nightly", "--delay", "60", "--", "echo", "two")
    put("-t", "other", "--", "echo", "not-this")
    bury(client, put("-t", "nightly", "--", "echo", "three"))
    before = counts(client, "nightly")

    result = tool("glow-drain", "--dry-run", "nightly")

    assert result.returncode == 0, result.stderr
    assert [job["args"] for job in lines(result.stdout)] == [
        ["one"], ["two"], ["three"]
    ]  # fmt: skip
    assert counts(client, "nightly") == before
    assert "nightly: 3 jobs would be drained" in result.stderr


def test_a_closed_stdout_stops_the_drain_and_loses_no_job(beanstalkd, client):
    batch = "".join(f'{{"cmd":"echo","args":["{n}"]}}\n' for n in range(50))
    assert tool("glow-put", "-t", "nightly", input=batch).returncode == 0
    read_end, write_end = os.pipe()
    drain = subprocess.Popen(
        [str(BIN / "glow-drain"), "nightly"],
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = reader.readline()
    stderr = drain.communicate(timeout=30)[1].decode()

    assert drain.returncode == 8, stderr
    assert "stdout was closed after" in stderr
    assert "the jobs after it are still in the tube" in stderr
    left = counts(client, "nightly")["ready"]
    written = int(stderr.split("after ")[1].split(" job")[0])
    assert json.loads(first)["args"] == ["0"]
    assert written + left == 50
    assert client.stats_tube("nightly")["pause-time-left"] == 0


def test_reserved_jobs_are_left_running_with_a_warning(beanstalkd, client):
    put("-t", "nightly", "--", "echo", "running")
    put("-t", "nightly", "--", "echo", "waiting")
    client.watch("nightly")
    running = client.reserve(timeout=5)

    result = tool("glow-drain", "nightly")

    assert result.returncode == 0, result.stderr
    assert [job["args"] for job in lines(result.stdout)] == [["waiting"]]
    assert "1 reserved jobs are running and were left" in result.stderr
    assert client.stats_job(running.id)["state"] == "reserved"


def test_a_pause_the_tube_had_is_put_back(beanstalkd, client):
    put("-t", "nightly", "--", "true")
    client.pause_tube("nightly", 3600)
    client.use("nightly")

    result = tool("glow-drain", "nightly")

    assert result.returncode == 0, result.stderr
    assert client.stats_tube("nightly")["pause-time-left"] > 3500


def test_a_body_that_is_not_a_job_stops_the_drain_and_stays(beanstalkd, client):
    client.use("nightly")
    bad = client.put(b"not json")
    put("-t", "nightly", "--pri", "0", "--", "echo", "good")

    result = tool("glow-drain", "nightly")

    assert result.returncode == 4
    assert [job["args"] for job in lines(result.stdout)] == [["good"]]
    assert result.stderr.startswith(
        f"glow-drain: job {bad} (tube nightly, ready): is not a glow job: is not JSON"
    )
    assert f"glow-delete {bad}" in result.stderr
    assert client.stats_job(bad)["state"] == "ready"


def test_a_missing_tube_exits_6_before_anything_is_drained(beanstalkd, client):
    put("-t", "nightly", "--", "true")

    result = tool("glow-drain", "nightly", "nightyl")

    assert result.returncode == 6
    assert result.stdout == ""
    assert result.stderr == (
        f"glow-drain: tube 'nightyl' does not exist on {beanstalkd.address} (it "
        "has no jobs and nobody uses it; glow-stats lists the tubes there are)\n"
    )
    assert counts(client, "nightly")["ready"] == 1


def test_glow_tubes_are_not_drained(beanstalkd):
    result = tool("glow-drain", "GLOW_ERRORS")

    assert result.returncode == 4
    assert result.stderr == (
        "glow-drain: tube 'GLOW_ERRORS': is one of glowtools' own GLOW_ tubes\n"
    )
