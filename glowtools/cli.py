"""What every tool's command line shares: running it, logging and exit statuses.

typer is imported only to run a typer app: a plain glow-put never needs it.
"""

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import GlowError

if TYPE_CHECKING:
    import logging

    import typer

# logging.WARNING, named here so that importing this module needs no logging.
WARNING = 30


def run(app: "typer.Typer", prog: str) -> NoReturn:
    """Runs a tool's typer app, turning expected errors into one line and an
    exit status."""
    command = _lean(app)
    guarded(lambda: command(prog_name=prog), prog)


def guarded(call: Callable[[], Any], prog: str) -> NoReturn:
    """Calls `call` and exits: 0, or the status and one line of an expected error."""
    try:
        call()
    except GlowError as exc:
        fail(prog, exc)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`glow-put ... | head`): nothing left to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    sys.exit(0)


def _lean(app: "typer.Typer"):
    """Returns the app's command with typer's per-option coercion put off.

    typer (from 0.16) builds a pydantic validator for every option it parses,
    which doubled a single glow-put's start-up and cost a listener 7 MB;
    options that arrive with their type (a string, a count, a whole number in
    range, no value) need none. Older typers are left as they are.
    """
    import typer.main

    command = typer.main.get_command(app)
    every = command.get_params

    def get_params(ctx) -> list:
        params = every(ctx)  # with --help, made when first asked for
        for param in params:
            if getattr(param, "_runtime_param", False) is None:
                param._runtime_param = _AsGiven(param.type_descriptor)
        return params

    command.get_params = get_params
    return command


class _AsGiven:
    """Coerces one option: values of its type pass, others go to typer's own."""

    def __init__(self, descriptor) -> None:
        self.descriptor = descriptor
        kind = descriptor.annotation
        self.plain = kind in (str, int, bool) or kind == list[str]

    def coerce(self, value: Any, param, ctx) -> Any:
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        kind = self.descriptor.annotation
        if self.plain and type(value) is kind:
            return value
        if self.plain and isinstance(value, tuple) and kind == list[str]:
            if all(type(item) is str for item in value):
                return list(value)
        if kind is int and type(value) is str and self._in_range(value):
            return int(value)
        from typer._coercion import build_runtime_param

        runtime = build_runtime_param(self.descriptor)
        return runtime.coerce(value, param=param, ctx=ctx)

    def _in_range(self, text: str) -> bool:
        # Anything else (a sign, a clamp, out of range) gets typer's own words.
        info = self.descriptor.parameter_info
        if not text.isdecimal() or not text.isascii() or info.clamp:
            return False
        low, high = info.min, info.max
        return (low is None or int(text) >= low) and (high is None or int(text) <= high)


def fail(prog: str, exc: GlowError) -> NoReturn:
    """Prints `prog: message` on stderr and exits with the error's status."""
    print(f"{prog}: {exc}", file=sys.stderr, flush=True)
    sys.exit(exc.exit_status)


def _skip_unused_record_fields() -> None:
    import logging

    # Lines show only the time and the message; looking up the caller, thread
    # and process for each record cost a listener a tenth of a job's CPU.
    logging._srcfile = None  # the switch the logging HOWTO documents for this
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def setup_logging(
    prog: str,
    verbose: int = 0,
    quiet: bool = False,
    base: int = WARNING,
    stamp: bool = True,
) -> "logging.Handler":
    """Sends log lines to stderr, timestamped unless journald adds its own.

    Each -v lowers the level one step below `base`; -q raises it to warnings.
    `stamp=False` leaves timestamps out (a one-shot tool's notices).
    """
    import logging  # here: a single glow-put that says nothing never needs it

    steps = [logging.WARNING, logging.INFO, logging.DEBUG]
    level = steps[min(steps.index(base) + verbose, 2)]
    when = "%(asctime)s " if stamp and not os.environ.get("JOURNAL_STREAM") else ""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"{when}{prog}: %(message)s"))
    _skip_unused_record_fields()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else level)
    return handler
