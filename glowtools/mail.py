"""Failure mail: one message per buried job, to the addresses in its `mailto`.

Sending happens on a thread of its own, so that a slow or absent mail server
holds up no job; a mail that cannot be sent is logged and dropped.
"""

import logging
import os
import queue
import shlex
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from .defaults import (
    MAIL_QUEUE_MAX,
    MAIL_TIMEOUT,
    SMTP_PASSWORD_ENV,
    SMTP_PASSWORD_FILE_ENV,
    SMTP_PORT,
    SMTP_USER_ENV,
)
from .errors import ConfigInvalid

log = logging.getLogger("glowtools.mail")


@dataclass
class MailSettings:
    """Where failure mail goes out and as whom."""

    host: str
    port: int
    sender: str
    starttls: bool = False
    user: str | None = None
    password: str | None = None


def mail_settings(smtp: str, sender: str, starttls: bool) -> MailSettings:
    """Reads --smtp HOST[:PORT] and the login from the environment.

    The login is GLOW_SMTP_USER with GLOW_SMTP_PASSWORD or the first line of
    the file GLOW_SMTP_PASSWORD_FILE names. Raises ConfigInvalid.
    """
    host, _, port = smtp.strip().rpartition(":") if ":" in smtp else (smtp, "", "")
    port = port or str(SMTP_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigInvalid(f"--smtp {smtp!r} is not HOST:PORT (e.g. localhost:25)")
    if sender.count("@") != 1 or any(c in sender for c in "\r\n<>"):
        raise ConfigInvalid(f"--mail-from {sender!r} is not an address")
    user = os.environ.get(SMTP_USER_ENV) or None
    password = os.environ.get(SMTP_PASSWORD_ENV) or _password_file()
    if bool(user) != bool(password):
        raise ConfigInvalid(
            f"SMTP login needs both {SMTP_USER_ENV} and {SMTP_PASSWORD_ENV} (or "
            f"{SMTP_PASSWORD_FILE_ENV}); set both or neither"
        )
    return MailSettings(host, int(port), sender, starttls, user, password)


def _password_file() -> str | None:
    path = os.environ.get(SMTP_PASSWORD_FILE_ENV)
    if not path:
        return None
    try:
        with open(path) as stream:
            return stream.readline().rstrip("\n") or None
    except OSError as exc:
        raise ConfigInvalid(
            f"{SMTP_PASSWORD_FILE_ENV} {path}: {exc.strerror} (make it readable "
            "by the listener's user only)"
        ) from None


def failure_mail(report: dict, recipients: list[str], sender: str) -> EmailMessage:
    """Returns the mail telling `recipients` about a failed job's report."""
    command = shlex.join([report["cmd"], *report["args"]])
    msg = EmailMessage()
    msg["Subject"] = (
        f"glow: {_shorten(' '.join(command.split()), 60)} failed on {report['host']} "
        f"(tube {report['tube']})"
    )
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.partition("@")[2] or None)
    msg.set_content(_body(report, command))
    return msg


def _body(report: dict, command: str) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report["started"]))
    ended = report.get("ended") or report["error"]
    lines = [
        f"Job {report['id']} failed on {report['host']}.",
        "",
        f"command:  {command}",
        f"tube:     {report['tube']}",
        f"host:     {report['host']}",
        f"job id:   {report['id']}",
        f"attempt:  {report['attempt']} of {report['attempts']}",
        f"ended:    {ended}",
        f"reason:   {report.get('reason') or 'the command failed'}",
        f"started:  {started}",
        f"duration: {report['duration']:.2f} s",
    ]
    for stream in ("stderr", "stdout"):
        tail = report.get(f"{stream}_tail") or ""
        lines += ["", f"last lines of {stream}:" if tail else f"{stream}: (empty)"]
        lines += [f"  {line}" for line in tail.splitlines()]
    return "\n".join(lines) + "\n"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


class Mailer:
    """Sends failure mail on its own thread; a failed send is logged, never raised."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self._queue: queue.Queue = queue.Queue(MAIL_QUEUE_MAX)
        self._thread = threading.Thread(target=self._run, name="mailer", daemon=True)
        self._thread.start()

    def send(self, report: dict, recipients: list[str]) -> None:
        """Queues the mail for a failed job; returns at once."""
        msg = failure_mail(report, recipients, self.settings.sender)
        try:
            self._queue.put_nowait((report["id"], msg))
        except queue.Full:
            log.warning("job %d: failure mail dropped, too many waiting", report["id"])

    def close(self, timeout: float = MAIL_TIMEOUT) -> None:
        """Sends what is queued, waiting at most `timeout` seconds."""
        self._queue.put((None, None))
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job_id, msg = self._queue.get()
            if msg is None:
                return
            try:
                self._deliver(msg)
                log.info("job %d: failure mail sent to %s", job_id, msg["To"])
            except (OSError, smtplib.SMTPException) as exc:
                log.warning(
                    "job %d: failure mail to %s not sent: %s (mail server %s:%d)",
                    job_id, msg["To"], _problem(exc), self.settings.host,
                    self.settings.port,
                )  # fmt: skip

    def _deliver(self, msg: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=MAIL_TIMEOUT) as smtp:
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.user:
                smtp.login(s.user, s.password)
            smtp.send_message(msg)


def _problem(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "every recipient was refused"
    return str(exc) or type(exc).__name__
