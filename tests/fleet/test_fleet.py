"""The fleet on real hosts: deployed by site.yml, fed from here, drained by fabric."""

import io
import json
import os
import subprocess
import uuid

import pytest

from fleet.fleet_support import JOBS_DIR, REPO, ansible_env, recap, tool_path, wait_for
from glowtools import fleet_cli

pytestmark = pytest.mark.fleet

LISTENERS = ("deb12", "deb13")


def drain(fleet, **options) -> tuple[int, list[str]]:
    """Runs the drain command's logic; returns its exit status and output lines."""
    out = io.StringIO()
    status = fleet_cli.drain_main(ssh_config=fleet.ssh_config, out=out, **options)
    return status, out.getvalue().splitlines()


def listener_jobs(fleet, host: str) -> int:
    out = io.StringIO()
    fleet_cli.status_main(
        hosts=host, as_json=True, ssh_config=fleet.ssh_config, out=out
    )
    report = json.loads(out.getvalue())
    return sum(len(unit["jobs"]) for unit in report["units"])


def test_playbook_deploys_beanstalkd_and_listeners_on_debian_12_and_13(fleet):
    for host, version in (("deb12", "12."), ("deb13", "13.")):
        assert fleet.ssh(host, "cat /etc/debian_version").stdout.startswith(version)
        assert fleet.unit_state(host) == "active"

    done = fleet.ssh("deb12", "systemctl is-active beanstalkd; ss -Hltn sport = :11300")
    assert done.stdout.startswith("active\n"), done.stdout + done.stderr
    assert f" {fleet.queue} " in done.stdout


def test_second_run_changes_nothing(fleet):
    done = fleet.playbook()

    assert done.returncode == 0, done.stdout[-6000:] + done.stderr
    changed = {host: counts["changed"] for host, counts in recap(done.stdout).items()}
    assert changed == dict.fromkeys(changed, 0), done.stdout[-6000:]
    assert set(changed) == {"localhost", *LISTENERS}


@pytest.mark.parametrize("host", LISTENERS)
def test_unit_passes_systemd_analyze_verify(fleet, host):
    done = fleet.ssh(host, "systemd-analyze verify glow-listen@main.service")

    assert (done.returncode, done.stderr) == (0, "")


def test_unit_is_hardened_and_stops_gracefully(fleet):
    props = (
        "User,NoNewPrivileges,ProtectSystem,KillSignal,KillMode,Restart,TimeoutStopUSec"
    )
    done = fleet.ssh("deb12", f"systemctl show -p {props} glow-listen@main.service")

    shown = dict(line.split("=", 1) for line in done.stdout.split())
    assert shown == {
        "User": "glow",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "KillSignal": "2",
        "KillMode": "mixed",
        "Restart": "on-failure",
        "TimeoutStopUSec": "1h",
    }


def test_secret_reaches_the_listeners_unlogged_and_readable_only_by_them(fleet):
    secret = open(fleet.secret).read().strip()

    for host in LISTENERS:
        done = fleet.ssh(host, "stat -c '%a %U' /etc/glowtools/secret")
        assert done.stdout.strip() == "400 glow"
    assert secret not in fleet.first_run.stdout + fleet.first_run.stderr


def test_jobs_put_here_run_on_the_cpu_host(running):
    tokens = [running.put_marker("work") for _ in range(4)]

    found = wait_for(lambda: len(m := running.marker_hosts(tokens)) == 4 and m)
    assert set(found.values()) == {"deb12"}


def test_gpu_jobs_run_only_on_the_gpu_host(running):
    tokens = [running.put_marker("gpu-render") for _ in range(2)]

    found = wait_for(lambda: len(m := running.marker_hosts(tokens)) == 2 and m)
    assert set(found.values()) == {"deb13"}


def test_unsigned_job_is_refused_by_listeners_that_hold_the_secret(running):
    token = f"job-{uuid.uuid4().hex[:12]}"
    job = running.put("work", "sh", "-c", f"hostname > {token}", signed=False)

    wait_for(lambda: running.job_state(job) == "buried", what=f"job {job} buried")
    assert running.marker_hosts([token]) == {}


def test_status_shows_each_listener_its_state_and_what_it_runs(running):
    out = io.StringIO()
    status = fleet_cli.status_main(
        inventory=str(running.inventory),
        group="glow_listeners",
        ssh_config=running.ssh_config,
        out=out,
    )

    lines = out.getvalue().splitlines()
    assert status == 0, lines
    assert [line.split()[:3] for line in lines] == [
        ["deb12", "glow-listen@main.service", "active/running"],
        ["deb13", "glow-listen@main.service", "active/running"],
    ]
    assert lines[0].endswith(f"--queue={running.queue} --concurrency=2 --exclude=gpu-*")
    assert lines[1].endswith(f"--queue={running.queue} --concurrency=1 --tubes=gpu-*")


def test_drain_lets_running_jobs_finish_then_stops_the_listener(running):
    tokens = [running.put_marker("work", seconds=4) for _ in range(2)]
    wait_for(lambda: listener_jobs(running, "deb12") == 2, what="2 jobs running")

    status, lines = drain(running, hosts="deb12")

    assert status == 0, lines
    assert [line.split()[:2] for line in lines] == [["deb12", "drained"]]
    assert set(running.marker_hosts(tokens)) == set(tokens)
    assert running.unit_state("deb12") == "inactive"


def test_drain_past_deadline_releases_jobs_and_restart_runs_them(running):
    token, flag = f"job-{uuid.uuid4().hex[:12]}", f"flag-{uuid.uuid4().hex[:8]}"
    # The first attempt hangs; the one after the release finishes at once.
    script = (
        f"if [ -e {flag} ]; then hostname > {token}; else touch {flag}; sleep 300; fi"
    )
    job = running.put("work", "sh", "-c", script)
    wait_for(lambda: running.job_state(job) == "reserved", what=f"job {job} reserved")

    status, lines = drain(running, hosts="deb12", deadline=2)

    assert status == 0, lines
    assert lines[0].startswith("deb12 timed-out 1 job killed and released after ")
    assert running.job_state(job) == "ready"

    status, lines = drain(running, hosts="deb12", restart=True)

    assert status == 0, lines
    assert lines[0].startswith("deb12 restarted in ")
    wait_for(lambda: running.job_state(job) == "gone", what=f"job {job} done")
    assert running.marker_hosts([token]) == {token: "deb12"}


def test_rolling_restart_while_jobs_run_loses_no_job(running):
    tokens = [running.put_marker("work", seconds=3) for _ in range(8)]
    tokens += [running.put_marker("gpu-batch", seconds=3) for _ in range(3)]
    wait_for(lambda: listener_jobs(running, "deb12") > 0, what="jobs running")

    status, lines = drain(
        running,
        inventory=str(running.inventory),
        group="glow_listeners",
        restart=True,
        deadline=60,
    )

    assert status == 0, lines
    assert [line.split()[:2] for line in lines] == [
        ["deb12", "restarted"],
        ["deb13", "restarted"],
    ]
    found = wait_for(
        lambda: len(m := running.marker_hosts(tokens)) == len(tokens) and m,
        timeout=120,
        what="every job of the rolling restart",
    )
    assert sorted(found) == sorted(tokens)


def test_drain_reports_an_unreachable_host_in_json(running, tmp_path):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[glow_listeners]\n"
        "deb13 ansible_host=10.247.13.22\n"
        "gone ansible_host=10.247.13.99\n"
    )

    status, lines = drain(
        running, inventory=str(inventory), group="glow_listeners", as_json=True
    )

    results = {entry["host"]: entry for entry in map(json.loads, lines)}
    assert status == 3, lines
    assert results["deb13"]["state"] == "drained"
    assert results["gone"]["state"] == "unreachable"
    assert results["deb13"]["units"] == ["glow-listen@main.service"]


def test_role_refuses_a_host_without_systemd(fleet, tmp_path):
    inventory = tmp_path / "inventory.ini"
    settings = fleet.inventory.read_text().split("[all:vars]", 1)[1]
    inventory.write_text(
        "[glow_listeners]\n"
        "ssh1 ansible_host=10.247.13.11 ansible_python_interpreter=/usr/bin/python3\n"
        "[all:vars]" + settings
    )

    done = fleet.playbook(inventory=inventory)

    assert done.returncode == 2, done.stdout[-3000:]
    assert "family (tested on Debian 12 and 13) with systemd only" in done.stdout


def test_roles_pass_ansible_lint(fleet):
    lint = tool_path("ansible-lint")
    if not os.path.exists(lint):
        pytest.skip("ansible-lint is not installed")

    done = subprocess.run(
        [lint, "--offline", "--nocolor"],
        cwd=REPO / "ansible",
        env=ansible_env(fleet.state),
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_jobs_dir_is_the_only_place_jobs_may_write(running):
    token = f"job-{uuid.uuid4().hex[:12]}"
    script = f"touch /etc/{token} 2>/dev/null || echo read-only > {JOBS_DIR}/{token}"
    running.put("work", "sh", "-c", script)

    found = wait_for(lambda: running.marker_hosts([token]), what="the write test")
    assert found == {token: "read-only"}


def test_glow_stats_and_glow_drain_commands_reach_the_fleet(running):
    env = {**os.environ, "GLOW_SSH_CONFIG": running.ssh_config}
    inventory = ["--inventory", str(running.inventory)]

    stats = subprocess.run(
        [tool_path("glow-stats"), *inventory, "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    drained = subprocess.run(
        [tool_path("glow-drain"), "--hosts", "deb13", "--restart"],
        capture_output=True,
        text=True,
        env=env,
    )

    assert stats.returncode == 0, stats.stderr
    hosts = [json.loads(line)["host"] for line in stats.stdout.splitlines()]
    assert hosts == ["deb12", "deb13"]
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.startswith("deb13 restarted in ")
    assert "glow-drain: host deb13: restarted after " in drained.stderr


def test_reload_sends_sighup_and_keeps_the_listener(running):
    pid = "systemctl show -p MainPID --value glow-listen@main.service"
    before = running.ssh("deb12", pid).stdout

    done = running.ssh("deb12", "systemctl reload glow-listen@main.service")

    assert done.returncode == 0, done.stderr
    assert running.ssh("deb12", pid).stdout == before
    assert running.unit_state("deb12") == "active"


@pytest.mark.parametrize(("host", "private"), [("deb12", "yes"), ("deb13", "no")])
def test_group_settings_differ_per_host(fleet, host, private):
    done = fleet.ssh(host, "systemctl show -p PrivateDevices glow-listen@main.service")

    assert done.stdout.strip() == f"PrivateDevices={private}"


def test_new_secret_reaches_the_listeners_by_reload(running):
    pid = "systemctl show -p MainPID --value glow-listen@main.service"
    before = running.ssh("deb12", pid).stdout
    new_secret = uuid.uuid4().hex + uuid.uuid4().hex
    with open(running.secret, "w") as secret:
        secret.write(new_secret)

    done = running.playbook("-v", "--diff")

    assert done.returncode == 0, done.stdout[-6000:]
    assert new_secret not in done.stdout + done.stderr
    assert running.ssh("deb12", pid).stdout == before
    token = running.put_marker("work")
    assert wait_for(lambda: running.marker_hosts([token])) == {token: "deb12"}
