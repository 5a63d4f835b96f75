"""glow-listen with more than one slot: a worker process per slot, one listener."""

import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import BIN, tool, wait_for
from support import gone, put


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as listing:
            found.update(int(child) for child in listing.read().split())
    return found


def parent_of(pid: int) -> int:
    # The fourth field of stat, after the command in parentheses.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def meeting(tmp_path: Path, me: str, other: str, then: str = "") -> list[str]:
    """A job that writes its parent's pid, then waits until the other has too."""
    mine, theirs = tmp_path / me, tmp_path / other
    script = f"echo $PPID > {mine}; until [ -s {theirs} ]; do sleep 0.05; done; {then}"
    return ["sh", "-c", script]


def test_each_slot_runs_its_jobs_in_a_worker_process_of_the_listener(
    listen, client, tmp_path
):
    listener = listen("-c", "2")
    first = put("-t", "t", "--", *meeting(tmp_path, "a", "b"))
    second = put("-t", "t", "--", *meeting(tmp_path, "b", "a"))

    wait_for(lambda: gone(client, first) and gone(client, second), timeout=20)
    spawners = {int((tmp_path / name).read_text()) for name in "ab"}
    assert len(spawners) == 2
    assert listener.proc.pid not in spawners
    assert spawners == children(listener.proc.pid)
    assert {parent_of(pid) for pid in spawners} == {listener.proc.pid}


def test_the_listener_shows_the_running_jobs_of_all_its_workers(
    listen, client, tmp_path
):
    listener = listen("--tubes", "slow", "-c", "3")
    ids = {put("-t", "slow", "--", "sleep", "30") for _ in range(2)}

    def shown():
        found = tool("glow-stats", "--listeners", "--json").stdout.splitlines()
        status = found and json.loads(found[0])
        return status and len(status["running"]) == 2 and status

    status = wait_for(shown, what="both running jobs in the listener's status")
    assert (status["pid"], status["concurrency"]) == (listener.proc.pid, 3)
    assert {entry["id"] for entry in status["running"]} == ids
    assert {entry["cmd"] for entry in status["running"]} == {"sleep 30"}
    assert len(tool("glow-stats", "--listeners", "--json").stdout.splitlines()) == 1


def test_a_worker_that_dies_is_started_again(listen, client, tmp_path):
    listener = listen("-c", "2")
    workers = wait_for(lambda: len(children(listener.proc.pid)) == 2 and children(
        listener.proc.pid
    ))  # fmt: skip
    victim = min(workers)

    os.kill(victim, signal.SIGKILL)

    listener.wait_log(f"worker {victim} (slot ")
    assert "ended: killed by SIGKILL; starting it again" in listener.log
    wait_for(lambda: len(children(listener.proc.pid) - {victim}) == 2)
    first = put("-t", "t", "--", *meeting(tmp_path, "a", "b"))
    second = put("-t", "t", "--", *meeting(tmp_path, "b", "a"))
    wait_for(lambda: gone(client, first) and gone(client, second), timeout=20)


def test_workers_of_a_killed_listener_release_their_jobs_and_end(listen, client):
    listener = listen("-c", "2")
    job_id = put("-t", "t", "--", "sleep", "30")
    wait_for(lambda: client.stats_job(job_id)["state"] == "reserved")
    workers = children(listener.proc.pid)

    listener.proc.kill()
    listener.proc.wait(5)

    wait_for(lambda: client.stats_job(job_id)["state"] == "ready", what="the release")
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))


def test_sigint_to_the_whole_process_group_lets_every_job_finish(
    beanstalkd, client, tmp_path
):
    # A terminal's Ctrl-C reaches the listener and its workers alike: the
    # workers must not take the second SIGINT as "terminate".
    done = [tmp_path / "a.done", tmp_path / "b.done"]
    ids = [
        put("-t", "t", "--", *meeting(tmp_path, "a", "b", f"sleep 1; touch {done[0]}")),
        put("-t", "t", "--", *meeting(tmp_path, "b", "a", f"sleep 1; touch {done[1]}")),
    ]
    with open(tmp_path / "listen.log", "wb") as log:
        listener = subprocess.Popen(
            [str(BIN / "glow-listen"), "-v", "-c", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,  # as a shell starts a job
        )
    try:
        wait_for(lambda: all((tmp_path / name).exists() for name in "ab"))

        os.killpg(listener.pid, signal.SIGINT)

        assert listener.wait(30) == 0
    finally:
        listener.kill()
    assert all(path.exists() for path in done)
    assert all(gone(client, job_id) for job_id in ids)


def test_sighup_reaches_the_workers_which_reopen_the_log_file(
    beanstalkd, client, tmp_path, listen
):
    log = tmp_path / "listen.log"
    listener = listen("-c", "2", "--log", str(log))
    wait_for(lambda: log.exists() and "slot(s)" in log.read_text())
    log.rename(tmp_path / "listen.log.1")

    listener.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log.exists(), what="the listener to reopen its log")
    ids = [put("-t", "t", "--", *meeting(tmp_path, n, m)) for n, m in ("ab", "ba")]

    wait_for(lambda: all(gone(client, job_id) for job_id in ids), timeout=20)
    text = wait_for(lambda: log.read_text().count("completed") == 2 and log.read_text())
    assert all(f"job {job_id} (tube t) completed" in text for job_id in ids)


def test_glow_fleet_counts_the_jobs_of_the_workers_not_the_workers(listen, client):
    from glowtools.fleet import PROCESS_TABLE, Unit, _add_processes

    listener = listen("-c", "2")
    job_id = put("-t", "t", "--", "sleep", "30")
    wait_for(lambda: client.stats_job(job_id)["state"] == "reserved")
    table = subprocess.run(
        PROCESS_TABLE.split(), capture_output=True, text=True, check=True
    ).stdout
    unit = Unit("glow-listen@main.service", "active", "running", listener.proc.pid)

    _add_processes([unit], table)

    assert unit.command.endswith("glow-listen -v -c 2")
    assert unit.jobs == ["sleep 30"]


def cpus_of(pid: int | str) -> set[int]:
    return parse_cpus(Path(f"/proc/{pid}/status").read_text())


def parse_cpus(status: str) -> set[int]:
    line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
    cpus = set()
    for part in line.split(":", 1)[1].strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def test_workers_keep_to_a_cpu_each_and_their_jobs_get_every_cpu(
    listen, client, tmp_path
):
    listener = listen("-c", "2")
    allowed = cpus_of(listener.proc.pid)
    workers = wait_for(lambda: len(children(listener.proc.pid)) == 2 and children(
        listener.proc.pid
    ))  # fmt: skip
    # What a job's child process may use, read once the job has settled in.
    script = f"sleep 0.2; cat /proc/self/status > {tmp_path / 'status'}"
    job_id = put("-t", "t", "--", "sh", "-c", script)

    wait_for(lambda: gone(client, job_id))
    assert parse_cpus((tmp_path / "status").read_text()) == allowed
    pinned = [cpus_of(pid) for pid in workers]
    if len(allowed) >= 2:
        assert all(len(cpus) == 1 for cpus in pinned)
        assert pinned[0] != pinned[1]
    else:
        assert pinned == [allowed, allowed]


def test_no_pin_leaves_the_workers_every_cpu(listen):
    listener = listen("-c", "2", "--no-pin")
    allowed = cpus_of(listener.proc.pid)
    workers = wait_for(lambda: len(children(listener.proc.pid)) == 2 and children(
        listener.proc.pid
    ))  # fmt: skip

    assert [cpus_of(pid) for pid in workers] == [allowed, allowed]
