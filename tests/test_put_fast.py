"""glow-put's fast paths: a plain command line read without typer, and a large
JSON Lines batch read on two processes. Each must give what the slow path gives."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tool
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from glowtools import cli, put
from glowtools.defaults import DEPS_ENV, QUEUE_ENV, SECRET_ENV
from glowtools.errors import JobInvalid
from glowtools.hold import index_tube
from glowtools.job import parse_job
from glowtools.sign import load_secret, verify

# Large enough for a helper: put.HELP_FROM bytes and more.
LINES = 2400
PAD = "p" * 300


def typer_reads(argv: list[str], monkeypatch) -> dict:
    """Returns the options glow-put's typer app hands to put() for `argv`."""
    seen = {}
    monkeypatch.setattr(put, "put", seen.update)
    command = cli._lean(put._app())
    command.main(args=argv, prog_name="glow-put", standalone_mode=False)
    return seen


def saying(options: dict) -> dict:
    """The options that say something: typer passes the rest as None, empty,
    False or 0."""
    return {k: v for k, v in options.items() if v is not None and v not in ([], 0)}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--queue", "10.0.0.1:11300"],
        ["--queue=10.0.0.1:11300", "-t", "nightly"],
        ["--tube", "a=b", "--", "ls", "-l", "--", "--tube"],
        ["-t", "x", "--secret-file", "/etc/glow/key", "--", "true"],
        ["--secret-file=/etc/glow/key"],
        ["--", "echo", "-v", "--json"],
    ],
)
@pytest.mark.parametrize(
    "env",
    [{}, {QUEUE_ENV: "q:1", SECRET_ENV: "/a:/b", DEPS_ENV: "/rules.json"}],
    ids=["no-env", "env"],
)
def test_a_plain_command_line_reads_as_typer_reads_it(argv, env, monkeypatch):
    for name in (QUEUE_ENV, SECRET_ENV, DEPS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    plain = put.plain_options(argv, env)

    assert plain is not None
    assert saying(plain) == saying(typer_reads(argv, monkeypatch))


@pytest.mark.parametrize(
    "argv",
    [
        ["--json"],
        ["-v", "--", "true"],
        ["--help"],
        ["--tube"],
        ["--tube", "-x"],
        ["--tube="],
        ["-tnightly"],
        ["-t=nightly"],
        ["ls", "-l"],
        ["--"],
        ["-t", "a", "-t", "b"],
        ["--tubes", "a"],
        ["--pri", "3", "--", "true"],
    ],
)
def test_any_other_command_line_is_left_to_typer(argv):
    assert put.plain_options(argv, {}) is None


def test_an_empty_first_secret_file_in_the_environment_is_left_to_typer():
    assert put.plain_options([], {SECRET_ENV: ":/b"}) is None


def test_a_plain_put_imports_no_typer(beanstalkd):
    code = (
        "import sys; from glowtools.put import main; "
        "sys.argv = ['glow-put', '-t', 't', '--', 'true']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "glowtools.put" in imported
    assert not [name for name in imported if name.startswith(("typer", "click"))]


def job_line(n: int, **fields) -> str:
    job = {"tube": "big", "cmd": "echo", "args": [str(n)], "env": {"PAD": PAD}}
    return json.dumps({**job, **fields})


def large_batch(**lines: str) -> list[str]:
    """LINES job lines; `lines` replaces some, by 1-based number (`n1500`)."""
    text = [job_line(n) for n in range(1, LINES + 1)]
    for name, line in lines.items():
        text[int(name[1:]) - 1] = line
    assert len("\n".join(text)) > put.HELP_FROM
    return text


def test_a_large_batch_is_put_whole_in_order_and_as_written(beanstalkd, client):
    relative = job_line(2000, out="log.txt")
    text = large_batch(n2000=relative)

    result = tool("glow-put", input="\n".join(text) + "\n")

    assert result.returncode == 0, result.stderr
    ids = [int(line) for line in result.stdout.split()]
    assert len(ids) == LINES and ids == sorted(ids)
    assert client.stats_tube("big")["current-jobs-ready"] == LINES
    for n in (1, LINES // 2, LINES // 2 + 1, LINES):
        assert client.peek(ids[n - 1]).body == text[n - 1].encode()
    changed = json.loads(client.peek(ids[1999]).body)
    assert changed["out"] == str(Path.cwd() / "log.txt")


def test_a_bad_line_late_in_a_large_batch_queues_nothing(beanstalkd, client):
    text = large_batch(n2000=job_line(2000, pri="soon"))
    text.insert(9, "   ")  # a blank line: job numbers fall one behind lines

    result = tool("glow-put", input="\n".join(text))

    assert result.returncode == 4
    assert result.stderr == (
        "glow-put: job 2000 on line 2001: field 'pri' must be a whole number, "
        "not 'soon'\n"
    )
    assert "big" not in client.tubes()


def test_a_bad_byte_late_in_a_large_batch_is_named_by_its_offset(beanstalkd, client):
    text = large_batch()
    data = "\n".join(text).encode()
    at = data.index(b'"2300"') + 1
    data = data[:at] + b"\xff" + data[at + 1 :]

    result = tool("glow-put", input=data)

    assert result.returncode == 4
    assert result.stderr == f"glow-put: stdin: is not UTF-8 (byte {at})\n"
    assert "big" not in client.tubes()


def test_a_held_job_late_in_a_large_batch_is_held_with_its_record(beanstalkd, client):
    text = large_batch(n2200=job_line(2200, after=["upstream"]))

    result = tool("glow-put", input="\n".join(text))

    assert result.returncode == 0, result.stderr
    ids = [int(line) for line in result.stdout.split()]
    assert client.stats_job(ids[2199])["state"] == "delayed"
    assert client.stats_job(ids[2198])["state"] == "ready"
    record = client.stats_tube(index_tube("big"))
    assert record["current-jobs-ready"] == 1


def test_a_large_signed_batch_is_signed_in_both_halves(beanstalkd, client, tmp_path):
    key = tmp_path / "key"
    key.write_text("a-secret-for-large-batches-0123")
    key.chmod(0o600)
    text = large_batch()

    result = tool("glow-put", "--secret-file", str(key), input="\n".join(text))

    assert result.returncode == 0, result.stderr
    ids = [int(line) for line in result.stdout.split()]
    secret = load_secret(key)
    for n in (1, LINES):
        body = verify(client.peek(ids[n - 1]).body, [secret])
        assert json.loads(body) == json.loads(text[n - 1])


def test_a_held_job_early_in_a_large_batch_is_held_too(beanstalkd, client):
    text = large_batch(n10=job_line(10, after=["upstream"]))

    result = tool("glow-put", input="\n".join(text))

    assert result.returncode == 0, result.stderr
    ids = [int(line) for line in result.stdout.split()]
    assert len(ids) == LINES
    assert client.stats_job(ids[9])["state"] == "delayed"
    assert client.stats_tube("big")["current-jobs-ready"] == LINES - 1


def test_a_large_batch_takes_the_command_lines_defaults_in_both_halves(
    beanstalkd, client
):
    text = [
        json.dumps({"cmd": "echo", "args": [str(n)], "env": {"PAD": PAD}})
        for n in range(1, LINES + 1)
    ]

    result = tool("glow-put", "--tube", "given", "--pri", "7", input="\n".join(text))

    assert result.returncode == 0, result.stderr
    ids = [int(line) for line in result.stdout.split()]
    assert client.stats_tube("given")["current-jobs-ready"] == LINES
    for n in (1, LINES):
        body = client.peek(ids[n - 1]).body
        expected = {**json.loads(text[n - 1]), "tube": "given", "pri": 7}
        assert json.loads(body) == expected
        assert client.stats_job(ids[n - 1])["pri"] == 7


# For each field: its default, other values, and values that parse to another type.
FIELD_VALUES = {
    "args": [[], ["a"], ["a", 1], "a b"],
    "pri": [1024, 0, 7, "7"],
    "delay": [0, 5, "5"],
    "ttr": [120, 60, "60"],
    "workdir": ["/tmp", "/x"],
    "out": ["/dev/null", "/x/out"],
    "stdout": ["/dev/null", "/x/out"],
    "stderr": ["/dev/null", "/x/out", "/x/err"],
    "mailto": [[], ["a@b.c"], "a@b.c"],
    "env": [{}, {"A": "1"}, ["A=1"], {"A": 1}],
    "user": [None, "", "u1"],
    "retries": [0, 2, "2"],
    "retry_delay": [0, 3],
    "timeout": [5, 5.0, 0.5],
    "limits": [{}, {"nofile": 64}, {"memory": "1M"}],
    "after": [[], ["up"], "up,down"],
    "after_jobs": [[], [4], "4"],
    "after_any": [False, True, "true"],
    "User": ["u1"],
    "Env": [{"A": "1"}],
}
job_lines = st.fixed_dictionaries(
    {"cmd": st.just("true"), "tube": st.just("t")},
    optional={name: st.sampled_from(values) for name, values in FIELD_VALUES.items()},
)


@settings(max_examples=600, deadline=None)
@given(raw=job_lines)
def test_the_quick_check_of_a_line_agrees_with_the_jobs_canonical_fields(raw):
    try:
        job = parse_job(raw, "line")
    except JobInvalid:
        assume(False)

    # A line naming output files is left to the full comparison, which glow-put
    # then makes: to_dict may merge stdout and stderr into out.
    canonical = job.to_dict() == raw
    outputs = raw.keys() & {"out", "stdout", "stderr"}
    assert job.parsed_as_is(raw) == (canonical and not outputs)
