"""Failure mail through a real SMTP server (aiosmtpd) started by the tests."""

import email
import email.policy
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from conftest import error_reports, free_port, tool, wait_for
from support import gone, put

HOST = os.uname().nodename


class Inbox:
    """An aiosmtpd handler that keeps what it receives, or refuses it."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
        self.mails: list[tuple[str, list[str], email.message.EmailMessage]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refuse:
            return self.refuse
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret")


def serve(inbox: Inbox, **options) -> Controller:
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    return controller


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, str]]:
    """An SMTP server on a free port; yields its inbox and HOST:PORT."""
    inbox = Inbox()
    controller = serve(inbox)
    yield inbox, f"127.0.0.1:{controller.port}"
    controller.stop()


def test_failed_job_mails_its_addresses_once_with_what_happened(listen, client, smtp):
    inbox, address = smtp
    listen("--smtp", address, "--mail-from", "glow@example.org")
    script = "echo first; echo second; echo trouble >&2; exit 3"

    job_id = put("-t", "mailt", "--mailto", "a@example.org,b@example.org",
                 "--retries", "1", "--", "sh", "-c", script)  # fmt: skip

    (report,) = error_reports(client, 1, timeout=20)
    wait_for(lambda: inbox.mails, what="the failure mail")
    (sender, recipients, msg), *more = inbox.mails
    assert (sender, recipients, more) == (
        "glow@example.org", ["a@example.org", "b@example.org"], []
    )  # fmt: skip
    assert msg["Subject"] == (
        f"glow: sh -c 'echo first; echo second; echo trouble >&2; exit 3' failed on "
        f"{HOST} (tube mailt)"
    )
    body = msg.get_content().replace("\r\n", "\n")
    for line in [
        f"Job {job_id} failed on {HOST}.", "command:  sh -c 'echo first;",
        "tube:     mailt", f"host:     {HOST}", f"job id:   {job_id}",
        "attempt:  2 of 2", "ended:    exit 3", "reason:   the command failed",
        "started:  20", "duration: ", "last lines of stderr:\n  trouble\n",
        "last lines of stdout:\n  first\n  second\n",
    ]:  # fmt: skip
        assert line in body
    assert report["attempt"] == 2


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--timeout", "0.5", "--", "sleep", "30"], "timeout"),
        (["--", "no-such-glow-command"], "command 'no-such-glow-command' not found"),
    ],
    ids=["timeout", "missing-command"],
)
def test_failure_mail_names_the_reason(listen, client, smtp, args, reason):
    inbox, address = smtp
    listen("--smtp", address)

    put("-t", "t", "--mailto", "ops@example.org", *args)

    wait_for(lambda: inbox.mails, what="the failure mail")
    sender, _, msg = inbox.mails[0]
    assert f"reason:   {reason}\r\n" in msg.get_content()
    assert sender == f"glow@{HOST}"


def test_successful_job_and_job_without_mailto_send_no_mail(listen, client, smtp):
    inbox, address = smtp
    listener = listen("--smtp", address)
    ok = put("-t", "t", "--mailto", "ops@example.org", "--", "true")
    quiet = put("-t", "t", "--", "false")

    wait_for(lambda: gone(client, ok))
    error_reports(client, 1)
    listener.stop()
    assert inbox.mails == []
    assert f"job {quiet} (tube t) failed" in listener.log


def test_mail_server_down_loses_no_report_and_stops_nothing(listen, client):
    listener = listen("--smtp", f"127.0.0.1:{free_port()}")

    failed = put("-t", "t", "--mailto", "ops@example.org", "--", "false")

    (report,) = error_reports(client, 1)
    assert report["id"] == failed
    listener.wait_log(f"job {failed}: failure mail to ops@example.org not sent: ")
    after = put("-t", "t", "--", "true")
    wait_for(lambda: gone(client, after), what="the next job to run")


def test_mail_server_that_refuses_is_logged(listen, client):
    inbox = Inbox(refuse="554 5.7.1 no thanks")
    controller = serve(inbox)
    try:
        listener = listen("--smtp", f"127.0.0.1:{controller.port}")
        failed = put("-t", "t", "--mailto", "ops@example.org", "--", "false")

        (report,) = error_reports(client, 1)
        listener.wait_log(
            f"job {failed}: failure mail to ops@example.org not sent: 554"
        )
        assert report["id"] == failed
    finally:
        controller.stop()


def test_smtp_login_comes_from_the_environment(listen, client, tmp_path):
    inbox = Inbox()
    controller = serve(inbox, authenticator=inbox.authenticate, auth_require_tls=False)
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    env = {"GLOW_SMTP_USER": "glow", "GLOW_SMTP_PASSWORD_FILE": str(secret)}
    try:
        listen("--smtp", f"127.0.0.1:{controller.port}", env=env)
        put("-t", "t", "--mailto", "ops@example.org", "--", "false")

        wait_for(lambda: inbox.mails, what="the failure mail")
        assert inbox.logins == [(b"glow", b"s3cret")]
    finally:
        controller.stop()


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl to make a cert")
def test_starttls_protects_the_login(listen, client, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = serve(inbox, authenticator=inbox.authenticate, tls_context=context,
                       require_starttls=True)  # fmt: skip
    env = {"GLOW_SMTP_USER": "glow", "GLOW_SMTP_PASSWORD": "s3cret",
           "SSL_CERT_FILE": str(cert)}  # fmt: skip
    try:
        listen("--smtp", f"127.0.0.1:{controller.port}", "--smtp-starttls", env=env)
        put("-t", "t", "--mailto", "ops@example.org", "--", "false")

        wait_for(lambda: inbox.mails, what="the failure mail")
        assert inbox.logins == [(b"glow", b"s3cret")]
    finally:
        controller.stop()


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--smtp", "mail:smtp"], {},
         "--smtp 'mail:smtp' is not HOST:PORT (e.g. localhost:25)"),
        (["--smtp", "mail:25", "--mail-from", "nobody"], {},
         "--mail-from 'nobody' is not an address"),
        (["--smtp", "mail:25"], {"GLOW_SMTP_USER": "glow"},
         "SMTP login needs both GLOW_SMTP_USER and GLOW_SMTP_PASSWORD (or "
         "GLOW_SMTP_PASSWORD_FILE); set both or neither"),
        (["--mail-from", "glow@example.org"], {},
         "--mail-from and --smtp-starttls need --smtp HOST:PORT"),
    ],
    ids=["port", "sender", "half-login", "no-smtp"],
)  # fmt: skip
def test_bad_mail_settings_stop_the_listener_at_start(beanstalkd, args, env, message):
    result = tool("glow-listen", *args, env=env, timeout=20)

    assert result.returncode == 7, result.stderr
    assert result.stderr == f"glow-listen: {message}\n"
