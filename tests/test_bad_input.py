"""Bad input everywhere: one line, a documented status, and nothing lost or half-put."""

import json
import re
import signal
import socket
import threading

import pytest
from conftest import Listener, error_reports, tool, wait_for
from test_listen import gone, state

DEEP = "[" * 100_000
LONG_NUMBER = "9" * 5000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello", "stdin: is not JSON (Expecting value at line 1 column 1)"),
        (b"\xff{}", "stdin: is not UTF-8 (byte 0)"),
        (DEEP, "stdin: is not JSON (nested too deeply)"),
        ('{"cmd":"ls","tube":"t","pri":' + LONG_NUMBER + "}",
         "job 1 on line 1: is not JSON (a number has too many digits)"),
        ('[{"cmd":"ls","tube":"t","pri":' + LONG_NUMBER + "}]",
         "stdin: is not JSON (a number has too many digits)"),
        ('{"cmd":"ls","tube":"t","pri":1e400}',
         "job 1: field 'pri' must be a whole number, not inf"),
        ('{"cmd":"ls","tube":"t","pri":4294967296}',
         "job 1: field 'pri' is 4294967296, outside 0..4294967295"),
        ('{"cmd":"ls","tube":"t","delay":-1}',
         "job 1: field 'delay' is -1, outside 0..2147483646"),
        ('{"cmd":"ls","tube":"t","timeout":"nan"}',
         "job 1: field 'timeout' is nan, outside 0..4294967295 seconds"),
        ('{"cmd":"ls","tube":"t","args":{"a":1}}',
         "job 1: field 'args' must be a list of strings, not an object"),
        ('{"cmd":["ls"],"tube":"t"}',
         "job 1: field 'cmd' must be a string, not an array"),
        ('{"cmd":"ls","tube":"t","env":{"A":[1]}}',
         "job 1: field 'env' must hold strings, not an array"),
        ('{"cmd":"ls","tube":"t","limits":{"memory":true}}',
         "job 1: field 'limits' limit 'memory' must be a size such as 512M or 2G, "
         "not True"),
        ('{"cmd":"ls","tube":"a b"}',
         "job 1: field 'tube' 'a b' is not a tube name (letters, digits and "
         "-+/;.$_() only, not starting with -)"),
        ('{"cmd":"ls","tube":"%s"}' % ("x" * 201),
         "job 1: field 'tube' is 201 characters; the limit is 200"),
        ('{"cmd":"ls","tube":"GLOW_ERRORS"}',
         "job 1: field 'tube' names 'GLOW_ERRORS'; GLOW_ tubes are glowtools' own"),
        ('{"cmd":"ls\\u0000","tube":"t"}', "job 1: field 'cmd' contains a NUL byte"),
        (b'{"cmd":"ls\x00","tube":"t"}',
         "job 1 on line 1: is not JSON (Invalid control character at column 11)"),
        ('{"cmd":"\\ud800","tube":"t"}',
         "job 1: field 'cmd' is not valid Unicode (a lone surrogate)"),
        ('{"cmd":"ls","tube":"t","out":"/tmp/../etc/cron.d/x"}',
         "job 1: field 'out' must not go up with '..' ('/tmp/../etc/cron.d/x'); "
         "name the folder"),
    ],
    ids=["not-json", "not-utf8", "deep", "long-number-line", "long-number-array",
         "inf", "pri-over", "delay-negative", "timeout-nan", "args-object",
         "cmd-array", "env-array", "limit-bool", "tube-space", "tube-long",
         "tube-internal", "nul-escaped", "nul-raw", "lone-surrogate", "dotdot"],
)  # fmt: skip
def test_bad_stdin_exits_4_with_one_line_and_puts_nothing(client, text, message):
    batch = text if isinstance(text, bytes) else text.encode()

    alone = tool("glow-put", input=batch)
    after_a_good_job = tool("glow-put", input=b'{"cmd":"true","tube":"t"}\n' + batch)

    assert (alone.returncode, alone.stdout) == (4, ""), alone.stderr
    assert alone.stderr == f"glow-put: {message}\n"
    assert (after_a_good_job.returncode, after_a_good_job.stdout) == (4, "")
    assert after_a_good_job.stderr.count("\n") == 1
    assert client.stats()["total-jobs"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tube", "a b", "--", "ls"], "the job: field 'tube' 'a b' is not a tube "
         "name (letters, digits and -+/;.$_() only, not starting with -)"),
        (["-t", "t", "--pri", "99999999999999999999999", "--", "ls"],
         "the job: field 'pri' must be a whole number, not '99999999999999999999999'"),
        (["-t", "t", "--env", "NOEQUALS", "--", "ls"],
         "--env: 'NOEQUALS' is not NAME=value"),
        (["-t", "t", "--workdir", "/srv/../etc", "--", "ls"],
         "the job: field 'workdir' must not go up with '..' ('/srv/../etc'); "
         "name the folder"),
        (["-t", "t", "--", "ls", "\udcff"],
         "the job: field 'args' is not valid Unicode (a lone surrogate)"),
    ],
    ids=["tube", "huge-pri", "env", "dotdot", "undecodable-arg"],
)  # fmt: skip
def test_bad_options_exit_4_with_one_line_and_put_nothing(client, args, message):
    result = tool("glow-put", *[a.encode("utf-8", "surrogateescape") for a in args])

    assert (result.returncode, result.stdout) == (4, ""), result.stderr
    assert result.stderr == f"glow-put: {message}\n"
    assert client.stats()["total-jobs"] == 0


def test_a_100_mb_stdin_line_is_refused_for_its_size(beanstalkd, client):
    line = b'{"cmd":"echo","tube":"t","args":["' + b"x" * 100 * 2**20 + b'"]}\n'

    result = tool("glow-put", input=b'{"cmd":"true","tube":"t"}\n' + line)

    assert result.returncode == 4
    assert result.stderr == (
        f"glow-put: job 2 on line 2: is 104,857,637 bytes; the server at "
        f"{beanstalkd.address} takes at most 65,535 (start beanstalkd with a larger "
        "-z)\n"
    )
    assert client.stats()["total-jobs"] == 0


def test_relative_output_paths_from_the_command_line_become_absolute(
    beanstalkd, client, tmp_path
):
    result = tool("glow-put", "-t", "t", "--out", "../x/out.log", "--", "true")

    body = json.loads(client.peek(int(result.stdout)).body)
    assert body["out"].startswith("/") and ".." not in body["out"].split("/")


BAD_BODIES = [
    (DEEP[:60_000].encode(), "body: is not JSON (nested too deeply)"),
    (b'{"cmd":"true","tube":"t","pri":%s}' % LONG_NUMBER.encode(),
     "body: is not JSON (a number has too many digits)"),
    (b'{"cmd":"\\ud800","tube":"t"}',
     "body: field 'cmd' is not valid Unicode (a lone surrogate)"),
    (b'{"cmd":"true","tube":"t","env":{"A":"\\udcff"}}',
     "body: field 'env' is not valid Unicode (a lone surrogate)"),
    (b'{"cmd":"true","tube":"t","stdout":"/tmp/../etc/cron.d/x"}',
     "body: field 'stdout' must not go up with '..' ('/tmp/../etc/cron.d/x'); "
     "name the folder"),
    (b'{"cmd":"true","tube":"t","workdir":"tmp"}',
     "body: field 'workdir' must be an absolute path, not 'tmp'"),
    (b'{"cmd":"true","tube":"t","args":{"a":1}}',
     "body: field 'args' must be a list of strings, not an object"),
    (b'{"cmd":"true","tube":"t","mailto":"a@b\\r\\nBcc: x@y"}',
     "body: field 'mailto' holds 'a@b\\r\\nBcc: x@y', which is not an address"),
    (b'{"cmd":"true","tube":"GLOW_ERRORS"}',
     "body: field 'tube' names 'GLOW_ERRORS'; GLOW_ tubes are glowtools' own"),
    (b"", "body: is not JSON (Expecting value at character 0)"),
    (b"\x00\x01\x02", "body: is not JSON (Expecting value at character 0)"),
    (b'"a string"', "body: is a JSON string, not an object"),
    (b"null", "body: is a JSON null, not an object"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "error"), BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_listener_buries_a_hostile_body_with_a_report_and_runs_the_next_job(
    listen, client, tmp_path, body, error
):
    listen()
    client.use("t")
    bad = client.put(body)
    good = client.put(b'{"cmd":"true","tube":"t"}')

    (report,) = error_reports(client, 1)
    assert (report["id"], report["error"]) == (bad, error)
    assert state(client, bad) == "buried"
    wait_for(lambda: gone(client, good))


def test_listener_keeps_retrying_a_silent_server_and_stops_on_sigint(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        env = {"GLOW_QUEUE": address, "GLOW_COMMAND_TIMEOUT": "0.5"}
        listener = Listener([], tmp_path / "listener.log", env)
        try:
            wait_for(lambda: listener.log.count("retrying in") >= 2, 30, "retries")
            assert listener.proc.poll() is None
            assert listener.stop(signal.SIGINT) == 0
        finally:
            listener.proc.kill()
            listener.logfile.close()

    assert f"beanstalkd at {address}: stopped answering (timed out)" in listener.log
    assert "Traceback" not in listener.log


def test_listener_with_an_unusable_queue_address_exits_3(tmp_path):
    result = tool("glow-listen", "--queue", "a:b:c", timeout=20)

    assert result.returncode == 3
    assert result.stderr == (
        "glow-listen: queue address 'a:b:c' has more than one ':' (put IPv6 in [ ]) "
        "(write it as host:port, e.g. 127.0.0.1:11300)\n"
    )


class CuttingProxy:
    """Forwards TCP to beanstalkd; cuts its first connection after `cut` bytes
    from the client, so that puts the server took may lose their answers."""

    def __init__(self, port: int, cut: int, once: bool = False) -> None:
        self.port, self.cut, self.once = port, cut, once
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            limit = self.cut if self.connections == 0 else None
            self.connections += 1
            if self.once:
                self.server.close()
            pair = (client, upstream)
            threading.Thread(target=_pipe, args=(client, upstream, limit, pair)).start()
            threading.Thread(target=_pipe, args=(upstream, client, None, pair)).start()

    def close(self) -> None:
        self.server.close()


def _pipe(src, dst, limit, pair) -> None:
    sent = 0
    try:
        while chunk := src.recv(65536):
            if limit is not None and sent + len(chunk) >= limit:
                dst.sendall(chunk[: limit - sent])
                break
            dst.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    for sock in pair:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@pytest.mark.parametrize("cut", [300, 20_000, 150_000, 900_000])
def test_a_server_closing_mid_batch_leaves_nothing_queued(beanstalkd, client, cut):
    proxy = CuttingProxy(beanstalkd.port, cut)
    jobs = "".join(
        json.dumps({"cmd": "echo", "tube": "t", "args": [str(n)]}) + "\n"
        for n in range(20_000)
    )

    result = tool("glow-put", "--queue", proxy.address, input=jobs)
    proxy.close()

    assert (result.returncode, result.stdout) == (8, ""), result.stderr
    assert result.stderr.startswith(
        f"glow-put: beanstalkd at {proxy.address}: closed the connection"
    )
    assert result.stderr.endswith(
        "of 20000 jobs put before it were deleted again, so nothing is queued "
        "(run glow-put again)\n"
    ), result.stderr
    stats = client.stats()
    assert (stats["current-jobs-ready"], stats["current-jobs-delayed"]) == (0, 0)


def test_a_batch_that_cannot_be_taken_back_says_which_ids_stay_queued(
    beanstalkd, client
):
    proxy = CuttingProxy(beanstalkd.port, 60_000, once=True)
    jobs = '{"cmd":"true","tube":"t"}\n' * 2000

    result = tool("glow-put", "--queue", proxy.address, input=jobs)

    queued = client.stats()["current-jobs-ready"]
    assert result.returncode == 8, result.stderr
    assert re.fullmatch(
        f"glow-put: beanstalkd at {proxy.address}: closed the connection \\(.*\\); "
        r"(\d+) of 2000 jobs were put and could not be taken back \(ids 1-\1\), "
        r"and up to \d+ more may have been put without an answer; the rest were "
        r"not put\n",
        result.stderr,
    ), result.stderr
    assert queued >= int(re.search(r"(\d+) of 2000", result.stderr)[1])


def test_a_command_with_line_breaks_cannot_add_mail_headers():
    from glowtools.mail import failure_mail

    report = {
        "id": 7, "tube": "t", "host": "h", "cmd": "x\r\nBcc: victim@example.com",
        "args": ["\nSubject: forged", "a\r\n\r\nbody"], "error": "exit 1",
        "exit_code": 1, "signal": None, "started": 0.0, "duration": 1.0,
        "attempt": 1, "attempts": 1, "stdout_tail": "", "stderr_tail": "",
    }  # fmt: skip

    msg = failure_mail(report, ["ops@example.com"], "glow@example.com")

    headers = msg.as_string().split("\n\n", 1)[0]
    assert "\r" not in msg["Subject"] and "\n" not in msg["Subject"]
    names = [line.split(":")[0] for line in headers.splitlines() if line[:1] != " "]
    assert names == [
        "Subject", "From", "To", "Date", "Message-ID", "Content-Type",
        "Content-Transfer-Encoding", "MIME-Version",
    ]  # fmt: skip


HOSTILE = [DEEP[:60_000].encode(), b'{"pri":' + LONG_NUMBER.encode() + b"}", b"\xff"]
INTERNAL = ["GLOW_HELD.t", "GLOW_PAUSED.t", "GLOW_LISTENER.h.1", "GLOW_ERRORS"]


def test_other_tools_survive_hostile_bodies_in_user_and_internal_tubes(client):
    ids = []
    for tube in ["t", *INTERNAL]:
        client.use(tube)
        ids += [client.put(body) for body in HOSTILE]

    runs = [["glow-stats"], ["glow-stats", "--json"], ["glow-dep", "--once"]]
    runs += [["glow-peek", str(job_id)] for job_id in ids[:3]]
    for args in runs:
        result = tool(*args, timeout=30)

        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr, args


@pytest.mark.parametrize("job_id", ["18446744073709551616", "9" * 30, "²", "١"])
@pytest.mark.parametrize(
    "args", [["glow-peek"], ["glow-kick", "--id"], ["glow-delete"]], ids=str
)
def test_a_job_id_beanstalkd_cannot_hold_is_a_usage_error(client, args, job_id):
    result = tool(*args, job_id)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert client.stats()["cmd-peek"] == 0
