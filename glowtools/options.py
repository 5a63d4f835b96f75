"""The options every tool shares, and the typer app each one is.

Importing this module loads typer; `cli` does not, so that a plain glow-put
need not.
"""

from pathlib import Path
from typing import Annotated

import typer

from .defaults import DEFAULT_QUEUE, QUEUE_ENV, SECRET_ENV

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
