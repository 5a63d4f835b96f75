"""Connecting to beanstalkd with timeouts, and putting jobs in pipelined batches."""

import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import greenstalk

from .defaults import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    DEFAULT_MAX_JOB_SIZE,
    DEFAULT_PORT,
    DEFAULT_QUEUE,
    QUEUE_ENV,
    TIMEOUT_ENV,
)
from .errors import AddressInvalid, QueueUnreachable, ServerRefused

# How many puts go out in one write; two windows are in flight at most. Large
# enough to hide the round trip, small enough that their answers fit the socket
# buffer, so beanstalkd never waits for us to read.
PIPELINE_WINDOW = 512


def queue_address(value: str | None = None) -> str:
    """Returns the queue address from an option, else GLOW_QUEUE, else the default."""
    return value or os.environ.get(QUEUE_ENV) or DEFAULT_QUEUE


def parse_address(address: str) -> tuple[str, int]:
    """Splits host:port (or [v6]:port, or a bare host) into a host and a port."""
    text = address.strip()
    if not text:
        raise AddressInvalid(address, "is empty")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise AddressInvalid(address, "has an unclosed [")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise AddressInvalid(address, "has more than one ':' (put IPv6 in [ ])")
    else:
        host, port_text = text, ""
    if not host:
        raise AddressInvalid(address, "has no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AddressInvalid(address, f"has port {port_text!r}, not 1-65535")
    return host, int(port_text)


def connect(
    address: str | None = None,
    use: str = "default",
    watch: str | Iterable[str] = "default",
    timeout: float | None = None,
) -> "Connection":
    """Opens a connection; raises QueueUnreachable if the server is not there.

    Every command then waits at most `timeout` seconds (GLOW_COMMAND_TIMEOUT,
    else COMMAND_TIMEOUT) for its answer.
    """
    address = queue_address(address)
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV) or COMMAND_TIMEOUT)
    host, port = parse_address(address)
    try:
        sock = socket.create_connection((_plain(host), port), timeout=CONNECT_TIMEOUT)
    except socket.gaierror as exc:
        raise QueueUnreachable(address, f"host {host!r} does not resolve") from exc
    except OSError as exc:
        raise QueueUnreachable(address, _describe(exc)) from exc
    sock.settimeout(timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return Connection(address, sock, use, watch)


def _plain(host: str) -> str | bytes:
    # getaddrinfo runs a str host through the idna codec, whose import costs a
    # single glow-put about a twentieth of its start-up; ASCII needs no codec.
    return host.encode() if host.isascii() else host


def _describe(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(exc, TimeoutError):
        return "stopped answering (timed out)"
    if isinstance(exc, ConnectionResetError | BrokenPipeError) or exc.errno is None:
        return "closed the connection"
    return (exc.strerror or str(exc)).lower()


class Connection(greenstalk.Client):
    """A greenstalk client whose socket failures become QueueUnreachable.

    Bodies are bytes: a listener must be able to take any body off a tube.
    """

    def __init__(self, address: str, sock: socket.socket, use, watch) -> None:
        self.address = address
        self._translating = _Translated(address)
        try:
            super().__init__(sock, encoding=None, use=use, watch=watch)
        except Exception:
            sock.close()
            raise

    def _send_cmd(self, cmd: bytes, expected: bytes) -> list[bytes]:
        with self._translated():
            return super()._send_cmd(cmd, expected)

    def _read_chunk(self, size: int) -> bytes:
        with self._translated():
            return super()._read_chunk(size)

    def _translated(self) -> "_Translated":
        return self._translating

    def close(self) -> None:
        """Closes the connection; a socket that already broke is not an error."""
        try:
            super().close()
        except OSError:
            pass

    def max_job_size(self) -> int:
        """Returns the largest body the server accepts, in bytes."""
        return int(self.stats().get("max-job-size", DEFAULT_MAX_JOB_SIZE))

    def put_many(
        self,
        puts: Sequence[tuple[str, bytes, int, int, int]],
        progress: Callable[[int], None] | None = None,
    ) -> list[int]:
        """Puts (tube, body, pri, delay, ttr) tuples pipelined; returns their ids.

        Raises PartialPut, carrying the ids already inserted and the bodies sent
        without an answer, if the batch stops.
        `progress`, if given, is called with the count put after each window.
        """
        ids: list[int] = []
        in_flight: list[deque[bytes | None]] = []
        current = None
        try:
            for start in range(0, len(puts), PIPELINE_WINDOW):
                window = puts[start : start + PIPELINE_WINDOW]
                wire, expect, current = _wire(window, current)
                in_flight.append(expect)
                with self._translated():
                    self._sock.sendall(wire)
                # The next window goes out before this one's answers are read,
                # so beanstalkd always has puts to take while we read.
                if len(in_flight) > 1:
                    self._read_window(in_flight, ids, progress)
            while in_flight:
                self._read_window(in_flight, ids, progress)
        except Exception as exc:
            unanswered = [b for sent in in_flight for b in sent if b is not None]
            raise PartialPut(ids, exc, unanswered) from exc
        return ids

    def _read_window(self, in_flight: list, ids: list[int], progress) -> None:
        expect = in_flight[0]
        with self._translated():
            while expect:
                ids.extend(self._read_put_answer(expect[0] is not None))
                expect.popleft()
        in_flight.pop(0)
        if progress:
            progress(len(ids))

    def delete_then_reserve(
        self, job_id: int, timeout: int, meanwhile: Callable[[], None] | None = None
    ) -> tuple[bool, greenstalk.Job | None]:
        """Deletes a job and reserves the next in one round trip; blocks.

        Returns whether the delete found the job, and the job reserved, None if
        none came within `timeout` seconds or a reserved one's deadline is near.
        `meanwhile` is called once both are sent, while beanstalkd answers.
        """
        with self._translated():
            cmds = b"delete %d\r\nreserve-with-timeout %d\r\n" % (job_id, timeout)
            self._sock.sendall(cmds)
            if meanwhile:
                meanwhile()
            deleted = self._answer(b"delete", (b"DELETED", b"NOT_FOUND"))
            reserved = self._answer(
                b"reserve", (b"RESERVED", b"TIMED_OUT", b"DEADLINE_SOON")
            )
            if reserved[0] != b"RESERVED":
                return deleted[0] == b"DELETED", None
            body = self._read_chunk(int(reserved[2]))
        return deleted[0] == b"DELETED", greenstalk.Job(int(reserved[1]), body)

    def _answer(self, command: bytes, words: tuple[bytes, ...]) -> list[bytes]:
        line = self._reader.readline()
        if not line:
            raise ConnectionResetError("closed the connection")
        answer = line.split()
        if not answer or answer[0] not in words:
            raise ServerRefused(
                f"beanstalkd at {self.address} answered {line.strip().decode()!r} "
                f"to a {command.decode()}"
            )
        return answer

    def _read_put_answer(self, is_put: bool) -> list[int]:
        line = self._reader.readline()
        if not line:
            raise ConnectionResetError("closed the connection")
        word, _, rest = line.strip().partition(b" ")
        if not is_put and word == b"USING":
            return []
        if is_put and word == b"INSERTED":
            return [int(rest)]
        raise ServerRefused(
            f"beanstalkd at {self.address} answered {line.strip().decode()!r} to a put"
        )


def _wire(window: Sequence, current: str | None) -> tuple[bytes, deque, str | None]:
    """Returns a window's commands, the body each answer is for (None for a
    `use`), and the tube in use after it."""
    wire, expect = [], deque()
    for tube, body, pri, delay, ttr in window:
        if tube != current:
            wire.append(b"use %s\r\n" % tube.encode())
            expect.append(None)
            current = tube
        wire.append(b"put %d %d %d %d\r\n" % (pri, delay, ttr, len(body)))
        wire.append(body)
        wire.append(b"\r\n")
        expect.append(body)
    return b"".join(wire), expect, current


class PartialPut(Exception):
    """A pipelined batch stopped; `ids` were inserted before it did.

    The server may also have inserted any of the `unanswered` bodies: they were
    sent, but their answers were not read.
    """

    def __init__(
        self, ids: list[int], cause: Exception, unanswered: Sequence[bytes] = ()
    ) -> None:
        self.ids = ids
        self.cause = cause
        self.unanswered = list(unanswered)
        super().__init__(str(cause))


class _Translated:
    """Turns socket failures and a closed connection into QueueUnreachable.

    A class, not a generator: a listener enters one for every command.
    """

    def __init__(self, address: str) -> None:
        self.address = address

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, trace) -> None:
        if isinstance(exc, OSError):
            raise QueueUnreachable(self.address, _describe(exc)) from exc
