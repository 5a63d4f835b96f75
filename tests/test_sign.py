"""Signed jobs: glow-put signs, glow-listen runs only what a secret it holds signed."""

import hashlib
import hmac
import json
import os
import signal

import pytest
from conftest import error_reports, tool, wait_for
from hypothesis import given
from hypothesis import strategies as st
from test_listen import gone, state

from glowtools.errors import JobInvalid
from glowtools.job import Job
from glowtools.sign import Secret, key_id, sign, verify

OLD = "old-secret-0123456789abcdef"
NEW = "new-secret-fedcba9876543210"
THIRD = "a-third-secret-nobody-holds"


def secret_file(tmp_path, text: str, name: str = "secret", mode: int = 0o600):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def kid_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def put(*args: str, env: dict | None = None) -> int:
    result = tool("glow-put", *args, env=env)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_put_adds_key_id_and_hmac_of_the_canonical_body(beanstalkd, client, tmp_path):
    path = secret_file(tmp_path, OLD + "\n")

    job_id = put("--secret-file", path, "-t", "t", "--", "echo", "hé")

    body = client.peek(job_id).body
    signed = json.loads(body)
    canonical = b'{"args":["h\\u00e9"],"cmd":"echo","tube":"t"}'
    mac = hmac.new(OLD.encode(), canonical, hashlib.sha256).hexdigest()
    assert signed == {**json.loads(canonical), "kid": kid_of(OLD), "sig": mac}
    assert body == json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()


def test_signed_job_runs_on_a_listener_holding_the_secret(listen, client, tmp_path):
    path = secret_file(tmp_path, OLD)
    out = tmp_path / "out"
    listener = listen("--secret-file", path)

    job_id = put("--out", str(out), "-t", "t", "--", "echo", "signed", env={
        "GLOW_SECRET_FILE": path
    })  # fmt: skip

    wait_for(lambda: gone(client, job_id))
    assert out.read_text() == "signed\n"
    assert f"running only jobs signed with key id {kid_of(OLD)}" in listener.log


def tampered(client, tmp_path) -> bytes:
    job_id = put("--secret-file", secret_file(tmp_path, OLD, "t"), "-t", "t", "--",
                 "touch", str(tmp_path / "ran"))  # fmt: skip
    body = json.loads(client.peek(job_id).body)
    client.delete(job_id)
    body["args"] = [str(tmp_path / "ran"), "/tmp/else"]
    return json.dumps(body).encode()


def foreign(client, tmp_path) -> bytes:
    other = secret_file(tmp_path, THIRD, "other")
    job_id = put(
        "--secret-file", other, "-t", "t", "--", "touch", str(tmp_path / "ran")
    )
    body = client.peek(job_id).body
    client.delete(job_id)
    return body


def unsigned(client, tmp_path) -> bytes:
    job = Job(cmd="touch", tube="t", args=[str(tmp_path / "ran")])
    return job.to_body()


def malformed(client, tmp_path) -> bytes:
    body = json.loads(unsigned(client, tmp_path))
    return json.dumps({**body, "kid": kid_of(OLD), "sig": 7}).encode()


def listed(client, tmp_path) -> bytes:
    return b'[{"cmd":"touch","tube":"t"}]'


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (unsigned, "body: is not signed (this listener runs only signed jobs: put "
                   "them with glow-put --secret-file)"),
        (tampered, f"body: signature does not match its content (key id "
                   f"{kid_of(OLD)}): the body was changed after it was signed"),
        (foreign, f"body: is signed with key id {kid_of(THIRD)!r}, which this "
                  f"listener does not hold (it holds {kid_of(OLD)})"),
        (malformed, "body: has a malformed signature ('kid' and 'sig' must be "
                    "strings)"),
        (listed, "body: is not a JSON object, so not a signed job"),
    ],
    ids=["unsigned", "tampered", "unknown-key", "malformed", "not-an-object"],
)  # fmt: skip
def test_listener_with_a_secret_buries_and_reports_what_it_cannot_trust(
    listen, client, tmp_path, make, error
):
    path = secret_file(tmp_path, OLD)
    body = make(client, tmp_path)
    listen("--secret-file", path)
    client.use("t")
    bad = client.put(body)
    good = put("-t", "t", "--secret-file", path, "--", "true")

    (report,) = error_reports(client, 1)
    assert (report["id"], report["error"]) == (bad, error)
    assert state(client, bad) == "buried"
    wait_for(lambda: gone(client, good))
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("how", ["env-a:b", "repeated-option"])
def test_listener_accepts_an_old_and_a_new_secret_while_rotating(
    listen, client, tmp_path, how
):
    old, new = secret_file(tmp_path, OLD, "old"), secret_file(tmp_path, NEW, "new")
    if how == "env-a:b":
        listener = listen(env={"GLOW_SECRET_FILE": f"{new}:{old}"})
    else:
        listener = listen("--secret-file", new, "--secret-file", old)

    ids = [put("--secret-file", path, "-t", "t", "--", "true") for path in (old, new)]

    for job_id in ids:
        wait_for(lambda job_id=job_id: gone(client, job_id))
    assert f"key id {kid_of(NEW)}, {kid_of(OLD)}" in listener.log


def test_put_signs_with_the_first_of_several_secret_files(beanstalkd, client, tmp_path):
    old, new = secret_file(tmp_path, OLD, "old"), secret_file(tmp_path, NEW, "new")

    job_id = put("-t", "t", "--", "true", env={"GLOW_SECRET_FILE": f"{new}:{old}"})

    assert json.loads(client.peek(job_id).body)["kid"] == kid_of(NEW)


def test_listener_without_a_secret_runs_signed_jobs(listen, client, tmp_path):
    listen()

    job_id = put("--secret-file", secret_file(tmp_path, OLD), "-t", "t", "--", "true")

    wait_for(lambda: gone(client, job_id))


@pytest.mark.parametrize("name", ["glow-put", "glow-listen"])
@pytest.mark.parametrize(
    ("mode", "can"),
    [(0o644, "read it"), (0o640, "read it"), (0o604, "read it"),
     (0o620, "change it"), (0o602, "change it")],
)  # fmt: skip
def test_a_secret_file_other_users_can_use_is_refused(tmp_path, name, mode, can):
    path = secret_file(tmp_path, OLD, mode=mode)

    job = ["-t", "t", "--", "true"] if name == "glow-put" else []

    result = tool(name, "--queue", "127.0.0.1:1", "--secret-file", path, *job)

    assert (result.returncode, result.stdout) == (7, "")
    assert result.stderr.endswith(
        f"{name}: secret file {path} has mode {mode:04o}, so other users can {can} "
        f"(run chmod 600 {path})\n"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "does not exist (e.g. (umask 077; openssl rand -hex 32 > {path}))"),
        ("", "is empty; a secret needs at least 16 (e.g. (umask 077; openssl rand "
             "-hex 32 > {path}))"),
        ("short\n", "holds only 5 characters; a secret needs at least 16 (e.g. "
                    "(umask 077; openssl rand -hex 32 > {path}))"),
        ("dir", "is not a regular file"),
    ],
    ids=["missing", "empty", "short", "directory"],
)  # fmt: skip
def test_an_unusable_secret_file_exits_7_naming_it(beanstalkd, client, tmp_path, text,
                                                    problem):  # fmt: skip
    path = tmp_path / "secret"
    if text == "dir":
        path.mkdir(mode=0o700)
    elif text is not None:
        secret_file(tmp_path, text)

    result = tool("glow-put", "--secret-file", str(path), "-t", "t", "--", "true")

    assert result.returncode == 7
    expected = f"glow-put: secret file {path} {problem.format(path=path)}\n"
    assert result.stderr == expected
    assert client.stats()["current-jobs-ready"] == 0


def test_the_signature_counts_toward_the_servers_size_limit(
    beanstalkd_factory, monkeypatch, tmp_path
):
    server = beanstalkd_factory(max_job_size=1000)
    monkeypatch.setenv("GLOW_QUEUE", server.address)
    job = json.dumps({"cmd": "echo", "tube": "t", "args": ["x" * 950]})
    assert tool("glow-put", input=job).returncode == 0

    result = tool("glow-put", "--secret-file", secret_file(tmp_path, OLD), input=job)

    assert result.returncode == 4
    assert result.stderr == (
        f"glow-put: job 1: is 1,077 bytes; the server at {server.address} "
        "takes at most 1,000 (start beanstalkd with a larger -z)\n"
    )
    with server.client() as conn:
        assert conn.stats()["current-jobs-ready"] == 1


def test_secret_file_is_read_from_its_owner_only_file_with_whitespace_trimmed(
    tmp_path,
):
    from glowtools.sign import load_secret

    secret = load_secret(secret_file(tmp_path, f"  {OLD}\n\n"))

    assert (secret.key, secret.kid) == (OLD.encode(), key_id(OLD.encode()))
    assert oct(os.stat(secret.path).st_mode & 0o777) == "0o600"


KEY = Secret(key_id(OLD.encode()), OLD.encode(), "old")
jobs = st.builds(
    Job,
    cmd=st.text(min_size=1).filter(str.strip),
    tube=st.just("t"),
    args=st.lists(st.text()),
    pri=st.integers(0, 2**32 - 1),
    env=st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), st.text()),
)


@given(jobs)
def test_a_signed_body_verifies_to_its_canonical_form(job):
    body = job.to_body()

    assert verify(sign(body, KEY), [KEY]) == body


@given(jobs, st.sampled_from(["cmd", "args", "pri", "env", "tube"]), st.text())
def test_changing_any_field_of_a_signed_body_breaks_the_signature(job, name, value):
    signed = json.loads(sign(job.to_body(), KEY))
    if signed.get(name) == value:
        return
    signed[name] = value

    with pytest.raises(JobInvalid, match="signature does not match its content"):
        verify(json.dumps(signed).encode(), [KEY])


def test_sighup_rereads_the_secret_files_and_keeps_the_old_keys_if_one_is_bad(
    listen, client, tmp_path
):
    path = secret_file(tmp_path, OLD, "listener")
    new = secret_file(tmp_path, NEW, "new")
    listener = listen("--secret-file", path)
    secret_file(tmp_path, NEW, "listener")

    listener.proc.send_signal(signal.SIGHUP)
    listener.wait_log(f"running only jobs signed with key id {kid_of(NEW)}")
    first = put("--secret-file", new, "-t", "t", "--", "true")
    wait_for(lambda: gone(client, first))

    os.chmod(path, 0o644)
    listener.proc.send_signal(signal.SIGHUP)
    listener.wait_log(f"still running only jobs signed with key id {kid_of(NEW)}")
    second = put("--secret-file", new, "-t", "t", "--", "true")
    wait_for(lambda: gone(client, second))
    assert f"secret file {path} has mode 0644" in listener.log
