"""Who a job runs as: --allow-user on a root listener, refusals, and what a job
sees of the listener's environment."""

import json
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest
from conftest import error_reports, tool, wait_for
from support import SYSTEM_PYTHON, gone, needs_root, put, user_factory

pytestmark = needs_root
SHOW = 'id -un; id -gn; echo "$HOME"; echo "$PATH"; echo "$USER"; pwd'


@pytest.fixture
def make_user():
    yield from user_factory()


def refusal(client, job_id: int) -> str:
    (report,) = error_reports(client, 1, timeout=20)
    assert report["id"] == job_id
    assert client.stats_job(job_id)["state"] == "buried"
    return report["error"]


def test_root_listener_runs_a_job_as_an_allowed_user(listen, client, make_user):
    user = make_user()
    listen("--allow-user", user.name)
    out = user.folder / "who.out"

    job_id = put("-t", "t", "--user", user.name, "--out", str(out),
                 "--workdir", str(user.folder), "--", "sh", "-c", SHOW)  # fmt: skip

    wait_for(lambda: gone(client, job_id))
    name, group, home, path, env_user, pwd = out.read_text().splitlines()
    assert (name, group, env_user) == (user.name, user.name, user.name)
    assert (home, path) == (str(user.home), "/usr/local/bin:/usr/bin:/bin")
    assert pwd == str(user.folder)
    assert out.stat().st_uid == user.uid


def test_original_glow_body_naming_an_allowed_user_runs_as_that_user(
    listen, client, make_user
):
    user = make_user()
    listen("--allow-user", user.name)
    out = user.folder / "go.out"
    client.use("legacy")
    body = {"cmd": "id", "args": "-un", "tube": "legacy", "pri": "0", "delay": "0",
            "out": str(out), "mailto": "", "User": user.name}  # fmt: skip

    job_id = client.put(json.dumps(body).encode())

    wait_for(lambda: gone(client, job_id))
    assert out.read_text() == f"{user.name}\n"


def test_user_not_allowed_is_buried_with_the_reason(listen, client, make_user):
    user = make_user()
    listen()

    job_id = put("-t", "t", "--user", user.name, "--retries", "3", "--", "true")

    assert refusal(client, job_id) == (
        f"job asks for user {user.name}, who is not allowed here (start glow-listen "
        f"with --allow-user {user.name})"
    )


@pytest.mark.parametrize("user_args", [[], ["--user", "root"]], ids=["none", "root"])
def test_switching_listener_refuses_root_jobs_unless_root_is_allowed(
    listen, client, make_user, user_args
):
    user = make_user()
    listen("--allow-user", user.name)

    job_id = put("-t", "t", *user_args, "--", "true")

    asked = "asks for user root" if user_args else "names no user"
    assert refusal(client, job_id) == (
        f"job {asked} and would run as root; this listener runs root jobs only "
        "with --allow-user root (put the job with --user NAME)"
    )


def test_root_allowed_by_name_runs_root_jobs(listen, client, make_user, tmp_path):
    user = make_user()
    listen("--allow-user", f"{user.name},root")
    out = tmp_path / "root.out"

    job_id = put("-t", "t", "--user", "root", "--out", str(out), "--", "id", "-un")

    wait_for(lambda: gone(client, job_id))
    assert out.read_text() == "root\n"


def test_star_allows_any_user_but_root(listen, client, make_user):
    user = make_user()
    listen("--allow-user", "*")
    out = user.folder / "star.out"

    job_id = put("-t", "t", "--user", user.name, "--out", str(out), "--", "id", "-un")
    root_id = put("-t", "t", "--user", "root", "--", "true")

    wait_for(lambda: gone(client, job_id))
    assert out.read_text() == f"{user.name}\n"
    assert refusal(client, root_id).startswith("job asks for user root and would")


def test_unknown_user_is_buried_with_the_reason(listen, client):
    listen("--allow-user", "*")

    job_id = put("-t", "t", "--user", "nosuchglowuser", "--", "true")

    assert refusal(client, job_id) == (
        f"user nosuchglowuser does not exist on {os.uname().nodename}"
    )


def test_output_files_are_opened_with_the_job_users_rights(
    listen, client, make_user, tmp_path
):
    user = make_user()
    listen("--allow-user", user.name)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)

    job_id = put("-t", "t", "--user", user.name, "--out", str(private / "x.out"),
                 "--", "true")  # fmt: skip

    assert refusal(client, job_id) == (
        f"cannot open stdout file {private}/x.out: Permission denied"
    )
    assert not (private / "x.out").exists()


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system python3")
def test_listener_that_is_not_root_refuses_jobs_for_another_user(
    beanstalkd, client, make_user
):
    runner, other = make_user(), make_user()
    log = runner.folder / "listen.log"
    path = [str(Path(__file__).parents[1]), sysconfig.get_path("purelib")]
    env = {**os.environ, "PYTHONPATH": ":".join(path), "HOME": str(runner.home)}
    with open(log, "wb") as stream:
        proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", "from glowtools.listen import main; main()", "-v"],
            stdout=stream, stderr=subprocess.STDOUT, env=env,
            user=runner.uid, group=runner.gid, extra_groups=[], cwd=runner.folder,
        )  # fmt: skip
    try:
        wait_for(lambda: "connected to" in log.read_text(), what="the listener")
        own = put("-t", "t", "--out", str(runner.folder / "own.out"), "--", "id", "-un")
        foreign = put("-t", "t", "--user", other.name, "--", "true")

        wait_for(lambda: gone(client, own))
        assert (runner.folder / "own.out").read_text() == f"{runner.name}\n"
        assert refusal(client, foreign) == (
            f"job asks for user {other.name}; this listener runs as {runner.name} and "
            f"cannot switch users (run glow-listen as root with --allow-user "
            f"{other.name}, or put the job without --user)"
        )
        assert "no usable cgroups" in log.read_text()
    finally:
        proc.kill()
        proc.wait(5)


def test_jobs_see_their_env_and_exports_but_not_the_smtp_login(
    listen, client, tmp_path
):
    login = {"GLOW_SMTP_USER": "u", "GLOW_SMTP_PASSWORD": "p"}
    listen("--smtp", "127.0.0.1:9", env=login)
    out = tmp_path / "env.out"
    exported = {"GLOW_TEAM_VAR": "blue", "MY_API_TOKEN": "t0ken", "PLAIN": "yes",
                "HOME": "/home/submitter"}  # fmt: skip

    result = tool("glow-put", "-t", "t", "--export", "--env", "EXTRA=1", "--out",
                  str(out), "--", "env", env=exported)  # fmt: skip

    assert result.returncode == 0, result.stderr
    wait_for(lambda: gone(client, int(result.stdout)))
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert (seen["PLAIN"], seen["EXTRA"]) == ("yes", "1")
    assert "MY_API_TOKEN" not in seen and "GLOW_TEAM_VAR" not in seen
    assert "GLOW_SMTP_USER" not in seen and "GLOW_SMTP_PASSWORD" not in seen
    assert seen["HOME"] == os.environ["HOME"]


def test_export_leaves_out_the_largest_values_beyond_its_budget(beanstalkd, client):
    big = {f"BIG{n}": str(n) * 4000 for n in range(6)}

    result = tool("glow-put", "-t", "t", "--export", "--", "true", env=big)

    assert result.returncode == 0, result.stderr
    env = json.loads(client.peek(int(result.stdout)).body)["env"]
    left_out = [name for name in big if name not in env]
    assert len(left_out) == 3
    assert result.stderr.endswith(
        f" glow-put: --export left out {', '.join(left_out)} (too large for a job)\n"
    )
