"""The fleet options of glow-drain and glow-stats, declared once for both.

Importing this module loads typer only; fabric comes with the first remote command.
"""

import logging
from typing import Annotated

import typer

FLEET = "Fleet (over SSH, needs glowtools[fleet])"
DEFAULT_GROUP = "glow_listeners"

Hosts = Annotated[
    str | None,
    typer.Option(
        metavar="H1,H2",
        help="Act on the listeners of these hosts, over SSH.",
        rich_help_panel=FLEET,
    ),
]
Inventory = Annotated[
    str | None,
    typer.Option(
        metavar="FILE",
        help="Take the hosts from this Ansible inventory.",
        rich_help_panel=FLEET,
    ),
]
Group = Annotated[
    str,
    typer.Option(
        metavar="NAME", help="Inventory group of the hosts.", rich_help_panel=FLEET
    ),
]
SshConfig = Annotated[
    str | None,
    typer.Option(
        "--ssh-config",
        envvar="GLOW_SSH_CONFIG",
        metavar="FILE",
        help="SSH config to use instead of ~/.ssh/config.",
        rich_help_panel=FLEET,
    ),
]
Deadline = Annotated[
    float | None,
    typer.Option(
        min=0,
        metavar="SECONDS",
        help="Wait this long for running jobs, then kill and release them.",
        rich_help_panel=FLEET,
    ),
]
Restart = Annotated[
    bool,
    typer.Option(
        "--restart",
        help="Rolling restart: drain and restart one host after another.",
        rich_help_panel=FLEET,
    ),
]
NoWait = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        help="Ask the listeners to stop; report without waiting for their jobs.",
        rich_help_panel=FLEET,
    ),
]


def is_fleet(hosts: str | None, inventory: str | None) -> bool:
    """Tells whether a command was asked to act on remote hosts."""
    return bool(hosts or inventory)


def drain(hosts, inventory, group, deadline, restart, no_wait, as_json, ssh_config):
    """Runs the fleet drain and exits with its status."""
    from .fleet_cli import drain_main

    _quiet_transport()
    raise typer.Exit(
        drain_main(
            hosts, inventory, group, deadline, restart, not no_wait, as_json, ssh_config
        )
    )


def status(hosts, inventory, group, as_json, ssh_config):
    """Runs the fleet status and exits with its status."""
    from .fleet_cli import status_main

    _quiet_transport()
    raise typer.Exit(status_main(hosts, inventory, group, as_json, ssh_config))


def _quiet_transport() -> None:
    # paramiko says "Connected" and "Authentication successful" at info level.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("paramiko").setLevel(logging.WARNING)
