"""What every tool's command line shares: options, logging and exit statuses."""

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from .defaults import DEFAULT_QUEUE, QUEUE_ENV, SECRET_ENV
from .errors import GlowError

if TYPE_CHECKING:
    import logging

# logging.WARNING, named here so that importing this module needs no logging.
WARNING = 30

Queue = Annotated[
    str | None,
    typer.Option(
        "--queue",
        envvar=QUEUE_ENV,
        show_envvar=True,
        metavar="HOST:PORT",
        help=f"beanstalkd address [default: {DEFAULT_QUEUE}]",
    ),
]
Verbose = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="Say more; twice for debug.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Say only warnings.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON objects, one per line.")]
# A list of Path splits GLOW_SECRET_FILE at ':' (a list of str splits at spaces).
SecretFile = Annotated[
    list[Path] | None,
    typer.Option(
        "--secret-file",
        envvar=SECRET_ENV,
        show_envvar=True,
        metavar="FILE",
        help="Shared secret (mode 600) for signed jobs; repeat, or a:b, to rotate: "
        "glow-put signs with the first, glow-listen accepts each.",
    ),
]


def app(help_text: str) -> typer.Typer:
    """Returns a single-command typer app that shows plain tracebacks."""
    return typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
        help=help_text,
    )


def run(command: typer.Typer | Callable, prog: str) -> NoReturn:
    """Runs a tool, turning expected errors into one line and an exit status."""
    if isinstance(command, typer.Typer):
        command = _lean(command)
    try:
        command(prog_name=prog)
    except GlowError as exc:
        fail(prog, exc)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`glow-put ... | head`): nothing left to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    sys.exit(0)


def _lean(app: typer.Typer):
    """Returns the app's command with typer's per-option coercion put off.

    typer (from 0.16) builds a pydantic validator for every option it parses,
    which doubled a single glow-put's start-up and cost a listener 7 MB;
    options that arrive with their type (a string, a count, a whole number in
    range, no value) need none. Older typers are left as they are.
    """
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
