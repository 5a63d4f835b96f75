"""glow-stats against a real beanstalkd and real listeners."""

import json
import signal
import subprocess

from conftest import BIN, tool, wait_for


def put(*args: str) -> int:
    result = tool("glow-put", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def fill(client) -> None:
    """Leaves tube nightly with a job in every state, and reports paused."""
    put("-t", "nightly", "--", "echo", "ready")
    put("-t", "nightly", "--delay", "600", "--", "echo", "delayed")
    put("-t", "nightly", "--after", "upstream", "--", "echo", "held")
    put("-t", "upstream", "--", "true")
    client.bury(client.reserve_job(put("-t", "nightly", "--", "echo", "buried")))
    client.reserve_job(put("-t", "nightly", "--", "echo", "reserved"))
    put("-t", "reports", "--", "true")
    client.pause_tube("reports", 600)


def row(text: str, tube: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.startswith(tube))


def test_table_shows_every_state_and_the_server(beanstalkd, client):
    fill(client)

    result = tool("glow-stats")

    assert result.returncode == 0, result.stderr
    first, head, *_ = result.stdout.splitlines()
    assert first.startswith(f"beanstalkd 1.12 at {beanstalkd.address}, up ")
    assert head.split() == [
        "TUBE", "READY", "RESERVED", "DELAYED", "BURIED", "HELD", "TOTAL", "PAUSED"
    ]  # fmt: skip
    assert row(result.stdout, "nightly") == "nightly 1 1 1 1 1 5 -".split()
    assert row(result.stdout, "reports")[1:7] == "1 0 0 0 0 1".split()
    assert row(result.stdout, "reports")[7].isdigit()
    assert "GLOW_" not in result.stdout
    assert "\x1b[" not in result.stdout


def test_json_keeps_the_original_keys(beanstalkd, client):
    fill(client)

    result = tool("glow-stats", "--json", "nightly", "reports")

    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert list(figures) == ["nightly", "reports"]
    nightly = figures["nightly"]
    assert {k: nightly[k] for k in ("jobs-ready", "jobs-reserved", "jobs-delayed")} == {
        "jobs-ready": 1, "jobs-reserved": 1, "jobs-delayed": 1
    }  # fmt: skip
    assert (nightly["jobs-buried"], nightly["jobs-held"], nightly["pause"]) == (1, 1, 0)
    assert 590 <= figures["reports"]["pause"] <= 600


def test_a_missing_tube_exits_6(beanstalkd):
    result = tool("glow-stats", "nosuch")

    assert result.returncode == 6
    assert result.stderr == (
        f"glow-stats: tube 'nosuch' does not exist on {beanstalkd.address} (it "
        "has no jobs and nobody uses it; glow-stats lists the tubes there are)\n"
    )


def test_prometheus_text_has_one_sample_per_tube_and_state(beanstalkd, client):
    fill(client)

    result = tool("glow-stats", "--prometheus")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "# TYPE glow_tube_jobs gauge" in lines
    for state, count in [("ready", 1), ("reserved", 1), ("held", 1), ("buried", 1)]:
        assert f'glow_tube_jobs{{tube="nightly",state="{state}"}} {count}' in lines
    assert "glow_up 1" in lines
    assert "glow_listeners 0" in lines


def test_blocked_work_shows_buried_reasons_and_held_jobs_upstream(
    beanstalkd, client, listen
):
    failed = put("-t", "upstream", "--", "sh", "-c", "exit 3")
    held = put("-t", "downstream", "--after", "upstream", "--", "true")
    listener = listen("--tubes", "upstream")
    listener.wait_log(f"job {failed} (tube upstream) failed")

    result = tool("glow-stats")

    assert result.returncode == 0, result.stderr
    blocked = result.stdout.split("blocked:\n")[1].splitlines()
    assert f"  job {failed} (tube upstream) buried: exit 3 on " in blocked[1]
    # The reason is hold.py's own wording; only its subject is checked here.
    assert blocked[0].startswith(f"  job {held} (tube downstream) held: upstream ")
    assert "buried" in blocked[0]
    figures = json.loads(tool("glow-stats", "--json", "upstream").stdout)
    assert figures["upstream"]["blocked"][0]["id"] == failed


def test_listeners_show_their_running_jobs_and_vanish_when_they_die(
    beanstalkd, client, listen
):
    job_id = put("-t", "slow", "--", "sleep", "30")
    listener = listen("--tubes", "slow", "-c", "2")
    listener.wait_log(f"job {job_id} (tube slow) running")

    def shown():
        found = tool("glow-stats", "--listeners", "--json").stdout.splitlines()
        return found and json.loads(found[0])["running"] and json.loads(found[0])

    status = wait_for(shown, what="the listener's running job")
    assert (status["pid"], status["concurrency"], status["tubes"]) == (
        listener.proc.pid, 2, ["slow"]
    )  # fmt: skip
    assert status["running"][0]["id"] == job_id
    assert status["running"][0]["cmd"] == "sleep 30"
    text = tool("glow-stats", "--listeners").stdout
    assert f"    job {job_id} (tube slow) for " in text

    listener.proc.kill()
    listener.proc.wait(5)
    gone = wait_for(
        lambda: (r := tool("glow-stats", "--listeners")).stdout and r,
        what="an answer",
    )
    assert gone.stdout == "(no listeners connected)\n"
    assert not [t for t in client.tubes() if t.startswith("GLOW_LISTENER.")]


def test_watch_refreshes_until_ctrl_c(beanstalkd, client):
    put("-t", "nightly", "--", "true")
    proc = subprocess.Popen(
        [str(BIN / "glow-stats"), "--watch", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    client.use("nightly")
    client.put(b'{"cmd":"true","tube":"nightly"}')
    wait_for(
        lambda: json.loads(proc.stdout.readline())["nightly"]["jobs-ready"] == 2,
        what="a refresh that shows the second job",
    )
    proc.send_signal(signal.SIGINT)

    assert proc.wait(10) == 0, proc.stderr.read()
    assert json.loads(first)["nightly"]["jobs-ready"] == 1


def test_a_listener_that_stops_withdraws_its_status(beanstalkd, client, listen):
    listener = listen("--tubes", "nightly")

    def status_tubes():
        return [t for t in client.tubes() if t.startswith("GLOW_LISTENER.")]

    wait_for(status_tubes, what="the listener's status tube")
    assert listener.stop() == 0

    assert status_tubes() == []
    assert tool("glow-stats", "--listeners", "--json").stdout == ""


def test_prometheus_says_down_when_the_server_is_gone(beanstalkd):
    beanstalkd.stop()

    result = tool("glow-stats", "--prometheus")

    assert result.returncode == 3
    assert result.stdout.splitlines()[-1] == "glow_up 0"
    assert "refused the connection" in result.stderr
