"""A forked helper process: it computes one value while its parent works on.

For CPU-bound work split in two on a machine with a core to spare. The child
starts with the parent's memory, so nothing is sent to it; only its result is
pickled back through a pipe.
"""

import os
import pickle
import signal
from collections.abc import Callable
from typing import Any, NoReturn


class Helper:
    """Runs `work(*args)` in a forked child; `result()` returns its value.

    Exceptions of the `raises` types are pickled back and raised by
    `result()`; any other failure makes `result()` return None, for the parent
    to do the work itself (and meet the failure with a traceback). Leaving the
    `with` block kills a child still at work.
    """

    def __init__(
        self, work: Callable[..., Any], *args: Any, raises: tuple[type, ...] = ()
    ) -> None:
        self._reader: int | None
        self._reader, writer = os.pipe()
        self._pid = os.fork()
        if not self._pid:
            os.close(self._reader)
            _serve(writer, raises, work, args)
        os.close(writer)

    def __enter__(self) -> "Helper":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def result(self) -> Any:
        """Waits for the child's answer; returns its value, or None if it failed.

        The child is not waited for: tearing down a process that shares a large
        heap takes tens of milliseconds after its answer is out.
        """
        with os.fdopen(self._take_reader(), "rb") as pipe:
            data = pipe.read()
        try:
            kind, value = pickle.loads(data)
        except Exception:
            return None  # it died before its answer was whole
        if kind == "raised":
            raise value
        return value

    def close(self) -> None:
        """Kills a child still at work; reaps it if it has ended, else leaves
        it to `reap_all`."""
        if self._reader is not None:
            os.close(self._take_reader())
            os.kill(self._pid, signal.SIGKILL)
        if os.waitpid(self._pid, os.WNOHANG)[0] == 0:
            _ending.add(self._pid)

    def _take_reader(self) -> int:
        reader, self._reader = self._reader, None
        assert reader is not None
        return reader


# Children whose answer is in, or which were killed, still ending.
_ending: set[int] = set()


def reap_all() -> None:
    """Waits for every helper still ending, so that none outlives its parent
    and their CPU time counts as the parent's."""
    while _ending:
        os.waitpid(_ending.pop(), 0)


def _serve(writer: int, raises: tuple, work: Callable, args: tuple) -> NoReturn:
    status = 1
    try:
        # A ^C reaches the whole process group: answering it is the parent's.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            outcome = ("returned", work(*args))
        except raises as exc:
            outcome = ("raised", exc)
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(data)
        status = 0
    finally:
        # Nothing of the parent's (buffers, atexit handlers) is the child's to run.
        os._exit(status)
