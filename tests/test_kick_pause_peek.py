"""glow-kick, glow-pause, glow-peek and glow-delete against a real beanstalkd."""

import json
import time

import pytest
from conftest import tool, wait_for


def put(*args: str) -> int:
    result = tool("glow-put", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def buried(client, *args: str) -> int:
    job_id = put(*args)
    client.bury(client.reserve_job(job_id))
    return job_id


def state(client, job_id: int) -> str:
    return client.stats_job(job_id)["state"]


def test_kick_tube_kicks_only_buried_jobs_within_the_bound(beanstalkd, client):
    first = buried(client, "-t", "nightly", "--", "true")
    second = buried(client, "-t", "nightly", "--", "true")
    third = buried(client, "-t", "nightly", "--", "true")
    delayed = put("-t", "nightly", "--delay", "600", "--", "true")
    held = put("-t", "nightly", "--after", "elsewhere", "--", "true")
    put("-t", "elsewhere", "--", "true")

    result = tool("glow-kick", "nightly", "--bound", "2")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{first}\n{second}\n"
    assert [state(client, i) for i in (first, second, third)] == [
        "ready", "ready", "buried"
    ]  # fmt: skip
    again = tool("glow-kick", "nightly", "--json")
    assert json.loads(again.stdout) == {"id": third, "tube": "nightly"}
    assert tool("glow-kick", "nightly").stderr == (
        "glow-kick: tube nightly has no buried jobs\n"
    )
    assert (state(client, delayed), state(client, held)) == ("delayed", "delayed")


def test_kick_by_id_names_a_job_that_is_not_buried(beanstalkd, client):
    failed = buried(client, "-t", "nightly", "--", "true")
    ready = put("-t", "nightly", "--", "true")

    result = tool("glow-kick", "--id", str(failed), str(ready), "999")

    assert result.returncode == 6
    assert result.stdout == f"{failed}\n"
    assert result.stderr.splitlines() == [
        f"glow-kick: job {ready} (tube nightly) is ready, not buried; glow-kick "
        "kicks only buried jobs",
        f"glow-kick: job 999 does not exist on {beanstalkd.address} (it was "
        "deleted, or completed)",
        "glow-kick: 2 of 3 jobs were not kicked",
    ]
    assert state(client, failed) == "ready"


def test_pause_for_a_while_keeps_listeners_off_the_tube(beanstalkd, client, listen):
    job_id = put("-t", "nightly", "--", "true")

    result = tool("glow-pause", "nightly", "--for", "600")

    assert result.returncode == 0, result.stderr
    assert result.stderr == "glow-pause: tube nightly paused for 600 s\n"
    listen("--tubes", "nightly")
    time.sleep(1.5)
    assert state(client, job_id) == "ready"
    assert tool("glow-pause", "--resume", "nightly").returncode == 0
    wait_for(lambda: _gone(client, job_id), what="the job to run after --resume")


def _gone(client, job_id: int) -> bool:
    try:
        client.stats_job(job_id)
    except Exception:
        return True
    return False


def test_pause_for_a_missing_tube_points_at_until_resumed(beanstalkd):
    result = tool("glow-pause", "later", "--for", "60")

    assert result.returncode == 6
    assert result.stderr == (
        f"glow-pause: tube 'later' does not exist on {beanstalkd.address}, so "
        "beanstalkd cannot pause it (--until-resumed pauses it before its jobs "
        "arrive)\n"
    )


@pytest.mark.parametrize(
    "args", [["nightly"], ["nightly", "--for", "5", "--resume"]], ids=["none", "two"]
)
def test_pause_needs_exactly_one_mode(beanstalkd, args):
    result = tool("glow-pause", *args)

    assert result.returncode == 2
    assert "give exactly one of --for SECONDS, --until-resumed and --resume" in (
        result.stderr
    )


def test_pause_until_resumed_survives_restarts_of_server_and_listener(
    beanstalkd_factory, monkeypatch, listen
):
    server = beanstalkd_factory(binlog=True)
    monkeypatch.setenv("GLOW_QUEUE", server.address)
    assert tool("glow-pause", "nightly", "--until-resumed").returncode == 0
    job_id = put("-t", "nightly", "--", "true")
    server.restart()

    listener = listen("--tubes", "night*")
    time.sleep(1.5)
    client = server.client(encoding=None)
    assert state(client, job_id) == "ready"
    stats = tool("glow-stats", "nightly").stdout
    assert stats.splitlines()[2].endswith("until resumed")
    listener.stop()

    result = tool("glow-pause", "--resume", "nightly")

    assert result.stderr == "glow-pause: tube nightly resumed\n"
    listen("--tubes", "nightly")
    wait_for(lambda: _gone(client, job_id), what="the job to run after --resume")


def test_peek_shows_body_stats_and_the_failure_report(beanstalkd, client, listen):
    failed = put("-t", "nightly", "--", "sh", "-c", "echo boom >&2; exit 3")
    listener = listen("--tubes", "nightly")
    listener.wait_log(f"job {failed} (tube nightly) failed")

    by_id = tool("glow-peek", "--json", str(failed))
    by_tube = tool("glow-peek", "--buried", "nightly")

    assert by_id.returncode == 0, by_id.stderr
    shown = json.loads(by_id.stdout)
    assert (shown["id"], shown["tube"], shown["state"]) == (failed, "nightly", "buried")
    assert shown["body"] == {"cmd": "sh", "args": ["-c", "echo boom >&2; exit 3"],
                             "tube": "nightly"}  # fmt: skip
    assert shown["stats"]["buries"] == 1
    assert shown["report"]["exit_code"] == 3
    assert shown["report"]["stderr_tail"] == "boom"
    again = json.loads(by_tube.stdout)
    assert {**again, "stats": None} == {**shown, "stats": None}
    assert by_tube.stdout.startswith('{\n  "id"')


def test_peek_names_a_missing_job_and_a_tube_without_buried_jobs(beanstalkd):
    put("-t", "nightly", "--", "true")

    missing = tool("glow-peek", "777")
    none = tool("glow-peek", "--buried", "nightly")

    assert (missing.returncode, none.returncode) == (6, 6)
    assert missing.stderr == (
        f"glow-peek: job 777 does not exist on {beanstalkd.address} (it was "
        "deleted, or completed)\n"
    )
    assert none.stderr == "glow-peek: tube 'nightly' has no buried jobs\n"


def test_delete_prints_each_job_so_put_can_bring_it_back(beanstalkd, client):
    ready = put("-t", "nightly", "--pri", "9", "--", "echo", "a")
    delayed = put("-t", "nightly", "--delay", "600", "--", "echo", "b")

    result = tool("glow-delete", str(ready), str(delayed))

    assert result.returncode == 0, result.stderr
    first, second = map(json.loads, result.stdout.splitlines())
    assert first == {"cmd": "echo", "args": ["a"], "tube": "nightly", "pri": 9}
    assert 590 <= second["delay"] <= 600
    assert _gone(client, ready) and _gone(client, delayed)
    assert tool("glow-put", input=result.stdout).returncode == 0
    assert client.stats_tube("nightly")["current-jobs-delayed"] == 1


def test_delete_refuses_a_reserved_job_and_keeps_it(beanstalkd, client):
    job_id = put("-t", "nightly", "--", "true")
    client.reserve_job(job_id)

    result = tool("glow-delete", str(job_id))

    assert result.returncode == 5
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == (
        f"glow-delete: job {job_id} (tube nightly) is reserved: a listener runs it "
        "(delete it once it is buried or released, or stop that listener)"
    )
    assert state(client, job_id) == "reserved"


def test_delete_of_a_held_job_drops_its_index_record(beanstalkd, client):
    held = put("-t", "nightly", "--after", "upstream", "--", "true")
    put("-t", "upstream", "--", "true")

    result = tool("glow-delete", str(held))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["after"] == ["upstream"]
    assert "GLOW_HELD.nightly" not in client.tubes()


def test_peek_of_a_held_job_says_what_it_waits_on(beanstalkd, client):
    put("-t", "upstream", "--", "true")
    held = put("-t", "nightly", "--after", "upstream", "--", "true")

    result = tool("glow-peek", "--json", str(held))

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["state"] == "held"
    assert shown["upstream"]["after"] == ["upstream"]
    assert shown["upstream"]["state"] == "waiting"
