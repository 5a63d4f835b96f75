"""glow-put against a real beanstalkd: one job, batches, defaults and bad input."""

import json

import pytest
from conftest import tool

GO_BATCH = (
    '[{"cmd":"ls","pri":"0","tube":"foo","delay":"0","mailto":"example@example.com",'
    '"out":"/tmp/glow.out","workdir":"/tmp/glow"},{"cmd":"ps","pri":"1","tube":"bar",'
    '"delay":"0","mailto":"example@example.com","out":"/tmp/glow.out",'
    '"workdir":"/tmp/glow"}]'
)


def body_of(client, job_id: int) -> dict:
    return json.loads(client.peek(job_id).body)


def test_put_one_job_prints_its_id_and_queues_the_body(beanstalkd, client):
    result = tool("glow-put", "--tube", "t", "--pri", "5", "--", "ls", "-l", "/var")

    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout)
    body = {"cmd": "ls", "args": ["-l", "/var"], "tube": "t", "pri": 5}
    assert body_of(client, job_id) == body
    stats = client.stats_job(job_id)
    assert (stats["tube"], stats["pri"], stats["state"]) == ("t", 5, "ready")


def test_original_batch_is_accepted_and_queues_two_jobs(beanstalkd, client):
    result = tool("glow-put", input=GO_BATCH)

    assert result.returncode == 0, result.stderr
    first, second = map(int, result.stdout.split())
    assert body_of(client, first)["tube"] == "foo"
    assert body_of(client, second)["mailto"] == ["example@example.com"]
    assert client.stats_job(second)["pri"] == 1
    assert body_of(client, second)["out"] == "/tmp/glow.out"


@pytest.mark.parametrize(
    "text",
    [
        '{"cmd":"true"}\n{"cmd":"false"}\n',
        '{"cmd":"true"}\n\n{"cmd":"false"}',
        '[{"cmd":"true"},\n {"cmd":"false"}]',
        '[\n  {\n    "cmd": "true"\n  },\n  {\n    "cmd": "false"\n  }\n]\n',
    ],
    ids=["jsonl", "jsonl-blank-no-newline", "array-one-line", "array-pretty"],
)
def test_stdin_formats_take_tube_from_the_command_line(beanstalkd, client, text):
    result = tool("glow-put", "--tube", "nightly", input=text)

    assert result.returncode == 0, result.stderr
    assert client.stats_tube("nightly")["current-jobs-ready"] == 2


def test_fields_in_the_job_override_command_line_defaults(beanstalkd, client):
    text = '{"cmd":"true","tube":"mine","pri":7}\n{"cmd":"true"}\n'
    result = tool("glow-put", "--tube", "theirs", "--pri", "3", input=text)

    mine, theirs = map(int, result.stdout.split())
    assert (client.stats_job(mine)["tube"], client.stats_job(mine)["pri"]) == (
        "mine",
        7,
    )
    assert client.stats_job(theirs)["pri"] == 3


def test_json_output_prints_one_object_per_job(beanstalkd):
    result = tool("glow-put", "--json", "-t", "t", "--", "echo", "a b")

    assert json.loads(result.stdout) == {
        "id": json.loads(result.stdout)["id"],
        "tube": "t",
        "cmd": "echo 'a b'",
    }


def test_args_as_one_string_and_env_list_from_the_go_glow(beanstalkd, client):
    text = '{"cmd":"echo","args":"a \'b c\'","tube":"t","User":"root","Env":["A=1"]}'
    job_id = int(tool("glow-put", input=text).stdout)

    body = body_of(client, job_id)
    assert body["args"] == ["a", "b c"]
    assert (body["user"], body["env"]) == ("root", {"A": "1"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"cmd":"ls","tube":"t","mailt0":"a@b"}',
            "glow-put: job 1: unknown field 'mailt0' (did you mean 'mailto'?)\n",
        ),
        (
            '{"cmd":"ls","tube":"t"}\n{"cmd":"ls","tube":"t"\n',
            "glow-put: job 2 on line 2: is not JSON "
            "(Expecting ',' delimiter at column 23)\n",
        ),
        (
            '[{"cmd":"ls","tube":"t"},{"tube":"t"}]',
            "glow-put: job 2: field 'cmd' is missing\n",
        ),
        (
            '[{"cmd":"ls"}]',
            "glow-put: job 1: field 'tube' is missing (or pass --tube)\n",
        ),
        (
            '[{"cmd":"ls","tube":"t","pri":"high"}]',
            "glow-put: job 1: field 'pri' must be a whole number, not 'high'\n",
        ),
        (
            '[{"cmd":"ls","tube":"-bad"}]',
            "glow-put: job 1: field 'tube' '-bad' is not a tube name "
            "(letters, digits and -+/;.$_() only, not starting with -)\n",
        ),
        ('[1,2', "glow-put: stdin: is not JSON (Expecting ',' delimiter at line 1 "
                 "column 5)\n"),
        ("", "glow-put: stdin: holds no jobs (pipe JSON, or give a command)\n"),
    ],
    ids=["unknown", "bad-line", "no-cmd", "no-tube", "bad-pri", "bad-tube",
         "truncated", "empty"],
)  # fmt: skip
def test_a_bad_job_queues_nothing_and_names_the_job(beanstalkd, client, text, message):
    result = tool("glow-put", input=text)

    assert (result.returncode, result.stderr) == (4, message)
    assert result.stdout == ""
    assert client.stats()["current-jobs-ready"] == 0


def test_a_body_over_the_servers_limit_is_refused_before_anything_is_put(
    beanstalkd_factory, monkeypatch
):
    server = beanstalkd_factory(max_job_size=1000)
    monkeypatch.setenv("GLOW_QUEUE", server.address)
    jobs = '{"cmd":"true","tube":"t"}\n' + json.dumps(
        {"cmd": "echo", "tube": "t", "args": ["x" * 2000]}
    )

    result = tool("glow-put", input=jobs)

    assert result.returncode == 4
    assert result.stderr == (
        f"glow-put: job 2 on line 2: is 2,042 bytes; the server at {server.address} "
        "takes at most 1,000 (start beanstalkd with a larger -z)\n"
    )
    with server.client() as conn:
        assert conn.stats()["current-jobs-ready"] == 0


@pytest.mark.parametrize(
    ("queue", "problem"),
    [
        ("127.0.0.1:1", "beanstalkd at 127.0.0.1:1: refused the connection"),
        ("nosuch.invalid:11300", "host 'nosuch.invalid' does not resolve"),
        ("a:b:c", "queue address 'a:b:c' has more than one ':'"),
        ("host:99999", "queue address 'host:99999' has port '99999', not 1-65535"),
    ],
)
def test_an_unusable_queue_address_exits_3_with_one_line(queue, problem):
    result = tool("glow-put", "--queue", queue, "-t", "t", "--", "true")

    assert result.returncode == 3
    assert problem in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_silent_server_times_out_instead_of_hanging(monkeypatch):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        result = tool(
            "glow-put", "--queue", address, "-t", "t", "--", "true",
            env={"GLOW_COMMAND_TIMEOUT": "1"},
        )  # fmt: skip

    assert result.returncode == 3
    assert result.stderr == (
        f"glow-put: beanstalkd at {address}: stopped answering (timed out) "
        "(start beanstalkd there, or point GLOW_QUEUE or --queue at a running one)\n"
    )


def test_a_line_that_needs_no_change_is_put_as_written(beanstalkd, client):
    as_written = '{"tube": "t", "cmd": "env", "env": {"B": "2", "A": "1"}}'
    relative = '{"tube": "t", "cmd": "ls", "out": "log.txt", "pri": "7"}'

    result = tool("glow-put", input=f"{as_written}\n{relative}\n")

    assert result.returncode == 0, result.stderr
    first, second = map(int, result.stdout.split())
    assert client.peek(first).body == as_written.encode()
    body = client.peek(second).body
    assert json.loads(body)["pri"] == 7
    assert (
        body
        == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    )
